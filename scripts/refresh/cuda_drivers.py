"""Rebuild doctor/data/cuda.yaml from NVIDIA's own pages (saved copies; nothing is downloaded).

    python scripts/refresh_data.py cuda
        --release-notes NOTES [NOTES ...]   # CUDA Toolkit Release Notes, current and archived (HTML or text)
        --compat PAGE [PAGE ...]            # CUDA Compatibility guide pages (minor-version, forward-compatibility)
        --ptx-isa PAGE                      # PTX ISA "Release Notes" chapter (Table "PTX Release History")
        --redistrib JSON [JSON ...]         # redistrib_X.Y.Z.json manifests (release_date of each toolkit release)

What each input gives (all parsed, none retyped):
  release notes   "CUDA Toolkit and Corresponding Driver Versions" (GA and Update rows, Linux x86_64 / Windows
                  x86_64, N/A cells, footnote marks), "CUDA Toolkit and Corresponding Driver Branch" (13.x pages
                  from 13.4 on), and the minor-version-compatibility ranges ("13.x | >= 580 | N/A").
  compat pages    the same ranges, the exact 11.x / 12.x floors stated in prose, and the forward-compatibility
                  package matrix (cuda-compat-X-Y against driver branches: C / X / N/A).
  PTX ISA         which CUDA release and driver branch each PTX ISA version shipped with, and its targets; from it
                  the first (and, for dropped ones, last) release that lists each sm_ target.
  redistrib       the release_date NVIDIA gives for each toolkit release.

A saved page is HTML or the text the docs render to (one cell per line, or cells separated by "|"). Its source
URL is read from a first line "source: <url>", a YAML front-matter "url:", or an HTML canonical link; an optional
line "read_via: <how this copy was obtained>" is added to every citation from that page.

The output has a generated part and a hand-kept part (prose rules quoted from NVIDIA with their sources). Everything
after the HAND_KEPT_MARKER line of the existing output file is carried over verbatim.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import html.parser
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import yaml
from packaging.version import Version

NAME = "cuda"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "doctor" / "data" / "cuda.yaml"
HAND_KEPT_MARKER = "# ===== HAND-KEPT RULES: everything below this line is kept verbatim by the refresh script ====="

# ----------------------------------------------------------------------------------------------- page -> tokens

_BLOCK_TAGS = {"p", "div", "td", "th", "tr", "li", "ul", "ol", "table", "thead", "tbody", "br", "h1", "h2", "h3",
               "h4", "h5", "h6", "caption", "section", "pre", "dt", "dd"}
_SKIP_TAGS = {"script", "style", "nav"}


class _HtmlCells(html.parser.HTMLParser):
    """Flattens HTML into text tokens: one token per block element (table cell, paragraph, list item)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tokens: List[str] = []
        self.canonical: Optional[str] = None
        self.title: Optional[str] = None
        self._buf: List[str] = []
        self._skip = 0
        self._in_title = False

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        if text:
            self.tokens.append(text)
        self._buf = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        a = dict(attrs)
        if tag == "link" and (a.get("rel") or "").lower() == "canonical":
            self.canonical = a.get("href")
        if tag == "title":
            self._in_title = True
        if tag in _SKIP_TAGS:
            self._skip += 1
        if tag in _BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in _SKIP_TAGS and self._skip:
            self._skip -= 1
        if tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title = (self.title or "") + data.strip()
            return
        if not self._skip:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


_SEPARATOR = re.compile(r"^:?-{3,}:?$")
_BROWSE_PREFIX = re.compile(r"^L\d+:\s?")


@dataclass
class Page:
    """One saved page: where it came from and its text as a flat list of cell/paragraph tokens."""

    path: str
    url: Optional[str]
    title: Optional[str]
    tokens: List[str]
    text: str
    read_via: Optional[str] = None  # how the copy was obtained, from a "read_via:" header line


