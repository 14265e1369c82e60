"""`doctor` command line. Exit codes: 0 ready, 1 not ready, 2 bad usage or input, 3 could not decide."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from . import __version__
from .args import Parser, seconds
from .errors import InputError
from .model import ExitCode
from .output import printable, write as write_output
from .secrets import ScrubbingStream

LIGHT = ("check", "facts")   # commands whose parsing needs no other command's module


def build_parser(light: bool = False) -> argparse.ArgumentParser:
    """The parser; `light` leaves out the commands other than LIGHT, whose modules cost a tenth of a second to
    import: `doctor check` starts its torch probe that much sooner."""
    parser = Parser(prog="doctor", description="GPU pre-flight checks for ML jobs.")
    parser.add_argument("--version", action="version", version=f"doctor {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def probing_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--python", metavar="PATH", help="interpreter (or environment) of the job to inspect")
        p.add_argument("--timeout", type=seconds, default=60.0, metavar="S",
                       help="seconds before the torch/CUDA-init probe counts as hung (default 60); "
                            "NVML gets min(S, 15), the package listing min(S, 30)")
        p.add_argument("--offline", action="store_true",
                       help="do not contact the Hugging Face endpoint or the package index")

    check = sub.add_parser("check", help="judge this machine (or a saved snapshot) against profiles")
    check.add_argument("--profile", "-p", action="append", default=[], metavar="NAME|FILE",
                       help="machine and/or job profile; repeat to combine (default: match the detected GPU)")
    check.add_argument("--facts", metavar="FILE", help="judge a saved `doctor facts` snapshot instead of probing")
    check.add_argument("--format", choices=("console", "json", "junit"), default="console")
    check.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE")
    check.add_argument("--strict", action="store_true", help="treat warnings as not ready (exit 1)")
    check.add_argument("--verbose", "-v", action="store_true", help="details and timings")
    check.add_argument("--no-bench", action="store_true",
                       help="skip the bench phase (matmul, bandwidth, HVP on every GPU after the passive checks)")
    check.add_argument("--bench-timeout", type=seconds, default=180.0, metavar="S",
                       help="seconds per GPU before its benchmark counts as hung and is killed (default 180)")
    check.add_argument("--distributed", action="store_true",
                       help="run on every rank of a torchrun/srun launch; rank 0 prints one report with the "
                            "cross-rank checks (needs torch; see docs/fleet.md)")
    check.add_argument("--dist-timeout", type=seconds, default=120.0, metavar="S",
                       help="--distributed: seconds for the process group to form, for the barrier, and for "
                            "each collective (default 120)")
    check.add_argument("--health", action="store_true",
                       help="fast health check for Slurm's HealthCheckProgram: NVML, kernel log, RAM and disk only "
                            "(no torch, no benchmark) within 15 s; one line per failure, starting with the check id")
    probing_options(check)

    facts = sub.add_parser("facts", help="write a JSON facts snapshot")
    facts.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    facts.add_argument("--redact", action="store_true",
                       help="remove hostnames, user names in paths, IPs, GPU UUIDs, serials and PCI bus ids")
    facts.add_argument("--profile", "-p", action="append", default=[], metavar="NAME|FILE",
                       help="also probe the filesystems of these profiles' storage paths")
    probing_options(facts)
    if light:
        return parser

    from .bench.command import add_parser as add_bench
    from .clean.command import add_parser as add_clean
    from .fleet.capture import add_parser as add_baseline
    from .fleet.command import add_parser as add_merge
    from .validate.command import add_parser as add_validate
    from .vram.command import add_parser as add_estimate

    add_estimate(sub)
    add_bench(sub)
    add_clean(sub)
    add_validate(sub)
    add_merge(sub)
    add_baseline(sub)
    sub.add_parser("checks", help="list the registered checks")
    sub.add_parser("gpus", help="list doctor's GPU table: names for machine.gpu.models, exact NVML names, CC, memory")
    explain = sub.add_parser("explain", help="what a check verifies, why, and how to fix it")
    explain.add_argument("check_id")
    profiles = sub.add_parser("profiles", help="list profiles, or `profiles show NAME`")
    profiles.add_argument("action", nargs="?", choices=("list", "show"), default="list")
    profiles.add_argument("name", nargs="?")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; whatever it prints passes through the secret scrubber (doctor.secrets)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ScrubbingStream(out), ScrubbingStream(err)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = out, err


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(light=bool(argv) and argv[0] in LIGHT).parse_args(argv)
    except SystemExit as exc:   # --help (0) or a bad flag (2, one line already printed)
        return int(exc.code) if isinstance(exc.code, int) else 2
    try:
        return int(COMMANDS[args.command](args))
    except InputError as exc:
        print(f"doctor: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    except KeyboardInterrupt:
        print("doctor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `doctor checks | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        if args.debug:
            raise
        print(f"doctor: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return int(ExitCode.UNDECIDED)


def cmd_check(args: argparse.Namespace) -> int:
    from .session import Request, check

    request = Request(tuple(args.profile), args.facts, args.python, args.timeout, args.offline, args.strict,
                      not args.no_bench, args.bench_timeout, progress=args.format == "console",
                      verbose=args.verbose)
    if args.health:
        return _check_health(request, args)
    if args.distributed:
        return _check_distributed(request, args)
    return _emit(check(request), args)


def _check_health(request: Any, args: argparse.Namespace) -> int:
    """`--health`: one line per failure (`check_id: summary`) on stdout; with -v every result on stderr."""
    from . import health
    from .session import health as judge_health

    given = [flag for flag, on in (("--distributed", args.distributed), ("--output", args.output),
                                   ("--format", args.format != "console")) if on]
    if given:
        raise InputError(given[0], None, "cannot be combined with --health (it prints one line per failure)")
    report = judge_health(request)
    for line in health.lines(report):
        print(printable(line))
    if args.verbose:
        for r in report.results:
            print(printable(f"{r.status.value:5} {r.check_id}: {r.summary}"), file=sys.stderr)
    return int(report.exit_code)


def _check_distributed(request: Any, args: argparse.Namespace) -> int:
    """Rank 0 prints the merged report; the other ranks print nothing (with -v their own report, on stderr)
    and exit with rank 0's exit code."""
    from .distributed.driver import Unreachable
    from .session import check_distributed

    if args.facts:
        raise InputError("--distributed", None, "probes every rank; it cannot judge a saved snapshot (--facts)")
    try:
        outcome = check_distributed(request, args.dist_timeout)
    except Unreachable as exc:
        print(printable(f"doctor: {exc}"), file=sys.stderr)
        return int(ExitCode.UNDECIDED)
    if outcome.message:
        print(printable(outcome.message), file=sys.stderr)
    if not outcome.prints:
        if args.verbose:
            from .render import console

            console.render(outcome.report, sys.stderr, True, color=False)
        return outcome.exit_code
    from .distributed import render as dist_render
    from .render import console

    if args.format == "json":
        write_output(dist_render.as_json(outcome.report, outcome.ranks), args.output)
    elif args.format == "junit":
        from .render.junit import render

        write_output(render(outcome.report), args.output)
    if args.format == "console" or args.output:
        from io import StringIO

        buf = StringIO()
        console.render(outcome.report, buf, args.verbose, color=False)
        text = dist_render.table(outcome.report) + buf.getvalue()
        if args.format == "console" and args.output:
            write_output(text, args.output)
        else:
            sys.stdout.write(text)
    return outcome.exit_code


