"""`doctor bench`: benchmark the GPUs (or, with --device cpu, exercise the same path on the CPU) and judge."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..args import seconds
from ..errors import InputError
from ..model import ExitCode, Report
from ..output import printable
from . import runner

SCHEMA = "doctor.bench/1"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmark the GPUs: fp16/bf16 matmul, memory bandwidth, Hessian-vector products")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="cuda: every GPU the job sees, one process each; cpu: the same code path at small sizes "
                        "(figures not judged against any GPU); auto: cuda where usable, else skip (default)")
    p.add_argument("--profile", "-p", action="append", default=[], metavar="NAME|FILE",
                   help="profiles whose bench.* entries set the warn/fail levels (default: base)")
    p.add_argument("--stages", default=",".join(runner.STAGES), help="comma-separated subset of "
                   + ", ".join(runner.STAGES))
    p.add_argument("--format", choices=("console", "json"), default="console")
    p.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE")
    p.add_argument("--timeout", type=seconds, default=runner.DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"seconds per device before its benchmark counts as hung and is killed "
                        f"(default {runner.DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--python", metavar="PATH", help="interpreter (or environment) of the job: its torch runs the bench")


def _stages(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in names if s not in runner.STAGES]
    if bad or not names:
        raise InputError("--stages", text, f"expected a comma-separated subset of {', '.join(runner.STAGES)}")
    return names


def run(args: argparse.Namespace) -> int:
    from ..session import Request, bench

    stages = _stages(args.stages)
    show = args.format == "console" and not args.output
    out = bench(Request(tuple(args.profile), python=args.python, bench_timeout_s=args.timeout, progress=show),
                args.device, stages)
    if out.undecided:
        print(printable(f"doctor: could not decide whether a GPU can be benchmarked: {out.undecided}"), file=sys.stderr)
        return int(ExitCode.UNDECIDED)
    if out.refused or out.report is None:
        print(printable(f"doctor: --device cuda: {out.refused}"), file=sys.stderr)
        return int(ExitCode.NOT_READY)
    return _emit(out.report, out.section, args)


def _emit(report: Report, section: dict[str, Any], args: argparse.Namespace) -> int:
    from ..output import write as _write
    from ..render import console
    from .figures import figures
    from .render import table

    if args.format == "json":
        doc = {"schema": SCHEMA, "figures": figures(section), "results": [r.to_dict() for r in report.results],
               "verdict": {"ready": report.ready, "exit_code": int(report.exit_code), "summary": report.verdict()},
               "bench": section}
        _write(json.dumps(doc, indent=2) + "\n", args.output)
        return int(report.exit_code)
    if args.output:
        from io import StringIO

        buf = StringIO()
        table(section, buf, color=False)
        console.render(report, buf, color=False)
        _write(buf.getvalue(), args.output)
        return int(report.exit_code)
    table(section, sys.stdout)
    console.render(report, sys.stdout)
    return int(report.exit_code)