def read_page(path: Path) -> Page:
    """Read a saved page (HTML or rendered text) into tokens; find its source URL and title."""
    raw = path.read_text(encoding="utf-8", errors="replace")
    url = None
    m = re.search(r"^(?:source|url):\s*(\S+)", raw[:2000], re.M)
    if m:
        url = m.group(1)
    via = re.search(r"^read_via:\s*(.+)$", raw[:2000], re.M)
    if re.search(r"<(table|html|tr|td)\b", raw, re.I):
        p = _HtmlCells()
        p.feed(raw)
        p.close()
        tokens, title = p.tokens, p.title
        url = url or p.canonical
    else:
        tokens = []
        for line in raw.splitlines():
            line = _BROWSE_PREFIX.sub("", line)
            for cell in line.replace("`", "").split("|"):
                cell = " ".join(cell.split())
                if cell and not _SEPARATOR.match(cell):
                    tokens.append(cell)
        title = None
    tokens = [t for t in tokens if not re.match(r"(read_via|source|url):\s", t)]
    text = " ".join(tokens)
    if title is None:
        t = re.search(r"(CUDA Toolkit \d+\.\d+(?: Update \d+)? - Release Notes|CUDA \d+\.\d+(?: Update \d+)? "
                      r"Release Notes)", text)
        title = t.group(1) if t else None
    return Page(str(path), url, title, tokens, text, via.group(1).strip() if via else None)


# ----------------------------------------------------------------------------------------------- table parsers

_LABEL = re.compile(r"^CUDA (?P<mm>\d+\.\d+)(?:\.(?P<patch>\d+))?\s+(?P<kind>GA|RC|Update (?P<n>\d+))\s*(?P<fn>\**)$")
_DRIVER = re.compile(r"^(?:>=|≥)?\s*(?P<v>\d{3}\.\d+(?:\.\d+)?)\s*(?P<fn>\**)$")
_NA = re.compile(r"^N/?A\s*(?P<fn>\**)$", re.I)


@dataclass
class DriverRow:
    """One row of "CUDA Toolkit and Corresponding Driver Versions"."""

    toolkit: str               # "12.8"
    release: str               # "12.8 Update 1" (NVIDIA's label without "CUDA ")
    version: str               # "12.8.1": archive-directory convention, GA = .0, Update N = .N
    linux: Optional[str]       # None when the cell says N/A
    windows: Optional[str]
    cells: Tuple[str, str]     # the cells as printed, e.g. (">=570.124.06", ">=572.61")


def _driver_cell(tok: str) -> Optional[Tuple[Optional[str], str]]:
    """(version, raw cell) for ">=570.26", (None, raw cell) for "N/A", None if tok is not a driver cell."""
    m = _DRIVER.match(tok)
    if m:
        return m.group("v"), tok
    if _NA.match(tok):
        return None, tok
    return None


def parse_driver_rows(tokens: List[str]) -> List[DriverRow]:
    """Rows "CUDA X.Y GA | >=linux | >=windows" (and "Update N", "X.Y.Z GA"); N/A cells become None."""
    rows: List[DriverRow] = []
    for i, tok in enumerate(tokens):
        m = _LABEL.match(tok)
        if not m:
            continue
        cells = []
        for nxt in tokens[i + 1:i + 3]:
            c = _driver_cell(nxt)
            if c is None:
                break
            cells.append(c)
        if not cells:
            continue
        mm, kind = m.group("mm"), m.group("kind")
        if kind == "RC":
            continue
        n = int(m.group("n")) if m.group("n") else 0
        patch = m.group("patch")
        version = f"{mm}.{patch}" if patch is not None else f"{mm}.{n}"
        label = f"{mm}{'.' + patch if patch is not None else ''} {kind}"
        linux, lraw = cells[0]
        windows, wraw = cells[1] if len(cells) > 1 else (None, "")
        rows.append(DriverRow(mm, label, version, linux, windows, (lraw, wraw)))
    return rows


_BRANCH_LABEL = re.compile(r"^CUDA (\d+\.\d+)$")
_BRANCH = re.compile(r"^R(\d{3})$")


def parse_branch_rows(tokens: List[str]) -> Dict[str, str]:
    """Rows "CUDA 13.4 | R615" of "CUDA Toolkit and Corresponding Driver Branch" -> {"13.4": "615"}."""
    out: Dict[str, str] = {}
    for i, tok in enumerate(tokens[:-1]):
        m, b = _BRANCH_LABEL.match(tok), _BRANCH.match(tokens[i + 1])
        if m and b:
            out[m.group(1)] = b.group(1)
    return out