def _emit(report: Any, args: argparse.Namespace) -> int:
    from .render import console

    if args.format == "console":
        if args.output:
            from io import StringIO

            buf = StringIO()
            console.render(report, buf, args.verbose, color=False)
            write_output(buf.getvalue(), args.output)
        else:
            console.render(report, sys.stdout, args.verbose)
        return int(report.exit_code)
    if args.format == "json":
        from .render.json_report import render
    else:
        from .render.junit import render
    write_output(render(report), args.output)
    if args.output:  # the file gets the machine-readable report; the terminal the human one
        console.render(report, sys.stdout, args.verbose)
    return int(report.exit_code)


def cmd_facts(args: argparse.Namespace) -> int:
    from . import facts as facts_mod
    from .interpreter import select

    from .registry import discover
    from .session import probe

    target = select(args.python)
    run, _ = probe(target, list(args.profile), args.timeout, args.offline, discover())
    snapshot = facts_mod.assemble(target, *run.collect())
    if args.redact:
        snapshot = facts_mod.redacted(snapshot)
    write_output(facts_mod.dump(snapshot), args.output)
    failed = {k: v for k, v in snapshot["probes"].items() if v["status"] != "ok"}
    for name, record in failed.items():
        print(printable(f"doctor: probe '{name}' {record['status']}: {record['message']}"), file=sys.stderr)
    return int(ExitCode.UNDECIDED if failed else ExitCode.READY)


