"""A live rich progress display of the bench phase on stderr (only on a terminal)."""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator

from .runner import OnEvent, Target


@contextlib.contextmanager
def progress(targets: list[Target], enabled: bool = True) -> Iterator[OnEvent | None]:
    """Yield an event callback that updates one line per device, or None when stderr is not a terminal."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                   console=Console(file=sys.stderr), transient=True)
    tasks = {t.key: bar.add_task(f"bench {t.label}: starting", total=None) for t in targets}
    labels = {t.key: t.label for t in targets}

    def on_event(key: str, event: dict[str, Any]) -> None:
        if event.get("event") == "progress" and key in tasks:
            bar.update(tasks[key], description=f"bench {labels[key]}: {event.get('stage')} {event.get('label', '')}")

    with bar:
        yield on_event
