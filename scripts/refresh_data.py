"""Regenerate doctor's reference data (doctor/data/*.yaml) from the primary sources, instead of retyping it.

    python scripts/refresh_data.py --help              # the sources each table is rebuilt from
    python scripts/refresh_data.py torch ...           # one table; see its --help for the sources it reads

Each table has one module in scripts/refresh/ (NAME, add_parser(sub), run(args) -> int). Every row written keeps
its source; a row that a source could not confirm says so. Tests run each module on small fixture copies of its
sources (tests/fixtures/refresh/).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def modules() -> list:
    sys.path.insert(0, str(HERE))
    found = []
    for path in sorted((HERE / "refresh").glob("*.py")):
        if path.name.startswith("_"):
            continue
        mod = importlib.import_module(f"refresh.{path.stem}")
        if all(hasattr(mod, a) for a in ("NAME", "add_parser", "run")):
            found.append(mod)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="refresh_data.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="table", required=True)
    handlers = {}
    for mod in modules():
        mod.add_parser(sub)
        handlers[mod.NAME] = mod.run
    args = parser.parse_args(argv)
    return int(handlers[args.table](args))


if __name__ == "__main__":
    sys.exit(main())
