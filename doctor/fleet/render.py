"""The fleet view as text (table, reasons, skew, verdict), JSON (schema doctor.merge/1) or JUnit XML (one testsuite
per node). Everything taken from a report passes through doctor.output.printable: reports are untrusted."""
from __future__ import annotations

import datetime as _dt
import json
import re
import xml.etree.ElementTree as ET
from typing import Any

from .. import __version__
from ..output import printable
from .merge import Fleet, Node, describe, tally

SCHEMA = "doctor.merge/1"
MARKS = {"pass": "✓", "warn": "!", "fail": "✗", "error": "?", "skip": "-", None: "·"}
LEGEND = "✓ pass  ! warn  ✗ fail  ? undecided  - skip  · no result"
WORDS = {"missing": "missing", "not_ready": "not ready", "undecided": "undecided", "ready": "ready"}
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def term(text: Any) -> str:
    """`text` safe to print: control characters escaped, lone surrogates (valid in JSON) written as \\udxxx."""
    return printable(str(text)).encode("utf-8", "backslashreplace").decode("utf-8")


# ------------------------------------------------------------------------------------------------- console

def console(fleet: Fleet) -> str:
    lines = [_header(fleet), ""]
    lines += _table(fleet)
    lines += _reasons(fleet)
    lines += _skew_lines(fleet)
    if fleet.notes:
        lines += ["notes:", *(f"  {term(n)}" for n in fleet.notes)]
    lines += ["", fleet.verdict()]
    return "\n".join(lines) + "\n"


def _header(fleet: Fleet) -> str:
    reports = sum(1 for n in fleet.nodes if n.report) + len(fleet.unlisted)
    text = f"doctor merge: {reports} node report{'s' * (reports != 1)}"
    if fleet.expected:
        e = fleet.expected
        text += f"; {e.count} node{'s' * (e.count != 1)} expected ({e.source} {term(e.spec)})"
    return text + (" [strict]" if fleet.strict else "")


def _table(fleet: Fleet) -> list[str]:
    names = [term(n.name) for n in fleet.nodes]
    width = max([4, *(len(n) for n in names)])
    cols = fleet.shown
    labels = [term(c) for c in cols]
    head = f"{'node':{width}}  {'verdict':9}" + "".join(f"  {label}" for label in labels)
    rows = [head.rstrip()]
    for name, node in zip(names, fleet.nodes):
        checks = node.report.checks if node.report else {}
        cells = "".join(f"  {MARKS[checks.get(c)]:{len(label)}}" for c, label in zip(cols, labels))
        rows.append(f"{name:{width}}  {WORDS[node.status]:9}{cells}".rstrip())
    if fleet.unnamed_missing:
        rows.append(f"{'(unnamed)':{width}}  {'missing':9}  × {fleet.unnamed_missing}")
    hidden = len(fleet.checks) - len(cols)
    more = [f"{hidden} more check{'s' * (hidden != 1)} not shown: each passes (or skips) alike on every node"] \
        if hidden else []
    return [*rows, LEGEND, *more]


def _reasons(fleet: Fleet) -> list[str]:
    out: list[str] = []
    width = max([0, *(len(term(n.name)) for n in fleet.nodes)])
    for status, title in (("not_ready", "not ready"), ("missing", "missing"), ("undecided", "undecided"),
                          ("ready", "warnings")):
        block: list[str] = []
        for node in (n for n in fleet.nodes if n.status == status and (n.reasons or status == "missing")):
            block += _node_lines(node, width, fleet)
        if status == "missing" and fleet.unnamed_missing:
            e = fleet.expected
            block.append(f"  {fleet.unnamed_missing} of the {e.count if e else '?'} expected nodes sent no report "
                         f"({e.source if e else ''} {term(e.spec) if e else ''}); a node list would name them")
        if block:
            out += ["", f"{title}:", *block]
    return out


def _node_lines(node: Node, width: int, fleet: Fleet) -> list[str]:
    name = term(node.name)
    if node.report is None:
        where = f" ({fleet.expected.source})" if fleet.expected else ""
        return [(f"  {name:{width}}  no report from this node: it is in the node list{where} but sent none "
                 "(never started, or could not write its report)")]
    reasons = node.reasons if node.status != "ready" else node.reasons[:1]
    lines = [f"  {(name if i == 0 else ''):{width}}  {term(f.check_id)}: {term(f.summary)}"
             for i, f in enumerate(reasons)]
    if node.status == "ready" and len(node.reasons) > 1:
        lines[-1] += f" (+{len(node.reasons) - 1} more warning{'s' * (len(node.reasons) > 2)})"
    return lines


