"""Check doctor/data/gpus.yaml's NVML names against NVIDIA's lists of supported GPU products (saved copies).

    python scripts/refresh_data.py gpus --readme README.txt [--via "how it was obtained"] [--readme ...]
                                        [--data doctor/data/gpus.yaml] [--write] [--candidates [REGEX]] [--strict]

Inputs, each a saved copy given on the command line (nothing is downloaded):
  driver README   "NVIDIA Accelerated Linux Graphics Driver README and Installation Guide", README.txt: its
                  Appendix A "Supported NVIDIA GPU Products" lists each product name with its PCI device id
                  (and subsystem ids), in the current section ("A1. CURRENT NVIDIA GPUS", or A1..A5 by brand in
                  older drivers) and in legacy sections ("The 470.xx driver supports the following set of GPUs:").
                  Its version comes from "Most Recent Driver Version: X". Debian's nvidia-driver and
                  nvidia-tesla-NNN-driver packages ship it unchanged as /usr/share/doc/<package>/README.txt.gz.
  open README     README.md of NVIDIA's open GPU kernel modules (github.com/NVIDIA/open-gpu-kernel-modules),
                  table "Compatible GPUs" (Turing and later): "| Product Name | PCI ID |". Its version comes
                  from "... open GPU kernel modules, version X.".
These product names are the names the driver gives each board: what NVML's nvmlDeviceGetName and nvidia-smi report.

What it does, against the table:
  - reports each row's nvml_names found in the lists, with PCI ids, section and the document as the source;
  - reports nvml_names that no list given contains (confirmed elsewhere, or not at all: see the row's source);
  - with --candidates, lists the product names of the lists that no row has (optionally only those matching REGEX);
  - with --write, records what it found in each row's `nvml_readme` (one entry per name and document; entries
    from other documents are kept, so names that older drivers report stay backed by those drivers' READMEs).
It never adds a row, a name, a compute capability or a spec: those are chosen and cited by hand.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import yaml

NAME = "gpus"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO / "doctor" / "data" / "gpus.yaml"

_HEX4 = r"[0-9A-F]{4}"
_PCI = rf"{_HEX4}(?: {_HEX4} {_HEX4})?"
# a README.txt row: product name, PCI id (device, or device + subsystem vendor + subsystem device), VDPAU set
_TXT_ROW = re.compile(rf"^\s*(?P<name>\S.*?)\s+(?P<pci>{_PCI})(?:\s+(?P<vdpau>[A-Z-](?:\s+\d+)?))?\s*$")
_MD_ROW = re.compile(rf"^\|\s*(?P<name>[^|]*?)\s*\|\s*(?P<pci>{_PCI})\s*\|\s*$")
_LEGACY = re.compile(r"^The (?P<branch>\S+) driver supports the following set of GPUs:")
_SECTION = re.compile(r"^A\d+\.\s+(?P<title>.+?)\s*$")
_DRIVER_VERSION = re.compile(r"Most Recent Driver Version:\s*(?P<v>\d+(?:\.\d+)+)")
_OPEN_VERSION = re.compile(r"open GPU kernel modules,\s*version\s+(?P<v>\d+(?:\.\d+)+)", re.I)


def gpu_key(name: str) -> str:
    """The key doctor matches NVML names by (doctor.refdata.gpu_key): exact but for case and runs of white space."""
    return " ".join(name.casefold().split())


@dataclass(frozen=True)
class Product:
    """One row of a supported-products list."""

    name: str
    pci: str          # "2330" or "2330 10DE 16C1"
    section: str      # "current", or "legacy 470.xx"
    doc: str          # the document, with its driver version


# ------------------------------------------------------------------------------------------------------ parsing

def parse_driver_readme(text: str) -> Tuple[str, List[Product]]:
    """Products of a driver README.txt's Appendix A, with the README's title and version as `doc`."""
    m = _DRIVER_VERSION.search(text)
    if not m:
        raise ValueError("not a driver README: no 'Most Recent Driver Version:' line")
    doc = f"NVIDIA Linux driver {m.group('v')} README, Appendix A 'Supported NVIDIA GPU Products'"
    lines = text.splitlines()
    # The appendix itself is the heading followed by a rule of underscores (the table of contents has none).
    start = next((i for i, line in enumerate(lines[:-1])
                  if line.strip() == "Appendix A. Supported NVIDIA GPU Products" and lines[i + 1].startswith("___")),
                 None)
    if start is None:
        raise ValueError("driver README without 'Appendix A. Supported NVIDIA GPU Products'")
    out: List[Product] = []
    section, in_table = "current", False
    for line in lines[start + 2:]:
        if line.startswith("Appendix B") or (line.startswith("Appendix ") and not line.startswith("Appendix A")):
            break
        legacy = _LEGACY.match(line.strip())
        if legacy:
            section, in_table = f"legacy {legacy.group('branch')}", False
            continue
        if _SECTION.match(line):
            in_table = False
            continue
        if "NVIDIA GPU product" in line and "Device PCI ID" in line:
            in_table = True
            continue
        if not in_table or not line.strip() or set(line.strip()) <= {"-", " "}:
            continue
        row = _TXT_ROW.match(line)
        if row:
            out.append(Product(" ".join(row.group("name").split()), row.group("pci"), section, doc))
    if not out:
        raise ValueError("driver README: Appendix A has no product rows")
    return doc, out


def parse_open_readme(text: str) -> Tuple[str, List[Product]]:
    """Products of the open GPU kernel modules' README.md table "Compatible GPUs"."""
    m = _OPEN_VERSION.search(text)
    if not m:
        raise ValueError("not the open GPU kernel modules README: no '... kernel modules, version X' line")
    doc = f"NVIDIA open GPU kernel modules {m.group('v')} README.md, 'Compatible GPUs'"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().lower() == "## compatible gpus"), None)
    if start is None:
        raise ValueError("open README without a '## Compatible GPUs' section")
    out: List[Product] = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        row = _MD_ROW.match(line.strip())
        if row:
            out.append(Product(" ".join(row.group("name").split()), row.group("pci"), "current", doc))
    if not out:
        raise ValueError("open README: 'Compatible GPUs' has no product rows")
    return doc, out