_MAJOR = re.compile(r"^(?:CUDA )?(\d+)\.x$")
_MIN = re.compile(r"^>=\s*(\d{3}(?:\.\d+)*)\s*(\**)$")
_MAX = re.compile(r"^<\s*(\d{3}(?:\.\d+)*)")


def parse_minor_ranges(tokens: List[str]) -> Dict[str, Dict[str, Any]]:
    """Rows of the minor-version-compatibility table.

    Two shapes exist: "13.x | >= 580 | N/A" (min, max) and, on older pages, "12.x | >=525.60.13 | >=527.41"
    (Linux, Windows). A second ">=" cell is read as the Windows minimum; "<" or "N/A" as the upper end."""
    out: Dict[str, Dict[str, Any]] = {}
    for i, tok in enumerate(tokens):
        m = _MAJOR.match(tok)
        if not m or i + 2 >= len(tokens):
            continue
        lo = _MIN.match(tokens[i + 1])
        if not lo:
            continue
        second = tokens[i + 2]
        row: Dict[str, Any] = {"min": lo.group(1), "cells": [tokens[i + 1], second]}
        if _MAX.match(second):
            row["max_exclusive"] = _MAX.match(second).group(1)
        elif second.upper().startswith("N/A"):
            row["max_exclusive"] = None
        elif _MIN.match(second):  # older shape: exact Linux and Windows floors
            row["linux_exact"], row["windows_exact"] = lo.group(1), _MIN.match(second).group(1)
        else:
            continue
        out.setdefault(m.group(1), row)
    return out


_EXACT_11 = [
    re.compile(r"(?P<linux>\d{3}\.\d+\.\d+)\s*\(Linux\)\s*/\s*(?P<windows>\d{3}\.\d+)\s*\(Windows\)"),
    re.compile(r"(?P<linux>\d{3}\.\d+\.\d+) or later on Linux, or (?P<windows>\d{3}\.\d+) or later on Windows"),
]
_EXACT_FLOOR = re.compile(r"(?P<linux>\d{3}\.\d+\.\d+) which is the minimum required driver version for the "
                          r"(?P<major>\d+)\.x toolkits")


def parse_exact_floors(text: str) -> Dict[str, Dict[str, str]]:
    """Exact floors NVIDIA states in prose: the 11.x footnote (Linux / Windows) and "upgrading the driver to
    525.60.13 which is the minimum required driver version for the 12.x toolkits" (Linux)."""
    out: Dict[str, Dict[str, str]] = {}
    for rx in _EXACT_11:
        m = rx.search(text)
        if m and "11.x" in text[max(0, m.start() - 400):m.end() + 200]:
            out.setdefault("11", {"linux": m.group("linux"), "windows": m.group("windows"),
                                  "quote": _sentence(text, m.start(), m.end())})
    for m in _EXACT_FLOOR.finditer(text):
        out.setdefault(m.group("major"), {"linux": m.group("linux"), "quote": _sentence(text, m.start(), m.end())})
    return out


def _sentence(text: str, start: int, end: int) -> str:
    """The sentence around text[start:end] (for quoting)."""
    a = max(text.rfind(". ", 0, start), text.rfind(" * ", 0, start), text.rfind("*** ", 0, start))
    b = text.find(". ", end)
    found = text[a + 2 if a >= 0 else 0:(b + 1) if b >= 0 else len(text)].strip(" *")
    return found[5:] if found.startswith("Note ") else found


_COMPAT_COL = re.compile(r"^(\d{3})\+ \(CUDA (\d+\.\d+)\)$")
_COMPAT_ROW = re.compile(r"^cuda-compat-(\d+)-(\d+)$")
_COMPAT_CELL = {"C": "compatible", "X": "not_compatible", "N/A": "not_applicable"}