def _skew_lines(fleet: Fleet) -> list[str]:
    if not fleet.skew:
        present = sum(1 for n in fleet.nodes if n.report)
        return ["", ("version skew: none (drivers, CUDA, torch, Python, key packages and GPUs agree on "
                     f"{'all ' if present > 1 else ''}{present} node{'s' * (present != 1)})")]
    out = ["", "version skew:" + (" (--strict: the fleet is not ready)" if fleet.strict else "")]
    for s in fleet.skew:
        parts = [f"{term(v)} on {term(describe(nodes))}" for v, nodes in s.values]
        if s.unknown:
            parts.append(f"unknown on {term(describe(s.unknown))}")
        out.append(f"  {s.label}: " + "; ".join(parts))
    return out


# ------------------------------------------------------------------------------------------------- JSON

def to_dict(fleet: Fleet) -> dict[str, Any]:
    e = fleet.expected
    return {
        "schema": SCHEMA,
        "doctor_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "strict": fleet.strict,
        "expected": None if e is None else {"source": e.source, "spec": e.spec, "count": e.count,
                                            "names": list(e.names) if e.names is not None else None},
        "verdict": {"ready": fleet.exit_code == 0, "exit_code": int(fleet.exit_code), "summary": fleet.verdict(),
                    "nodes": fleet.total, "counts": tally(fleet)},
        "checks": fleet.checks,
        "shown": fleet.shown,
        "nodes": [_node(n) for n in fleet.nodes],
        "missing_unnamed": fleet.unnamed_missing,
        "unlisted": [_node(n) for n in fleet.unlisted],
        "skew": [{"key": s.key, "label": s.label, "values": [{"value": v, "nodes": list(ns)} for v, ns in s.values],
                  "unknown": list(s.unknown)} for s in fleet.skew],
        "notes": fleet.notes,
    }


def _node(n: Node) -> dict[str, Any]:
    r = n.report
    return {
        "name": n.name, "status": n.status,
        "source": r.source if r else None, "name_from": r.name_from if r else None,
        "created": r.created if r else None, "report_exit_code": r.exit_code if r else None,
        "profiles": list(r.profiles) if r else [],
        "reasons": [{"check": f.check_id, "status": f.status, "summary": f.summary} for f in n.reasons],
        "checks": dict(r.checks) if r else {},
        "versions": dict(r.versions) if r else {},
        "gpus": [dict(g) for g in r.gpus] if r else [],
        "duplicates": list(n.duplicates),
    }


def as_json(fleet: Fleet) -> str:
    return json.dumps(to_dict(fleet), indent=1) + "\n"


# ------------------------------------------------------------------------------------------------- JUnit

def _xml(text: Any) -> str:
    return _NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", term(text))


def junit(fleet: Fleet) -> str:
    """One testsuite per node, one testcase per check; a missing node is a suite with one failed case."""
    suites = ET.Element("testsuites", name="doctor merge", tests=str(fleet.total),
                        failures=str(fleet.count("not_ready") + fleet.count("missing")),
                        errors=str(fleet.count("undecided")))
    for node in fleet.nodes:
        suite = ET.SubElement(suites, "testsuite", name=f"doctor:{_xml(node.name)}")
        if node.report is None:
            case = ET.SubElement(suite, "testcase", classname=f"doctor.{_xml(node.name)}", name="report")
            ET.SubElement(case, "failure", message="no report from this node")
            suite.attrib.update(tests="1", failures="1", errors="0", skipped="0")
            continue
        summaries = {f.check_id: f.summary for f in node.report.findings}
        counts = {s: 0 for s in ("fail", "error", "skip")}
        for cid, status in node.report.checks.items():
            case = ET.SubElement(suite, "testcase", classname=f"doctor.{_xml(node.name)}", name=_xml(cid))
            message = _xml(summaries.get(cid, ""))
            if status == "fail":
                ET.SubElement(case, "failure", message=message)
            elif status == "error":
                ET.SubElement(case, "error", message=message)
            elif status == "skip":
                ET.SubElement(case, "skipped")
            elif status == "warn":
                ET.SubElement(case, "system-out").text = f"WARNING: {message}"
            if status in counts:
                counts[status] += 1
        suite.attrib.update(tests=str(len(node.report.checks)), failures=str(counts["fail"]),
                            errors=str(counts["error"]), skipped=str(counts["skip"]))
        ET.SubElement(suite, "system-out").text = f"{WORDS[node.status]} ({_xml(node.report.source)})"
    ET.SubElement(suites, "system-out").text = _xml(fleet.verdict())
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
