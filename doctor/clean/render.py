"""The plan as a table (rich) or JSON (schema doctor.clean/1)."""
from __future__ import annotations

import json
import time
from typing import IO, Any

from ..units import human_age, human_bytes

SCHEMA = "doctor.clean/1"
KIND_LABEL = {"hub": "hub revision", "hub-repo": "hub repo", "hub-empty": "hub leftover", "incomplete": "incomplete",
              "leftover": "doctor leftover", "unfinished": "unfinished deletion", "checkpoint": "checkpoint",
              "datasets": "datasets cache", "xet": "xet cache", "torch-hub": "torch hub", "pip": "pip cache"}


def _escape(c: str) -> str:
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def term(value: object) -> str:
    """Text from the cache (repo ids, file names, paths), a profile or another process, made safe for a
    terminal: control and format characters (ANSI escapes, newlines, bidi overrides, undecodable bytes) are
    shown escaped, never sent raw. JSON output keeps the real string (json escapes it)."""
    text = str(value)
    return text if text.isprintable() else "".join(c if c.isprintable() else _escape(c) for c in text)


def _what(item: dict[str, Any]) -> str:
    if item["kind"] == "hub-repo":
        n = len(item.get("commits") or [])
        return f"{item['repo_type']} {item['repo_id']}" + (f" ({n} revisions)" if n > 1 else "")
    if item["kind"] == "unfinished":
        return f"{item['repo_type']} {item['repo_id']}" + (" (whole repo)" if item.get("whole") else "")
    if item["kind"] == "hub":
        return f"{item['repo_type']} {item['repo_id']} @ {item['commit'][:10]}" + (
            f" ({', '.join(item['refs'])})" if item.get("refs") else " (detached)")
    return item["path"]


ROWS = 100  # rows a console table shows: the largest items; --format json lists every one


def _table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]], stream: IO[str]) -> None:
    """A rich table of at most ROWS rows (cells already escaped by `term`, given to rich as plain Text so a
    `[...]` in a folder name is not markup); a plan of 10,000 repos is not 10,000 lines a person reads, and
    rich measures every cell (~1 ms a row)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    isatty = getattr(stream, "isatty", lambda: False)()
    console = Console(file=stream, force_terminal=isatty, width=None if isatty else 200, highlight=False)
    grid = Table(*header, title=title)
    for row in rows[:ROWS]:
        grid.add_row(*(Text(c) for c in row))
    console.print(grid)
    if len(rows) > ROWS:
        stream.write(f"… and {len(rows) - ROWS} more (the largest {ROWS} are shown; --format json lists every one)\n")


def inventory_text(inv: Any, stream: IO[str]) -> None:
    """What each root holds, when no policy selects anything."""
    lines = ["What can be reclaimed (nothing is selected: add --detached, --incomplete, --older-than, "
             "--free-target or --checkpoints … --keep-last N):"]
    for c in inv.caches:
        if not c["exists"]:
            lines.append(f"  {c['kind']:11} {term(c['path'])}: not present")
        elif c["kind"] == "hub":
            lines.append(f"  {'hub':11} {term(c['path'])}: {human_bytes(c['bytes'])} in {c['repos']} repos, "
                         f"{c['revisions']} revisions ({c['detached']} detached), "
                         f"{human_bytes(c['incomplete_bytes'])} in interrupted downloads")
        else:
            lines.append(f"  {c['kind']:11} {term(c['path'])}: {human_bytes(c['bytes'])} in {c['entries']} entries"
                         + ("" if c["kind"] == "checkpoint" else f" (deleted only with --include {c['kind']})"))
    stream.write("\n".join(lines) + "\n")


def plan_table(plan: dict[str, Any], stream: IO[str], now: float | None = None) -> None:
    now = time.time() if now is None else now
    if plan["items"]:
        rows = [(KIND_LABEL.get(item["kind"], item["kind"]), term(_what(item)), human_bytes(item["bytes"]),
                 f"{human_age(now - item['last_access'])} ago" if item.get("last_access") else "?",
                 term(item["reason"]))
                for item in sorted(plan["items"], key=lambda i: -i["bytes"])]
        _table("doctor clean-cache: the plan", ("kind", "what", "size", "last access", "why"), rows, stream)
    if plan["kept"]:
        rows = [(KIND_LABEL.get(item["kind"], item["kind"]), term(_what(item)), human_bytes(item["bytes"]),
                 term(item["reason"])) for item in sorted(plan["kept"], key=lambda i: -i["bytes"])]
        _table("selected but kept", ("kind", "what", "size", "kept because"), rows, stream)
    for fs in plan["filesystems"]:
        held = (f"; {human_bytes(fs['held_deleted_bytes'])} more is held by deleted files still open"
                if fs.get("held_deleted_bytes") else "")
        stream.write(f"{term(fs['mountpoint'])}: {human_bytes(fs['free_before'])} free now → "
                     f"{human_bytes(fs['free_after'])} after (+{human_bytes(fs['freed'])}){held}\n")
    target = plan.get("target")
    if target:
        stream.write(f"target: {human_bytes(target['bytes'])} free on {term(target['mountpoint'])}: "
                     + ("reached by this plan\n" if target["reachable"] else
                        f"cannot be reached: {human_bytes(target['free_after'])} at most with what may be deleted\n"))
    stream.write(f"total: {human_bytes(plan['total_bytes'])} in {len(plan['items'])} item(s)\n")


def _item(item: dict[str, Any]) -> dict[str, Any]:
    out = {"path": item["path"], "kind": item["kind"], "bytes": item["bytes"], "reason": item["reason"],
           "last_access": item.get("last_access")}
    for key in ("repo_id", "repo_type", "commit", "commits", "refs", "in_use"):
        if item.get(key):
            out[key] = item[key]
    return out


def to_json(plan: dict[str, Any], inv: Any, policy: dict[str, Any], outcome: dict[str, Any] | None,
            dry_run: bool) -> str:
    doc = {"schema": SCHEMA, "policy": policy, "dry_run": dry_run,
           "items": [_item(i) for i in plan["items"]], "kept": [_item(i) for i in plan["kept"]],
           "total_bytes": plan["total_bytes"], "filesystems": plan["filesystems"], "target": plan["target"],
           "caches": inv.caches, "notes": inv.notes, "executed": outcome is not None}
    if outcome is not None:
        doc["deleted"] = [i["path"] for i in outcome["deleted"]]
        doc["not_deleted"] = [_item(i) for i in outcome["not_deleted"]]
        doc["errors"] = outcome["errors"]
        doc["free_after_measured"] = {str(k): v for k, v in outcome["free_after"].items()}
    return json.dumps(doc, indent=2, default=str) + "\n"