def cmd_checks(_: argparse.Namespace) -> int:
    from .registry import discover

    registry = discover()
    for cid, spec in sorted(registry.checks.items()):
        print(f"{cid:26} {spec.doc['what'].splitlines()[0]}")
    for err in registry.load_errors:
        print(f"{'plugin.' + err.entry_point:26} ERROR: package '{err.package}' failed to import: {err.message}")
    return int(ExitCode.UNDECIDED if registry.load_errors else ExitCode.READY)


def cmd_gpus(_: argparse.Namespace) -> int:
    from . import refdata

    rows = refdata.load("gpus")["gpus"]
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        memory = f"{r['memory_gb']:g} GB" if r.get("memory_gb") else "?"
        print(f"{r['name']:{width}}  CC {r['cc']:4}  {memory:>7}  NVML: {' | '.join(r.get('nvml_names') or [])}")
    return int(ExitCode.READY)


def cmd_explain(args: argparse.Namespace) -> int:
    from .errors import did_you_mean
    from .registry import discover

    registry = discover()
    spec = registry.checks.get(args.check_id)
    if spec is None:
        raise InputError("explain", args.check_id,
                         f"unknown check; {did_you_mean(args.check_id, registry.checks)}see `doctor checks`")
    doc = spec.doc
    print(f"{spec.id}\n\nWhat it checks: {' '.join(doc['what'].split())}\n\nWhy: {doc.get('why', '')}\n\n"
          f"How to fix: {doc.get('fix', '')}")
    if spec.params:
        print("\nParameters:")
        for name, p in spec.params.items():
            bound = f" (default from profile key {spec.binds[name]})" if name in spec.binds else ""
            default = "" if p.required else f", default {p.default!r}"
            print(f"  {name}: {p.type_name()}{default}{bound}")
    print(f"\nNeeds facts: {', '.join(spec.needs) or 'none'}")
    return int(ExitCode.READY)


def cmd_profiles(args: argparse.Namespace) -> int:
    from .profile import available, load, read
    from .registry import discover

    if args.action == "show":
        if not args.name:
            raise InputError("profiles show", None, "expected a profile name: doctor profiles show NAME")
        import yaml

        profile = load([args.name], discover(), offline=None)   # as written: no model config read in
        print(printable(f"# {profile.name} ({profile.kind}): {profile.description}"))
        print(printable(f"# resolved from: {', '.join(profile.sources)}"))
        dump = yaml.safe_dump(_as_written(profile.data), sort_keys=False, allow_unicode=True)
        print("\n".join(printable(line) for line in dump.splitlines()))
        return int(ExitCode.READY)
    rows = []
    for name, path in sorted(available().items()):
        data = read(path)
        rows.append((name, data.get("kind", "machine"), data.get("description", "")))
    width = max(len(r[0]) for r in rows)
    for name, kind, desc in rows:
        print(printable(f"{name:{width}}  {kind:7}  {desc}"))
    return int(ExitCode.READY)


def _as_written(data: Any) -> Any:
    """The profile without what loading attached (file contents such as a DeepSpeed config's text)."""
    from .profile import ATTACHED

    if isinstance(data, dict):
        return {k: _as_written(v) for k, v in data.items() if k not in ATTACHED}
    if isinstance(data, list):
        return [_as_written(v) for v in data]
    return data


def cmd_estimate(args: argparse.Namespace) -> int:
    from .vram.command import run

    return run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.command import run

    return run(args)


def cmd_clean(args: argparse.Namespace) -> int:
    from .clean.command import run

    return run(args)


def cmd_validate(args: argparse.Namespace) -> int:
    from .validate.command import run

    return run(args)


def cmd_merge(args: argparse.Namespace) -> int:
    from .fleet.command import run

    return run(args)


def cmd_baseline(args: argparse.Namespace) -> int:
    from .fleet.capture import run

    return run(args)


COMMANDS = {"bench": cmd_bench, "clean-cache": cmd_clean, "check": cmd_check, "estimate": cmd_estimate, "facts": cmd_facts,
            "validate": cmd_validate, "checks": cmd_checks, "gpus": cmd_gpus, "explain": cmd_explain, "profiles": cmd_profiles,
            "merge": cmd_merge, "baseline": cmd_baseline}