def parse(text: str) -> Tuple[str, List[Product]]:
    """Either kind of list, told apart by its content."""
    if _DRIVER_VERSION.search(text):
        return parse_driver_readme(text)
    return parse_open_readme(text)


# ------------------------------------------------------------------------------------------------- comparison

def index(products: Iterable[Product]) -> Dict[str, List[Product]]:
    """Products by gpu_key of their name."""
    out: Dict[str, List[Product]] = {}
    for p in products:
        out.setdefault(gpu_key(p.name), []).append(p)
    return out


def evidence(products: List[Product], via: Optional[str]) -> List[Dict[str, Any]]:
    """One nvml_readme entry per (name, document, section): the PCI ids under which the list names it."""
    grouped: Dict[Tuple[str, str, str], List[str]] = {}
    for p in products:
        grouped.setdefault((p.name, p.doc, p.section), [])
        if p.pci not in grouped[(p.name, p.doc, p.section)]:
            grouped[(p.name, p.doc, p.section)].append(p.pci)
    out = []
    for (name, doc, section), pcis in grouped.items():
        entry: Dict[str, Any] = {"name": name, "pci_ids": pcis, "section": section, "doc": doc}
        if via:
            entry["via"] = via
        out.append(entry)
    return out


@dataclass
class Report:
    found: Dict[str, List[Dict[str, Any]]]   # row name -> evidence entries
    missing: Dict[str, List[str]]            # row name -> its nvml_names no list contains
    candidates: List[Product]                # products no row lists
    duplicates: List[str]                    # nvml names on more than one row


def compare(data: Dict[str, Any], lists: List[Tuple[str, List[Product], Optional[str]]]) -> Report:
    """The table's rows against the parsed lists (doc, products, via)."""
    by_key: Dict[str, List[Tuple[Product, Optional[str]]]] = {}
    for _doc, products, via in lists:
        for p in products:
            by_key.setdefault(gpu_key(p.name), []).append((p, via))
    found: Dict[str, List[Dict[str, Any]]] = {}
    missing: Dict[str, List[str]] = {}
    owners: Dict[str, List[str]] = {}
    for row in data.get("gpus") or []:
        for n in row.get("nvml_names") or []:
            owners.setdefault(gpu_key(n), []).append(row["name"])
            hits = by_key.get(gpu_key(n))
            if not hits:
                missing.setdefault(row["name"], []).append(n)
                continue
            for via in dict.fromkeys(v for _, v in hits):
                found.setdefault(row["name"], []).extend(evidence([p for p, v in hits if v == via], via))
    known = set(owners)
    seen, candidates = set(), []
    for _doc, products, _via in lists:
        for p in products:
            k = gpu_key(p.name)
            if k not in known and k not in seen:
                seen.add(k)
                candidates.append(p)
    dups = sorted(n for n, rows in owners.items() if len(rows) > 1)
    return Report(found, missing, candidates, dups)


