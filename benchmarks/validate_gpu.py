"""This repository's GPU validation: `doctor validate` writing its folder under benchmarks/results/.

    python benchmarks/validate_gpu.py                  # on a GPU machine: about 8 minutes; commit the folder it names
    python benchmarks/validate_gpu.py --device cpu     # the same path at small sizes, in under a minute (CI runs it)

Every `doctor validate` flag passes through (--budget S, --runs N, --python PATH, --no-redact). It runs from a
clone without installing doctor, in whichever Python has doctor's dependencies and the job's torch.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    from doctor.cli import main as doctor

    if not any(a in ("-o", "--output") or a.startswith("--output=") for a in argv):
        argv = [*argv, "--output", str(ROOT / "benchmarks" / "results")]
    return doctor(["validate", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
