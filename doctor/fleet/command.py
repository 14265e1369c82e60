"""`doctor merge`: per-node `doctor check --format json` reports -> the fleet view.
Exit codes: 0 every node ready; 1 a node not ready or missing; 3 none fails but some could not be decided;
2 bad input (a file that is not a report of schema 1.x, a bad node list, no reports)."""
from __future__ import annotations

import argparse
import glob
import os
import sys
from collections.abc import Mapping
from typing import Any

from ..args import whole
from ..errors import InputError
from ..loading import FACTS_BYTES, read_text
from ..output import write
from .hostlist import expand
from .merge import Expected, merge
from .node import NodeReport, parse, read

PARALLEL_MIN = 200   # below this many files a process pool costs more than it saves


def add_parser(sub: Any) -> None:
    p = sub.add_parser("merge", help="merge per-node `doctor check --format json` reports into the fleet view",
                       description="Read the JSON reports of `doctor check` from every node (files, or directories "
                                   "of *.json) and print the fleet table (node x check, worst first), why each "
                                   "failing node fails, the version skew across nodes and the nodes that sent no "
                                   "report. Exit 0 every node ready; 1 a node not ready or missing; 3 some node "
                                   "could not be decided; 2 bad input.")
    p.add_argument("files", nargs="*", metavar="FILE", help="node reports, or directories holding them (*.json)")
    expected = p.add_mutually_exclusive_group()
    expected.add_argument("--expect", type=whole(1, 1 << 20), metavar="N",
                          help="the fleet has N nodes: fewer reports count as missing nodes")
    expected.add_argument("--expect-nodes", "--nodelist", dest="nodelist", metavar="HOSTLIST",
                          help="the fleet's nodes as a Slurm hostlist, e.g. 'gpu[01-04,07],login1' (default: "
                               "$SLURM_JOB_NODELIST when set); a listed node without a report is missing")
    p.add_argument("--format", choices=("console", "json", "junit"), default="console")
    p.add_argument("--output", "-o", metavar="FILE", help="write the result to FILE (%%h: this host's short name)")
    p.add_argument("--strict", action="store_true",
                   help="warnings and version skew across nodes count as not ready (exit 1)")


def run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    from . import render

    environ = os.environ if environ is None else environ
    expected = expected_nodes(args.nodelist, args.expect, environ)
    files = report_files(args.files)
    reports, notes = load(files)
    if not reports:
        raise InputError("doctor merge", None, "no node reports among " + ", ".join(args.files))
    fleet = merge(reports, expected, args.strict)
    fleet.notes[:0] = notes
    if args.format == "console":
        write(render.console(fleet), args.output)
        return int(fleet.exit_code)
    write(render.as_json(fleet) if args.format == "json" else render.junit(fleet), args.output)
    if args.output:   # the file gets the machine-readable result; the terminal the human one
        sys.stdout.write(render.console(fleet))
    return int(fleet.exit_code)


def expected_nodes(nodelist: str | None, expect: int | None, environ: Mapping[str, str]) -> Expected | None:
    """What the fleet should hold: --expect-nodes, else --expect, else $SLURM_JOB_NODELIST, else nothing."""
    spec, source = (nodelist, "--expect-nodes") if nodelist is not None else (None, None)
    if spec is None and expect is not None:
        return Expected("--expect", str(expect), None, expect)
    if spec is None and environ.get("SLURM_JOB_NODELIST"):
        spec, source = environ["SLURM_JOB_NODELIST"], "SLURM_JOB_NODELIST"
    if spec is None or source is None:
        return None
    names = expand(spec, source)
    if not names:
        raise InputError(source, None, f"{spec!r} names no node; expected e.g. gpu[01-04,07]")
    return Expected(source, spec, tuple(names), len(names))


def report_files(paths: list[str]) -> list[tuple[str, bool]]:
    """(file, found in a directory) for each argument: a file as given, a directory's *.json (not hidden), a
    pattern the shell left unexpanded (quoted, or on Windows) expanded here. Each file once."""
    if not paths:
        raise InputError("doctor merge", None, "no reports given; expected FILE... or a directory of *.json reports")
    out: dict[str, tuple[str, bool]] = {}
    for path in paths:
        if os.path.isdir(path):
            found = sorted(e.path for e in os.scandir(path)
                           if e.name.endswith(".json") and not e.name.startswith(".") and e.is_file())
            if not found:
                raise InputError(path, None, "is a directory with no *.json report in it")
            entries = [(f, True) for f in found]
        elif not os.path.lexists(path) and glob.has_magic(path):
            found = sorted(glob.glob(path))
            if not found:
                raise InputError(path, None, "matches no file")
            entries = [(f, False) for f in found]
        else:
            entries = [(path, False)]
        for f, in_dir in entries:
            out.setdefault(os.path.realpath(f), (f, in_dir))
    return list(out.values())


def load(files: list[tuple[str, bool]]) -> tuple[list[NodeReport], list[str]]:
    """Read and check every report (in worker processes when there are many); the first bad one, in argument
    order, is the InputError."""
    outcomes = _parallel(files) if len(files) >= PARALLEL_MIN and _cpus() > 1 else map(_load_one, files)
    reports: list[NodeReport] = []
    notes: list[str] = []
    for kind, value in outcomes:
        if kind == "error":
            raise InputError(*value)
        if kind == "skip":
            notes.append(value)
        else:
            reports.append(value)
    return reports, notes


def _load_one(item: tuple[str, bool]) -> tuple[str, Any]:
    path, in_dir = item
    try:
        data = parse(read_text(path, FACTS_BYTES, "doctor check report"), path)
        if in_dir and isinstance(data, dict) and str(data.get("schema", "")).startswith("doctor.merge/"):
            return "skip", f"skipped {path}: a `doctor merge` result, not a node report"
        return "report", read(data, path)
    except InputError as exc:   # crosses a process boundary: sent as its parts, raised again in order
        return "error", (exc.source, exc.key, exc.expected)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def _parallel(files: list[tuple[str, bool]]) -> list[tuple[str, Any]]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    workers = min(_cpus(), 16)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(_load_one, files, chunksize=max(1, len(files) // (workers * 4))))