def record(data: Dict[str, Any], report: Report, docs: Iterable[str]) -> Dict[str, Any]:
    """The table with each row's nvml_readme updated: entries from `docs` replaced by what was found now."""
    docs = set(docs)
    for row in data.get("gpus") or []:
        kept = [e for e in row.get("nvml_readme") or [] if e.get("doc") not in docs]
        new = kept + report.found.get(row["name"], [])
        new.sort(key=lambda e: (e["doc"], e["name"], e["section"]))
        if new:
            row["nvml_readme"] = new
        else:
            row.pop("nvml_readme", None)
    return data


# ------------------------------------------------------------------------------------------------------ output

class _Dumper(yaml.SafeDumper):
    """Block style overall; short lists of scalars and small maps of scalars in flow style."""


def _represent_dict(dumper: yaml.SafeDumper, value: Dict[str, Any]) -> yaml.Node:
    flow = all(not isinstance(v, dict) and (not isinstance(v, list) or _short(v)) for v in value.values()) \
        and len(value) <= 6 and sum(len(str(k)) + len(str(v)) for k, v in value.items()) < 100
    return dumper.represent_mapping("tag:yaml.org,2002:map", value.items(), flow_style=flow)


def _short(value: List[Any]) -> bool:
    return all(isinstance(v, (str, int, float)) for v in value) and sum(len(str(v)) for v in value) < 100


def _represent_list(dumper: yaml.SafeDumper, value: List[Any]) -> yaml.Node:
    flow = _short(value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(list, _represent_list)


def dump(data: Dict[str, Any]) -> str:
    """gpus.yaml as the script writes it (hand edits should keep this layout: it round-trips)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=118)


# ------------------------------------------------------------------------------------------------------ CLI

def add_parser(sub: Any) -> None:
    p = sub.add_parser(NAME, help="check gpus.yaml's NVML names against NVIDIA's supported-products lists",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readme", action="append", required=True, type=Path, metavar="FILE",
                   help="a saved driver README.txt or open-gpu-kernel-modules README.md (repeatable)")
    p.add_argument("--via", action="append", default=[], metavar="TEXT",
                   help="how the matching --readme copy was obtained (same order; recorded with each entry)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the table (default: doctor/data/gpus.yaml)")
    p.add_argument("--write", action="store_true", help="record the found names in each row's nvml_readme")
    p.add_argument("--candidates", nargs="?", const="", default=None, metavar="REGEX",
                   help="list product names no row has (only those matching REGEX, case-insensitive)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when a row's NVML name is in no list and the row does not say why")


def run(args: argparse.Namespace) -> int:
    if len(args.via) > len(args.readme):
        print("more --via than --readme", file=sys.stderr)
        return 2
    lists = []
    for i, path in enumerate(args.readme):
        try:
            doc, products = parse(path.read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError) as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 2
        lists.append((doc, products, args.via[i] if i < len(args.via) else None))
        print(f"{path}: {doc}: {len(products)} product rows, {len(index(products))} distinct names")
    data = yaml.safe_load(args.data.read_text(encoding="utf-8"))
    report = compare(data, lists)
    for row in data.get("gpus") or []:
        for e in report.found.get(row["name"], []):
            print(f"  found   {row['name']}: {e['name']!r} PCI {', '.join(e['pci_ids'])} ({e['section']}; {e['doc']})")
    unexplained = []
    for name, names in report.missing.items():
        row = next(r for r in data["gpus"] if r["name"] == name)
        why = "" if row.get("unconfirmed") else "  <- the row gives no reason"
        if why:
            unexplained.append(name)
        for n in names:
            print(f"  missing {name}: {n!r} is in none of the lists given{why}")
    for n in report.duplicates:
        print(f"  DUPLICATE nvml name on several rows: {n!r}")
    if args.candidates is not None:
        pat = re.compile(args.candidates, re.I) if args.candidates else None
        shown = [p for p in report.candidates if not pat or pat.search(p.name)]
        where = f" (matching {args.candidates!r})" if pat else ""
        print(f"candidates: {len(shown)} product names no row lists{where}")
        for p in shown:
            print(f"  candidate {p.name!r} PCI {p.pci} ({p.section}; {p.doc})")
    else:
        print(f"candidates: {len(report.candidates)} product names no row lists (--candidates to list them)")
    if args.write:
        record(data, report, [doc for doc, _, _ in lists])
        args.data.write_text(dump(data), encoding="utf-8")
        print(f"wrote {args.data}")
    if report.duplicates or (args.strict and unexplained):
        return 1
    return 0
