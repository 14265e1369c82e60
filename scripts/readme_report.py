"""Regenerate README.md's example report from a real run: `doctor check` on the snapshot recorded on the
container doctor was built on (tests/facts/cpu-container-no-gpu.json), so the README cannot go stale.

    python scripts/readme_report.py          # rewrite the block between the README's report markers
    python scripts/readme_report.py --check  # exit 1 if the README differs from a fresh run (tests run this)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from doctor.cli import main  # noqa: E402

ARGS = ["check", "--profile", "autodl-a800", "--profile", "qwen3-vl-32b-qlora",
        "--facts", "tests/facts/cpu-container-no-gpu.json"]
BEGIN, END = "<!-- report:begin (scripts/readme_report.py) -->", "<!-- report:end -->"


def block() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.chdir(ROOT):
        code = main(list(ARGS))
    return f"{BEGIN}\n```\n$ doctor {' '.join(ARGS)}\n{out.getvalue()}$ echo $?\n{code}\n```\n{END}"


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        print(f"README.md has no {BEGIN} ... {END} block", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    new = head + block() + rest.split(END, 1)[1]
    if args.check:
        if new != text:
            print("README.md's example report is stale: run python scripts/readme_report.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
