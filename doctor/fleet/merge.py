"""The fleet view (pure): node reports in, per node and check the status, why each failing node fails, the
version skew across nodes, the nodes that sent no report, one verdict.

Exit code: 1 when a node is not ready or missing (with `strict`, also a node with warnings, or version skew),
else 3 when a node could not be decided, else 0."""
from __future__ import annotations

import datetime as _dt
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model import ExitCode, Status
from .hostlist import compress, natural_key
from .node import VERSION_KEYS, Finding, NodeReport, read

NODE_STATUSES = ("missing", "not_ready", "undecided", "ready")   # worst first
_SEVERITY = {s.value: s.severity for s in Status}


@dataclass(frozen=True)
class Expected:
    """The nodes the fleet should have: named (a node list) or only counted (--expect N)."""

    source: str                       # "--expect-nodes", "SLURM_JOB_NODELIST" or "--expect"
    spec: str                         # as given
    names: tuple[str, ...] | None     # None: only a count
    count: int


@dataclass
class Node:
    name: str
    status: str                        # one of NODE_STATUSES
    report: NodeReport | None          # None: missing
    reasons: tuple[Finding, ...]       # not ready: the failures; undecided: the errors; ready: the warnings
    duplicates: tuple[str, ...] = ()   # other reports of this node, not used (older)


@dataclass(frozen=True)
class Skew:
    """One version that differs across nodes: each value with the nodes that have it, most common first."""

    key: str
    label: str
    values: tuple[tuple[str, tuple[str, ...]], ...]
    unknown: tuple[str, ...]           # nodes whose report does not say


@dataclass
class Fleet:
    nodes: list[Node]                  # judged nodes, worst first (missing ones included)
    checks: list[str]                  # every check id seen, in profile order
    shown: list[str]                   # the checks not passing (or skipped) alike on every node, worst first
    skew: list[Skew]
    expected: Expected | None
    strict: bool
    unlisted: list[Node] = field(default_factory=list)   # reports from nodes outside the node list: not judged
    unnamed_missing: int = 0           # --expect N: reports short of N
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        extra = self.unnamed_missing if status == "missing" else 0
        return sum(n.status == status for n in self.nodes) + extra

    @property
    def total(self) -> int:
        return len(self.nodes) + self.unnamed_missing

    @property
    def exit_code(self) -> ExitCode:
        if self.count("not_ready") or self.count("missing") or (self.strict and self.skew):
            return ExitCode.NOT_READY
        return ExitCode.UNDECIDED if self.count("undecided") else ExitCode.READY

    def verdict(self) -> str:
        words = {"not_ready": "not ready", "missing": "missing", "undecided": "undecided", "ready": "ready"}
        parts = [f"{self.count(s)} {words[s]}" for s in ("not_ready", "missing", "undecided", "ready") if self.count(s)]
        of = f"{', '.join(parts)} of {self.total} node{'s' * (self.total != 1)}"
        code = self.exit_code
        if code is ExitCode.NOT_READY:
            why = " (version skew across nodes, --strict)" if not (self.count("not_ready") or self.count("missing")) \
                else ""
            return f"{of} — the fleet is not ready{why}."
        if code is ExitCode.UNDECIDED:
            return f"{of} — could not decide whether the fleet is ready."
        warned = sum(1 for n in self.nodes if n.reasons)
        return f"All {self.total} node{'s' * (self.total != 1)} ready" + (f" ({warned} with warnings)." if warned
                                                                          else ".")


def key(name: str) -> str:
    """How node names compare: case-insensitive, by the first label (gpu01.cluster.local is gpu01), an IP as is."""
    name = name.lower()
    return name if re.fullmatch(r"[\d.:]+", name) else name.split(".")[0]


def judge(report: NodeReport, strict: bool = False) -> tuple[str, tuple[Finding, ...]]:
    """A node's status and its reasons, from its results (the report's own verdict counts too)."""
    by = {s: tuple(f for f in report.findings if f.status == s) for s in ("fail", "error", "warn")}
    warn_fails = strict or report.strict
    if by["fail"] or report.exit_code == ExitCode.NOT_READY or (warn_fails and by["warn"]):
        reasons = by["fail"] or (by["warn"] if warn_fails else ())
        return "not_ready", reasons or (Finding("verdict", "fail", report.summary or "the report says not ready"),)
    if by["error"] or report.exit_code == ExitCode.UNDECIDED:
        return "undecided", by["error"] or (Finding("verdict", "error", report.summary or "undecided"),)
    return "ready", by["warn"]


