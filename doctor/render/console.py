"""Console report: one line per check, remediation under each non-pass, a one-line verdict."""
from __future__ import annotations

from typing import IO

from ..model import Report, Result, Status
from ..output import printable

MARKS = {Status.PASS: ("[✓]", "green"), Status.WARN: ("[!]", "yellow"), Status.FAIL: ("[✗]", "red"),
         Status.SKIP: ("[-]", "dim"), Status.ERROR: ("[?]", "magenta")}


def lines(report: Report, verbose: bool = False) -> list[tuple[str, str | None]]:
    """(text, style) pairs; the same text whether or not colour is used."""
    out: list[tuple[str, str | None]] = []
    for note in report.notes:
        out.append((note, "dim"))
    for r in report.results:
        mark, style = MARKS[r.status]
        timing = f"  ({r.duration_s * 1000:.1f} ms)" if verbose else ""
        out.append((f"{mark} {r.check_id}: {r.summary}{timing}", style))
        if verbose or r.status in (Status.FAIL, Status.ERROR, Status.WARN):
            shown = r.details if verbose else r.details[:6]
            out.extend((f"      {d}", "dim") for d in shown)
        out.extend(_remedy(r))
    out.append(("", None))
    out.append((report.verdict(), "bold green" if report.ready else "bold red"))
    return [(printable(text), style) for text, style in out]   # no raw control character reaches the terminal


def _remedy(r: Result) -> list[tuple[str, str | None]]:
    if r.status in (Status.PASS, Status.SKIP) or r.remediation is None:
        return []
    rem = r.remediation
    out: list[tuple[str, str | None]] = [(f"    → {rem.text}", None)]
    out.extend((f"      $ {c}", "cyan") for c in rem.commands)
    if rem.url:
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
