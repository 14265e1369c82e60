"""Console report: one line per check, remediation under each non-pass, a one-line verdict."""
from __future__ import annotations

from typing import IO

from ..model import NOT_ASKED, Report, Result, Status
from ..output import printable

MARKS = {Status.PASS: ("[✓]", "green"), Status.WARN: ("[!]", "yellow"), Status.FAIL: ("[✗]", "red"),
         Status.SKIP: ("[-]", "dim"), Status.ERROR: ("[?]", "magenta")}


def lines(report: Report, verbose: bool = False) -> list[tuple[str, str | None]]:
    """(text, style) pairs; the same text whether or not colour is used. By default what needs doing comes
    first (failures, then undecided, then warnings, each with its fix), then one line for the passes and one
    per cause of skipping; `verbose` lists every check in profile order with its details and timing."""
    out: list[tuple[str, str | None]] = [(note, "dim") for note in report.notes]
    if verbose:
        for r in report.results:
            out.extend(_entry(r, verbose=True))
    else:
        shown = sorted((r for r in report.results if r.status in (Status.FAIL, Status.ERROR, Status.WARN)),
                       key=lambda r: -r.status.severity)   # stable: profile order within a status
        for r in shown:
            out.extend(_entry(r, verbose=False))
        out.extend(_folded(report.results))
    out.append(("", None))
    out.append((report.verdict(), "bold green" if report.ready else "bold red"))
    return [(printable(text), style) for text, style in out]   # no raw control character reaches the terminal


def _entry(r: Result, verbose: bool) -> list[tuple[str, str | None]]:
    mark, style = MARKS[r.status]
    timing = f"  ({r.duration_s * 1000:.1f} ms)" if verbose else ""
    out: list[tuple[str, str | None]] = [(f"{mark} {r.check_id}: {r.summary}{timing}", style)]
    details = r.details if verbose else r.details[:3] if r.status is Status.ERROR else ()
    out.extend((f"      {d}", "dim") for d in details)
    return out + _remedy(r, verbose)


def _folded(results: list[Result]) -> list[tuple[str, str | None]]:
    """One line for the passes, one per cause of skipping (a skip with a cause of its own keeps its line).
    Checks the profile gives nothing to judge are not findings: they join the passes' line."""
    out: list[tuple[str, str | None]] = []
    passes = [r for r in results if r.status is Status.PASS]
    idle = [r for r in results if r.status is Status.SKIP and r.cause == NOT_ASKED] if passes else []
    if passes:
        also = f", {len(idle)} had nothing to judge in this profile" if idle else ""
        out.append((f"{MARKS[Status.PASS][0]} {len(passes)} check{'s' if len(passes) != 1 else ''} passed{also} "
                    "(-v lists every check)", MARKS[Status.PASS][1]))
    groups: dict[str, list[Result]] = {}
    for r in results:
        if r.status is Status.SKIP and not (idle and r.cause == NOT_ASKED):
            groups.setdefault(r.cause or f"\0{r.summary}", []).append(r)
    for cause, members in groups.items():
        mark, style = MARKS[Status.SKIP]
        if len(members) == 1:
            out.append((f"{mark} {members[0].check_id}: {members[0].summary}", style))
        else:
            what = cause.lstrip("\0")
            out.append((f"{mark} {len(members)} checks skipped: {what}", style))
    return out


def _remedy(r: Result, verbose: bool = True) -> list[tuple[str, str | None]]:
    """The fix under a non-pass: the text, each command to run; the reference link where there is no command
    (and always with -v)."""
    if r.status in (Status.PASS, Status.SKIP) or r.remediation is None:
        return []
    rem = r.remediation
    out: list[tuple[str, str | None]] = [(f"    → {rem.text}", None)]
    out.extend((f"      $ {c}", "cyan") for c in rem.commands)
    if rem.url and (verbose or not rem.commands):
        out.append((f"      {rem.url}", "dim"))
    return out


def render(report: Report, stream: IO[str], verbose: bool = False, color: bool | None = None) -> None:
    """Rich output on a terminal; plain text otherwise."""
    isatty = getattr(stream, "isatty", lambda: False)()
    if not (isatty if color is None else color):
        stream.write("\n".join(text for text, _ in lines(report, verbose)) + "\n")
        return
    from rich.console import Console
    from rich.text import Text

    console = Console(file=stream, force_terminal=True, highlight=False, soft_wrap=True)
    for text, style in lines(report, verbose):
        console.print(Text(text, style=style or ""))