def parse_compat_matrix(tokens: List[str]) -> Tuple[List[Tuple[str, str]], Dict[str, Dict[str, str]]]:
    """The forward-compatibility table: columns "535+ (CUDA 12.2)" ..., rows "cuda-compat-13-4 | C | ... | N/A"."""
    cols = [(m.group(1), m.group(2)) for m in map(_COMPAT_COL.match, tokens) if m]
    rows: Dict[str, Dict[str, str]] = {}
    if not cols:
        return cols, rows
    for i, tok in enumerate(tokens):
        m = _COMPAT_ROW.match(tok)
        if not m:
            continue
        cells = tokens[i + 1:i + 1 + len(cols)]
        if len(cells) == len(cols) and all(c in _COMPAT_CELL for c in cells):
            rows[f"{m.group(1)}.{m.group(2)}"] = {b: _COMPAT_CELL[c] for (b, _), c in zip(cols, cells)}
    return cols, rows


_PTX = re.compile(r"^PTX ISA (\d+\.\d+)$")
_PTX_CUDA = re.compile(r"^(?:CUDA (?P<cuda>\d+\.\d+), )?driver r(?P<drv>\d+)$")
_TARGETS = re.compile(r"^sm_(?:\{[\w,]+\}|\w+)(?:,\s*sm_(?:\{[\w,]+\}|\w+))*$")


def _expand_targets(cell: str) -> List[str]:
    """"sm_{90,90a}, sm_100" -> ["sm_90", "sm_90a", "sm_100"] (duplicates dropped, order kept)."""
    out: List[str] = []
    for part in re.findall(r"sm_(\{[^}]*\}|\w+)", cell):
        for s in part.strip("{}").split(","):
            t = f"sm_{s.strip()}"
            if t not in out:
                out.append(t)
    return out


def parse_ptx_history(tokens: List[str]) -> List[Dict[str, Any]]:
    """Table "PTX Release History": one entry per (PTX ISA version, CUDA release, driver branch, targets).

    A PTX ISA version may span two CUDA releases (HTML rowspan): the second release then has no PTX ISA cell and,
    where its targets cell is shared too, the targets of the release above."""
    rows: List[Dict[str, Any]] = []
    ptx: Optional[str] = None
    for tok in tokens:
        p = _PTX.match(tok)
        if p:
            ptx = p.group(1)
            continue
        c = _PTX_CUDA.match(tok)
        if c and ptx:
            rows.append({"ptx_isa": ptx, "cuda": c.group("cuda"), "driver_branch": c.group("drv"), "targets": []})
            continue
        if rows and not rows[-1]["targets"] and _TARGETS.match(tok):
            rows[-1]["targets"] = _expand_targets(tok)
    for prev, row in zip(rows, rows[1:]):
        if not row["targets"] and row["ptx_isa"] == prev["ptx_isa"]:
            row["targets"] = list(prev["targets"])
    return [r for r in rows if r["targets"]]


# ----------------------------------------------------------------------------------------------- assembly

def _v(s: str) -> Version:
    return Version(s)