def merge(reports: Sequence[NodeReport], expected: Expected | None = None, strict: bool = False) -> Fleet:
    """The fleet view of `reports` (see node.read), judged against `expected` when given."""
    groups: dict[str, list[NodeReport]] = {}
    for r in reports:
        groups.setdefault(key(r.name), []).append(r)
    notes: list[str] = []
    nodes: dict[str, Node] = {}
    for k, group in groups.items():
        chosen = max(enumerate(group), key=lambda ir: (_when(ir[1].created), ir[0]))[1]
        others = tuple(r.source for r in group if r is not chosen)
        if others:
            notes.append(f"{chosen.name}: {len(group)} reports ({', '.join(r.source for r in group)}); "
                         f"using the newest, {chosen.source}")
        status, reasons = judge(chosen, strict)
        nodes[k] = Node(chosen.name, status, chosen, reasons, others)
    unlisted: list[Node] = []
    unnamed = 0
    if expected is not None and expected.names is not None:
        listed = {key(n): n for n in expected.names}
        unlisted = sorted((n for k, n in nodes.items() if k not in listed), key=lambda n: natural_key(n.name))
        nodes = {k: n for k, n in nodes.items() if k in listed}
        for k, name in listed.items():
            if k not in nodes:
                nodes[k] = Node(name, "missing", None, ())
        if unlisted:
            notes.append(f"{len(unlisted)} report{'s' * (len(unlisted) != 1)} from nodes outside the node list "
                         f"({expected.source}), not judged: "
                         + ", ".join(f"{n.name} ({n.status.replace('_', ' ')})" for n in unlisted[:20])
                         + (f" and {len(unlisted) - 20} more" if len(unlisted) > 20 else ""))
    elif expected is not None:
        unnamed = max(0, expected.count - len(nodes))
        if len(nodes) > expected.count:
            notes.append(f"{len(nodes)} nodes sent reports, more than the {expected.count} expected "
                         f"({expected.source} {expected.spec})")
    ordered = sorted(nodes.values(), key=lambda n: (NODE_STATUSES.index(n.status),
                                                    -sum(f.status == "fail" for f in n.reasons), -len(n.reasons),
                                                    natural_key(n.name)))
    checks = list(dict.fromkeys(c for n in ordered if n.report for c in n.report.checks))
    return Fleet(ordered, checks, _shown(ordered, checks), _skew(ordered), expected, strict, unlisted, unnamed, notes)


def from_documents(documents: Iterable[tuple[str, Any]], expected: Expected | None = None,
                   strict: bool = False) -> Fleet:
    """merge() of parsed JSON documents, each with the file it came from; InputError for one that is no report."""
    return merge([read(doc, source) for source, doc in documents], expected, strict)


def _when(created: str | None) -> float:
    try:
        when = _dt.datetime.fromisoformat(created) if created else None
    except ValueError:
        return float("-inf")
    if when is None:
        return float("-inf")
    return (when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)).timestamp()


def _shown(nodes: list[Node], checks: list[str]) -> list[str]:
    """The columns worth a look: a check that warns, fails or errs somewhere, or differs across nodes."""
    present = [n.report.checks for n in nodes if n.report]
    rank: list[tuple[int, int, int, str]] = []
    for i, cid in enumerate(checks):
        counts = Counter(checks.get(cid) for checks in present)   # None: the node has no such result
        worst = max((_SEVERITY[s] for s in counts if s), default=0)
        if worst >= Status.WARN.severity or len(counts) > 1:
            hits = sum(n for s, n in counts.items() if s and _SEVERITY[s] == worst)
            rank.append((-worst, -hits, i, cid))
    return [cid for *_, cid in sorted(rank)]


def _skew(nodes: list[Node]) -> list[Skew]:
    out: list[Skew] = []
    present = [n for n in nodes if n.report]
    for k, label in VERSION_KEYS:
        values: dict[str, list[str]] = {}
        unknown: list[str] = []
        for n in present:
            v = n.report.versions.get(k) if n.report else None
            (values.setdefault(v, []) if v is not None else unknown).append(n.name)
        if len(values) > 1:
            ranked = sorted(values.items(), key=lambda kv: (-len(kv[1]), natural_key(kv[0])))
            out.append(Skew(k, label, tuple((v, tuple(sorted(ns, key=natural_key))) for v, ns in ranked),
                            tuple(sorted(unknown, key=natural_key))))
    return out


def describe(names: Sequence[str]) -> str:
    """Node names as a Slurm hostlist expression, e.g. gpu[01-04,07]."""
    return compress(list(names))


def tally(fleet: Fleet) -> dict[str, int]:
    """Judged nodes per status (missing ones counted whether named or not)."""
    return {s: fleet.count(s) for s in NODE_STATUSES}
