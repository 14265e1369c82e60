"""Rebuild doctor/data/xid.yaml from a saved copy of NVIDIA's Xid catalog (nothing is downloaded).

    python scripts/refresh_data.py xid --catalog PAGE [--out doctor/data/xid.yaml] [--check]

PAGE is NVIDIA's "Analyzing Xid Errors with the Xid Catalog" page (docs.nvidia.com/deploy/xid-errors/), saved as
the text the docs render to: one table cell per line, each ending in " |", the table rows starting with a line
"XID |", and the empty cells of a row written as one line of "|" characters (one per empty cell). Its first
lines may be "source: <url>" and "read_via: <how this copy was obtained>". Two tables are read:

  the Xid catalog   Type, Code, Mnemonic, Description, Applies to A100/H100/B100/GB200, Resolution Bucket
                    (Immediate Action), Resolution Bucket (Investigatory Action), Xid 154 linkage, Trigger
                    Conditions;
  Guidance Class    the resolution bucket -> "Resolution Action" text (what to do, in NVIDIA's words).

The rendering drops the position of empty cells, so after the eight fixed cells a cell is placed by its content:
a bucket name (a Guidance Class, or an UPPER_CASE token) is the immediate, then the investigatory action; "CUDA
x.y; GPU driver Rnnn" or "yes; ..." is the Xid 154 linkage; other text is the trigger condition. A row whose first
free cell is prose has no immediate action that can be placed: it is written with action null and `unconfirmed`.

severity is derived from the immediate action by SEVERITY below (documented in the output's header).
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NAME = "xid"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "doctor" / "data" / "xid.yaml"

# NVIDIA's immediate action (Resolution Bucket) -> doctor's severity for a job about to start on this GPU.
#   fail: the GPU, its link, its VM or the node must be reset, rebooted, repaired or updated before it is reliable;
#   warn: an application failed, or the action depends on the message text / other Xids, or NVIDIA says contact
#         support: read the event before launching;
#   info: NVIDIA says no action is required.
SEVERITY: dict[str, str] = {
    "RESET_GPU": "fail", "RESTART_BM": "fail", "RESTART_VM": "fail", "CHECK_MECHANICALS": "fail",
    "UPDATE_SWFW": "fail", "WORKFLOW_XID_48": "fail", "WORKFLOW_NVLINK_ERR": "fail", "WORKFLOW_NVLINK5_ERR": "fail",
    "RESTART_APP": "warn", "CONTACT_SUPPORT": "warn", "WORKFLOW_XID_45": "warn", "XID_154": "warn",
    "XID_154_EVAL": "warn", "CHECK_UVM": "warn",
    "IGNORE": "info",
}
NO_ACTION_SEVERITY = "warn"  # no immediate action given, or one not in SEVERITY: read NVIDIA's text
PRODUCTS = ("A100", "H100", "B100", "GB200")
_VERSION_GATE = re.compile(r"^(CUDA \d+\.\d+; GPU driver R\d+|yes; .*)$", re.I)
_BUCKET = re.compile(r"^[A-Z][A-Z0-9_/]*[A-Z0-9](?: \([^)]*\))?$")
_CELL = re.compile(r"^(?P<text>.*?)\s*\|$")


@dataclass
class Catalog:
    """What one saved page gives: its source, the Xid rows and the guidance-class texts."""

    url: str | None
    read_via: str | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    guidance: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _cells(lines: list[str]) -> list[str | None]:
    """Cells of one rendered table row: 'text |' is a cell, a line of n '|' is n empty cells (None)."""
    out: list[str | None] = []
    for line in lines:
        s = line.strip()
        if not s:
            continue
        if set(s) == {"|"}:
            out.extend([None] * len(s))
            continue
        m = _CELL.match(s)
        out.append((m.group("text") if m else s).strip())
    return out


def _blocks(lines: list[str], start: int) -> tuple[list[list[str]], int]:
    """Rows of the Xid table from `start` (each row's lines), up to the first blank line."""
    rows: list[list[str]] = []
    i = start
    while i < len(lines) and lines[i].strip():
        if lines[i].strip() == "XID |":
            rows.append([])
        elif rows:
            rows[-1].append(lines[i])
        i += 1
    return rows, i


def _is_bucket(cell: str, guidance: dict[str, str]) -> bool:
    return cell in guidance or cell == "N/A; Unused" or bool(_BUCKET.match(cell))


def _place(free: list[str], guidance: dict[str, str]) -> dict[str, Any]:
    """Place the cells after the eight fixed ones by their content (see the module docstring)."""
    placed: dict[str, Any] = {"action": None, "investigatory": None, "xid154_linkage": None, "trigger": None}
    buckets = [c for c in free if _is_bucket(c, guidance)]
    if free and _is_bucket(free[0], guidance):
        placed["action"] = free[0]
        if len(buckets) > 1:
            placed["investigatory"] = buckets[1]
    prose = [c for c in free if not _is_bucket(c, guidance)]
    for c in prose:
        if _VERSION_GATE.match(c) and placed["xid154_linkage"] is None:
            placed["xid154_linkage"] = c
        elif placed["trigger"] is None:
            placed["trigger"] = c
    extra = [c for c in buckets[2:] if c != placed["investigatory"]]
    if extra:
        placed["extra_cells"] = extra
    return placed


def parse_catalog(text: str) -> Catalog:
    """Parse a saved catalog page (rendered text) into rows and guidance texts."""
    lines = text.splitlines()
    cat = Catalog(None, None)
    for line in lines[:5]:
        if line.startswith("source:"):
            cat.url = line.split(":", 1)[1].strip()
        elif line.startswith("read_via:"):
            cat.read_via = line.split(":", 1)[1].strip()
    # Guidance Class table first: the row parser needs its names.
    for i, line in enumerate(lines):
        if line.strip() == "Guidance Class |" and i + 1 < len(lines) and lines[i + 1].strip() == "Resolution Action |":
            body, j = [], i + 3
            while j < len(lines) and lines[j].strip():
                body.append(lines[j])
                j += 1
            cells = [c for c in _cells(body) if c is not None]
            for name, action in zip(cells[0::2], cells[1::2]):
                cat.guidance.setdefault(name, action)
            break
    else:
        cat.warnings.append("no 'Guidance Class | Resolution Action' table found")
    start = next((i for i, l in enumerate(lines) if l.strip() == "XID |"), None)
    if start is None:
        cat.warnings.append("no Xid catalog rows (lines 'XID |') found")
        return cat
    blocks, _ = _blocks(lines, start)
    for block in blocks:
        cells = _cells(block)
        fixed = cells[:7]
        if len(fixed) < 7 or fixed[0] is None or not fixed[0].isdigit():
            cat.warnings.append(f"skipped a row that does not start with a code: {fixed[:2]}")
            continue
        code, mnemonic, desc, *applies = fixed
        free = [c for c in cells[7:] if c is not None]
        row = {"code": int(code), "mnemonic": mnemonic, "description": desc,
               "applies_to": [p for p, a in zip(PRODUCTS, applies) if (a or "").upper() == "YES"],
               "applies_raw": applies, **_place(free, cat.guidance)}
        if row["action"] is None:
            row["unconfirmed"] = ("the saved copy drops the position of empty cells and this row's first free "
                                  "cell is prose, so no Immediate Action can be placed" if free else
                                  "the catalog row gives no Immediate Action")
        cat.rows.append(row)
    return cat


def severity(action: str | None) -> str:
    """doctor's severity for NVIDIA's immediate action (SEVERITY; unknown or none: warn)."""
    return SEVERITY.get(action or "", NO_ACTION_SEVERITY)


def build(cat: Catalog) -> dict[str, Any]:
    """The xid.yaml document: per code {text, action, severity, source, ...}, the action texts, the mapping."""
    if not cat.url:
        raise ValueError("the saved catalog has no 'source: <url>' line")
    cite = cat.url + (f" (read via {cat.read_via})" if cat.read_via else "")
    codes: dict[int, dict[str, Any]] = {}
    for r in cat.rows:
        if r["code"] in codes:
            cat.warnings.append(f"Xid {r['code']} appears twice; the first row is kept")
            continue
        entry: dict[str, Any] = {"text": r["description"], "mnemonic": r["mnemonic"], "action": r["action"],
                                 "severity": severity(r["action"])}
        if r["action"] and r["action"] not in SEVERITY:
            cat.warnings.append(f"Xid {r['code']}: immediate action {r['action']!r} has no severity mapping (warn)")
            entry["unconfirmed"] = f"immediate action {r['action']!r} is not in doctor's severity mapping"
        for key in ("investigatory", "xid154_linkage", "trigger", "unconfirmed", "extra_cells"):
            if r.get(key):
                entry[key] = r[key]
        entry["applies_to"] = r["applies_to"]
        entry["source"] = f"{cat.url}, Xid catalog row {r['code']}"
        codes[r["code"]] = entry
    used = {e["action"] for e in codes.values() if e["action"]} | {e.get("investigatory") for e in codes.values()}
    actions = {k: v for k, v in cat.guidance.items() if k in used}
    for a in sorted(x for x in used if x and x not in cat.guidance and x != "N/A; Unused"):
        cat.warnings.append(f"action {a!r} has no Guidance Class text")
    return {"schema": 2,
            "source": {"url": cat.url, "read_via": cat.read_via, "citation": cite,
                       "scope": "NVIDIA's catalog for Ampere and newer GPUs; Volta and older: "
                                "docs.nvidia.com/deploy/xid-errors/archive/ (not included)"},
            "severity_mapping": dict(SEVERITY, _none_or_other=NO_ACTION_SEVERITY),
            "actions": actions,
            "codes": codes,
            "unknown": {"severity": "warn", "action": None,
                        "text": "Xid not in NVIDIA's catalog as doctor last read it; look it up in the Xid catalog",
                        "source": cat.url}}


HEADER = """\
# NVIDIA Xid catalog, GENERATED by scripts/refresh/xid.py from a saved copy of NVIDIA's page; do not edit by hand.
#   python scripts/refresh_data.py xid --catalog <saved page>
# Per code: text (NVIDIA's Description), mnemonic, action (Resolution Bucket, Immediate Action), investigatory
# (Investigatory Action), severity (doctor's, derived from action), xid154_linkage, trigger (Trigger Conditions),
# applies_to, source. actions: each bucket's "Resolution Action" text from NVIDIA's Guidance Class sheet.
# severity mapping (severity_mapping below): fail = RESET_GPU, RESTART_BM, RESTART_VM, CHECK_MECHANICALS, UPDATE_SWFW,
#   WORKFLOW_XID_48, WORKFLOW_NVLINK_ERR, WORKFLOW_NVLINK5_ERR (the GPU/node/VM must be reset, rebooted, repaired or
#   updated); warn = RESTART_APP, CONTACT_SUPPORT, WORKFLOW_XID_45, XID_154, XID_154_EVAL, CHECK_UVM, or no action
#   given (read the event); info = IGNORE (NVIDIA: no action required).
"""


def render(doc: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)


def add_parser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help="NVIDIA Xid catalog (text, immediate action, severity)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog", type=Path, required=True, metavar="FILE",
                   help="saved 'Analyzing Xid Errors with the Xid Catalog' page (rendered text)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if --out would change")
    return p


def run(args: argparse.Namespace) -> int:
    cat = parse_catalog(args.catalog.read_text(encoding="utf-8"))
    if not cat.rows:
        for w in cat.warnings:
            print(f"warning: {w}", file=sys.stderr)
        print("error: no Xid rows parsed; nothing written", file=sys.stderr)
        return 2
    text = render(build(cat))
    for w in cat.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'would change'}")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {len(cat.rows)} Xid codes, {len(build(cat)['actions'])} action texts")
    return 0
