"""`doctor baseline capture`: write a profile from this known-good node (a fresh `doctor check` with the bench
phase) or from its saved report, for the rest of the fleet to be checked against.
Exit codes: 0 written; 2 bad input (a bad flag value, an existing output without --force, a file that is not a
report, a node that is not ready)."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..args import seconds
from ..errors import InputError
from ..loading import FACTS_BYTES, read_text
from ..output import printable
from ..secrets import scrub
from .baseline import VERSION_MODES, build, parse_tolerance
from .node import parse

FRESH = "a fresh `doctor check` on this node"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("baseline", help="capture a site baseline profile from a known-good node",
                       description="Profiles from a site's own hardware (see docs/fleet.md).")
    actions = p.add_subparsers(dest="action", required=True)
    cap = actions.add_parser(
        "capture", help="write a profile (GPU model and count, driver minimum, versions, bench floors) from this "
                        "node or its report",
        description="On a known-good node, write a machine profile that the rest of the fleet is checked against "
                    "with `doctor check --profile FILE`: GPU model and count, the driver as a minimum, Python and "
                    "key package versions, and each bench figure's median over the node's GPUs less --tolerance. "
                    "Every value names the fact it came from; what the node's facts lack is left out, with why.")
    cap.add_argument("--output", "-o", required=True, metavar="FILE", help="the profile to write (YAML)")
    cap.add_argument("--from-report", metavar="FILE",
                     help="a `doctor check --format json` report of the known-good node, instead of checking this "
                          "node now")
    cap.add_argument("--tolerance", default="10%", metavar="PCT",
                     help="bench floors are the measured median less this percentage (default 10%%)")
    cap.add_argument("--name", help="the baseline's name in the profile's description (default: the host)")
    cap.add_argument("--versions", choices=VERSION_MODES, default="exact",
                     help="pin Python and the key packages to the node's versions (exact, default), require at "
                          "least them (minimum), or leave them out (none)")
    cap.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    cap.add_argument("--profile", "-p", action="append", default=[], metavar="NAME|FILE",
                     help="without --from-report: the profiles this node is checked against first (default: as "
                          "doctor check)")
    cap.add_argument("--python", metavar="PATH", help="without --from-report: the job's interpreter")
    cap.add_argument("--timeout", type=seconds, default=60.0, metavar="S",
                     help="without --from-report: as doctor check --timeout")
    cap.add_argument("--bench-timeout", type=seconds, default=180.0, metavar="S",
                     help="without --from-report: as doctor check --bench-timeout")
    cap.add_argument("--offline", action="store_true", help="without --from-report: as doctor check --offline")


def run(args: argparse.Namespace) -> int:
    tolerance = parse_tolerance(args.tolerance)
    out = Path(args.output)
    if out.is_dir():
        raise InputError(args.output, None, "is a directory; expected the YAML file to write (--output)")
    if out.exists() and not out.is_file():   # --force would rename over a device node or FIFO (/dev/null)
        raise InputError(args.output, None, "is not a regular file; expected the YAML file to write (--output)")
    if out.exists() and not args.force:
        raise InputError(args.output, None, "exists; pass --force to overwrite it")
    if not out.parent.is_dir():
        raise InputError(args.output, None, f"its directory {out.parent} does not exist")
    if args.from_report == "":   # not "check this node now", which is what leaving --from-report out asks
        raise InputError("--from-report", None, "is empty; expected a `doctor check --format json` report file")
    if args.from_report:
        fresh = [f for f, v in (("--profile", args.profile), ("--python", args.python)) if v]
        if fresh:
            raise InputError(fresh[0], None, "checks this node now; with --from-report the report stands as judged")
        source = args.from_report
        data = parse(read_text(source, FACTS_BYTES, "`doctor check --format json` report"), source)
    else:
        source, data = FRESH, _check_now(args)
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    baseline = build(data, source, tolerance_pct=tolerance, name=args.name, versions=args.versions, captured=now)
    _write_checked(scrub(baseline.text), out)
    print(printable(f"wrote {out}: a machine profile from {source}"))
    for line in baseline.kept:   # the report's own text (GPU names, versions): escaped for the terminal
        print(printable(f"  {line}"))
    for line in baseline.omitted:
        print(printable(f"  left out: {line}"))
    print(f"check a node against it: doctor check --profile {shlex.quote(str(out))}")
    return 0


def _check_now(args: argparse.Namespace) -> dict[str, Any]:
    """This node's report, as `doctor check --format json` writes it (bench phase on)."""
    from ..render.json_report import render
    from ..session import Request, check

    req = Request(tuple(args.profile), None, args.python, args.timeout, args.offline, False, True,
                  args.bench_timeout, progress=sys.stderr.isatty(),
                  notes=("doctor baseline capture: checked this node to capture its baseline",))
    return json.loads(render(check(req)))


def _write_checked(text: str, out: Path) -> None:
    """Write `text` to `out` only once it loads as a profile (a temporary file beside it, then renamed)."""
    from ..profile import load
    from ..registry import discover

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".yaml", dir=out.parent)
    except OSError as exc:   # a read-only or pseudo file system (/proc), no permission
        raise InputError(str(out), None, f"cannot write the profile ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # as an ordinary new file, not mkstemp's 0600
        load([tmp], discover(), offline=True)
        os.replace(tmp, out)
    except OSError as exc:
        raise InputError(str(out), None, f"cannot write the profile ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