@dataclass
class Sources:
    """What every input said, keyed for merging."""

    rows: Dict[Tuple[str, str], List[Tuple[DriverRow, str]]] = field(default_factory=dict)
    branches: Dict[str, List[Tuple[str, str]]] = field(default_factory=dict)
    ranges: Dict[str, List[Tuple[Dict[str, Any], str]]] = field(default_factory=dict)
    exact: Dict[str, List[Tuple[Dict[str, str], str]]] = field(default_factory=dict)
    compat_cols: List[Tuple[str, str]] = field(default_factory=list)
    compat_rows: Dict[str, Dict[str, str]] = field(default_factory=dict)
    compat_source: Optional[str] = None
    ptx: List[Dict[str, Any]] = field(default_factory=list)
    ptx_source: Optional[str] = None
    dates: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    inputs: List[Dict[str, Any]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


def _cite(page: Page, what: str) -> str:
    where = page.url or f"file {Path(page.path).name} (no source URL in the copy)"
    via = f"; read via {page.read_via}" if page.read_via else ""
    return f"{where} ({page.title + ', ' if page.title else ''}{what}{via})"


def collect(notes: Iterable[Path], compat: Iterable[Path], ptx: Iterable[Path], redistrib: Iterable[Path]) -> Sources:
    """Parse every input and gather what it states, each fact with the page it came from."""
    src = Sources()
    for path in notes:
        page = read_page(path)
        rows = parse_driver_rows(page.tokens)
        branches = parse_branch_rows(page.tokens)
        ranges = parse_minor_ranges(page.tokens)
        exact = parse_exact_floors(page.text)
        src.inputs.append({"file": path.name, "kind": "release notes", "url": page.url, "title": page.title,
                           "driver_rows": len(rows), "branch_rows": len(branches)})
        if not (rows or branches):
            src.warnings.append(f"{path}: no driver table found")
        for r in rows:
            src.rows.setdefault((r.toolkit, r.release), []).append(
                (r, _cite(page, '"CUDA Toolkit and Corresponding Driver Versions"')))
        for tk, b in branches.items():
            src.branches.setdefault(tk, []).append((b, _cite(page, '"CUDA Toolkit and Corresponding Driver Branch"')))
        for major, rg in ranges.items():
            src.ranges.setdefault(major, []).append(
                (rg, _cite(page, '"CUDA Toolkit and Minimum Required Driver Version for CUDA Minor Version '
                                 'Compatibility"')))
        for major, ex in exact.items():
            src.exact.setdefault(major, []).append((ex, _cite(page, "footnote")))
    for path in compat:
        page = read_page(path)
        ranges = parse_minor_ranges(page.tokens)
        exact = parse_exact_floors(page.text)
        cols, crow = parse_compat_matrix(page.tokens)
        src.inputs.append({"file": path.name, "kind": "compatibility guide", "url": page.url, "title": page.title,
                           "range_rows": len(ranges), "compat_rows": len(crow)})
        for major, rg in ranges.items():
            src.ranges.setdefault(major, []).append((rg, _cite(page, "minor version compatibility table")))
        for major, ex in exact.items():
            src.exact.setdefault(major, []).append((ex, _cite(page, "text")))
        if crow:
            if src.compat_rows and crow != src.compat_rows:
                src.warnings.append(f"{path}: a second forward-compatibility matrix differs; the first one is kept")
            else:
                src.compat_cols, src.compat_rows = cols, crow
                src.compat_source = _cite(page, "forward compatibility package table")
    for path in ptx:
        page = read_page(path)
        rows = parse_ptx_history(page.tokens)
        src.inputs.append({"file": path.name, "kind": "PTX ISA release notes", "url": page.url, "ptx_rows": len(rows)})
        if rows and (not src.ptx or _v(rows[-1]["ptx_isa"]) > _v(src.ptx[-1]["ptx_isa"])):
            src.ptx, src.ptx_source = rows, _cite(page, '"PTX Release History" table')
    for path in redistrib:
        data = json.loads(path.read_text(encoding="utf-8"))
        label, date = data.get("release_label"), data.get("release_date")
        src.inputs.append({"file": path.name, "kind": "redistrib manifest", "release_label": label})
        via = f"; read via {data['read_via']}" if data.get("read_via") else ""
        if label and date and data.get("release_product", "cuda") == "cuda":
            src.dates[label] = (date, f"https://developer.download.nvidia.com/compute/cuda/redist/{path.name} "
                                      f"(release_date of {label}{via})")
    return src


def _flow(d: Dict[str, Any]) -> "_FlowMap":
    return _FlowMap(d)


class _FlowMap(dict):
    """A mapping written on one line in the YAML output."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_FlowMap, lambda d, m: d.represent_mapping("tag:yaml.org,2002:map", m.items(),
                                                                   flow_style=True))


def build(src: Sources, min_toolkit: str, known: Iterable[str], date: str) -> Dict[str, Any]:
    """The generated part of cuda.yaml as a dict (see the file header for the schema)."""
    floor = _v(min_toolkit)
    toolkits: Dict[str, Dict[str, Any]] = {}

    def tk_entry(tk: str) -> Dict[str, Any]:
        return toolkits.setdefault(tk, {"released": None, "driver_branch": None, "drivers": [], "sources": []})

    for (tk, release), seen in src.rows.items():
        if _v(tk) < floor:
            continue
        first = seen[0][0]
        values = {(r.linux, r.windows) for r, _ in seen}
        row: Dict[str, Any] = {"release": release, "version": first.version, "linux": first.linux,
                               "windows": first.windows}
        if first.windows is None:
            row["windows_cell"] = first.cells[1] or "(no cell)"
        if first.linux is None:
            row["linux_cell"] = first.cells[0]
        if len(values) > 1:
            row["unconfirmed"] = "NVIDIA pages disagree: " + "; ".join(
                f"{c}: linux {r.linux}, windows {r.windows}" for r, c in seen)
        date_src = src.dates.get(first.version)
        if date_src:
            row["released"] = date_src[0]
        entry = tk_entry(tk)
        entry["drivers"].append(_flow(row))
        for _, cite in seen:
            if cite not in entry["sources"]:
                entry["sources"].append(cite)
        if date_src and date_src[1] not in entry["sources"]:
            entry["sources"].append(date_src[1])
    for tk, seen in src.branches.items():
        if _v(tk) < floor:
            continue
        entry = tk_entry(tk)
        values = {b for b, _ in seen}
        entry["driver_branch"] = seen[0][0] if len(values) == 1 else None
        if len(values) > 1:
            entry["unconfirmed"] = "NVIDIA pages disagree on the driver branch: " + ", ".join(sorted(values))
        for _, cite in seen:
            if cite not in entry["sources"]:
                entry["sources"].append(cite)
    for item in known:  # "13.5" or "13.5=<where its existence was read>"
        tk, _, evidence = item.partition("=")
        if _v(tk) >= floor:
            entry = tk_entry(tk)
            if evidence and evidence not in entry["sources"]:
                entry["sources"].append(evidence)
    for tk, entry in toolkits.items():
        entry["drivers"].sort(key=lambda r: _v(r["version"]))
        ga = next((r for r in entry["drivers"] if r["version"] == f"{tk}.0"), None)
        if ga and ga.get("released"):
            entry["released"] = ga["released"][:7]
        if not entry["drivers"]:
            entry.setdefault("unconfirmed", "no per-release driver row was read from an NVIDIA page for this "
                                            "toolkit" + ("" if entry["driver_branch"] else
                                                         ", nor its driver branch"))
        if not entry["sources"]:
            entry["sources"] = ["(given with --known-toolkits; no NVIDIA table row was read)"]
    ordered = {tk: toolkits[tk] for tk in sorted(toolkits, key=_v)}

    minor: Dict[str, Any] = {}
    for major in sorted(set(src.ranges) | set(src.exact), key=int):
        if int(major) < floor.major:
            continue
        seen = src.ranges.get(major, [])
        mins = {r["min"].split(".")[0] for r, _ in seen}
        row = {"min": None, "max_exclusive": None, "linux": None, "windows": None, "stated": [], "sources": []}
        for r, cite in seen:
            row["stated"].append(" | ".join(r["cells"]))
            if cite not in row["sources"]:
                row["sources"].append(cite)
            if "max_exclusive" in r and row["max_exclusive"] is None:
                row["max_exclusive"] = r["max_exclusive"]
        row["stated"] = sorted(set(row["stated"]))
        if len(mins) == 1:
            row["min"] = mins.pop()
        elif mins:
            row["unconfirmed"] = "pages disagree on the minimum: " + ", ".join(sorted(mins))
        candidates: Dict[str, set] = {"linux": set(), "windows": set()}
        for ex, cite in src.exact.get(major, []):  # floors NVIDIA states in prose
            for os_ in candidates:
                if ex.get(os_):
                    candidates[os_].add(ex[os_])
            row.setdefault("quotes", []).append(ex["quote"])
            if cite not in row["sources"]:
                row["sources"].append(cite)
        for r, _ in seen:  # exact per-OS floors of the older table shape
            for os_ in candidates:
                if r.get(f"{os_}_exact"):
                    candidates[os_].add(r[f"{os_}_exact"])
        for os_, values in candidates.items():
            if len(values) == 1:
                row[os_] = values.pop()
            elif values:
                row["unconfirmed"] = f"pages state different exact {os_} floors: " + ", ".join(sorted(values))
        minor[major] = row

    out: Dict[str, Any] = {
        "schema": 2,
        "generated": {"by": "scripts/refresh/cuda_drivers.py (python scripts/refresh_data.py cuda ...)",
                      "date": date, "inputs": [_flow({k: v for k, v in i.items() if v is not None})
                                               for i in src.inputs]},
        "toolkits": ordered,
        "minor_version_compatibility": minor,
    }
    if src.compat_rows:
        out["forward_compatibility_matrix"] = {
            "columns": [_flow({"branch": b, "cuda": c}) for b, c in src.compat_cols],
            "packages": {f"cuda-compat-{k.replace('.', '-')}": _flow(v)
                         for k, v in sorted(src.compat_rows.items(), key=lambda kv: _v(kv[0]), reverse=True)},
            "source": src.compat_source,
        }
    if src.ptx:
        out["ptx_isa"] = _ptx_section(src.ptx, floor, src.ptx_source or "")
    return out


def _ptx_section(rows: List[Dict[str, Any]], floor: Version, cite: str) -> Dict[str, Any]:
    """PTX ISA versions from the minimum toolkit on, plus first/last release listing each sm_ target."""
    first: Dict[str, Dict[str, Any]] = {}
    last: Dict[str, Dict[str, Any]] = {}
    for r in rows:
        for t in r["targets"]:
            where = {"ptx_isa": r["ptx_isa"], "cuda": r["cuda"]}
            first.setdefault(t, where)
            last[t] = where
    newest = set(rows[-1]["targets"])
    oldest = set(rows[0]["targets"])  # already there in the first row read: when it was first listed is unknown

    def recent(w: Dict[str, Any]) -> bool:
        return w["cuda"] is not None and _v(w["cuda"]) >= floor

    return {
        "versions": [_flow({"ptx_isa": r["ptx_isa"], "cuda": r["cuda"], "driver_branch": r["driver_branch"]})
                     for r in rows if r["cuda"] and _v(r["cuda"]) >= floor],
        "targets_first_listed": {t: _flow(w) for t, w in first.items() if recent(w) and t not in oldest},
        "targets_last_listed": {t: _flow(w) for t, w in last.items() if t not in newest and recent(w)},
        "source": cite,
    }


HEADER = """\
# CUDA toolkit <-> NVIDIA driver, minor-version and forward compatibility, and arch-target rules.
#
# GENERATED PART (everything above the HAND-KEPT marker) is written by scripts/refresh/cuda_drivers.py from
# saved copies of NVIDIA's pages; do not edit it by hand, rerun the script:
#   python scripts/refresh_data.py cuda --release-notes ... --compat ... --ptx-isa ... --redistrib ...
# The HAND-KEPT part (below the marker) holds NVIDIA's prose rules, quoted with their sources; the script copies
# it over unchanged.
#
# Schema 2:
#   toolkits.<X.Y>                 every toolkit from the minimum (11.8) on, oldest first
#     released                     "YYYY-MM" of the GA release, from NVIDIA's redistrib manifest; null if not read
#     driver_branch                "615" for R615: "CUDA Toolkit and Corresponding Driver Branch" (13.x, pages from
#                                  13.4 on list a branch per minor instead of per-release versions); null if none
#     drivers[]                    one row per release NVIDIA's "CUDA Toolkit and Corresponding Driver Versions"
#                                  table lists: release ("12.8 Update 1"), version ("12.8.1", by the archive-directory
#                                  convention GA=.0, Update N=.N), linux / windows = the driver version printed as
#                                  ">=..." (the "Toolkit Driver Version"), null where the cell is N/A (then
#                                  windows_cell / linux_cell keep the cell as printed), released = release_date.
#                                  A driver at or above it runs the toolkit with its full feature set.
#     sources                      every page a value was read from (URL, page title, table)
#     unconfirmed                  why something is missing or disputed; a toolkit without rows has only this
#   minor_version_compatibility.<major>
#     min / max_exclusive          the driver range NVIDIA states ("13.x | >= 580 | N/A"): min is a branch number;
#                                  compare Version(driver) >= Version(min). max_exclusive is where the range ends;
#                                  newer drivers run it through backward compatibility.
#     linux / windows              an exact floor where NVIDIA states one in prose (quotes), else null (use min)
#   forward_compatibility_matrix   cuda-compat-X-Y package against driver branch: compatible | not_compatible |
#                                  not_applicable (the package's own branch); branches not listed are not targets
#   ptx_isa                        "PTX Release History": PTX ISA version -> CUDA release(s), driver branch;
#                                  targets_first_listed / targets_last_listed: first / last release listing a target
#   (hand-kept) minor_version_limits, forward_compatibility, targets: see their own comments.
# Driver strings all parse with packaging.version.Version.
"""


def render(generated: Dict[str, Any], hand_kept: str) -> str:
    """Header + generated YAML + marker + hand-kept text; checked to load as one YAML document."""
    body = yaml.dump(generated, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=118)
    text = HEADER + body + "\n" + HAND_KEPT_MARKER + "\n" + hand_kept.lstrip("\n")
    loaded = yaml.safe_load(text)
    clash = set(generated) & set(yaml.safe_load(hand_kept) or {})
    if clash:
        raise ValueError(f"hand-kept section redefines generated keys: {sorted(clash)}")
    if not isinstance(loaded, dict):
        raise ValueError("output is not a YAML mapping")
    return text


def hand_kept_of(path: Path, whole_if_no_marker: bool = False) -> Optional[str]:
    """The text after the marker in an existing output file (or, if asked, the whole file when it has no
    marker); None if there is none."""
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8")
    i = text.find(HAND_KEPT_MARKER)
    if i < 0:
        return text if whole_if_no_marker else None
    return text[i + len(HAND_KEPT_MARKER):].lstrip("\n")


# ----------------------------------------------------------------------------------------------- CLI

def add_parser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help="CUDA toolkit <-> driver tables from NVIDIA's release notes",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--release-notes", nargs="+", type=Path, default=[], metavar="FILE",
                   help="saved CUDA Toolkit Release Notes pages (current and docs.nvidia.com/cuda/archive/...)")
    p.add_argument("--compat", nargs="*", type=Path, default=[], metavar="FILE",
                   help="saved docs.nvidia.com/deploy/cuda-compatibility/ pages")
    p.add_argument("--ptx-isa", nargs="*", type=Path, default=[], metavar="FILE",
                   help="saved PTX ISA release-notes chapter (the newest edition wins)")
    p.add_argument("--redistrib", nargs="*", type=Path, default=[], metavar="FILE",
                   help="redistrib_X.Y.Z.json manifests (release dates)")
    p.add_argument("--known-toolkits", nargs="*", default=[], metavar="X.Y[=SOURCE]",
                   help="toolkits known to exist whose driver rows could not be read (listed as unconfirmed); "
                        "=SOURCE says where their existence was read")
    p.add_argument("--min-toolkit", default="11.8")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--hand-kept-from", type=Path, default=None,
                   help="take the hand-kept part from this file (the text after the marker, or the whole file if "
                        "it has none) instead of from --out")
    p.add_argument("--date", default=_dt.date.today().isoformat(), help="generated.date (default: today)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if --out would change")
    return p


def run(args: argparse.Namespace) -> int:
    src = collect(args.release_notes, args.compat, args.ptx_isa, args.redistrib)
    for w in src.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not src.rows and not src.branches:
        print("error: no driver table was found in the inputs", file=sys.stderr)
        return 2
    hand = (hand_kept_of(args.hand_kept_from, whole_if_no_marker=True) if args.hand_kept_from
            else hand_kept_of(args.out))
    if hand is None:
        print(f"warning: no hand-kept section in {args.hand_kept_from or args.out}; writing an empty one",
              file=sys.stderr)
        hand = "# (empty: the prose rules were not carried over)\n"
    text = render(build(src, args.min_toolkit, args.known_toolkits, args.date), hand)
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{args.out} would change")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    n_rows = sum(len(t["drivers"]) for t in yaml.safe_load(text)["toolkits"].values())
    print(f"wrote {args.out}: {n_rows} driver rows from {len(src.inputs)} inputs")
    return 0
