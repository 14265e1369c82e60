"""One node's `doctor check --format json` report, checked and reduced to what the fleet view needs.

A report is untrusted input: anything that is not a report of schema 1.x is an InputError naming the file and
the key. Only the keys read here are checked; a newer minor version's extra fields are ignored."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from ..errors import InputError
from ..loading import MAX_INT, MAX_STRING, check_shape, excerpt, load_json

STATUSES = ("pass", "warn", "fail", "skip", "error")
# (key, label): the versions compared across nodes, in the order the skew lines are printed
VERSION_KEYS: tuple[tuple[str, str], ...] = (
    ("nvidia_driver", "NVIDIA driver"), ("cuda_driver", "CUDA (driver)"), ("torch", "torch"),
    ("torch_cuda", "torch CUDA build"), ("python", "Python"), ("transformers", "transformers"),
    ("accelerate", "accelerate"), ("peft", "peft"), ("deepspeed", "deepspeed"), ("bitsandbytes", "bitsandbytes"),
    ("flash-attn", "flash-attn"), ("gpu_model", "GPU model"), ("gpu_count", "GPU count"),
    ("doctor", "doctor"), ("profiles", "profiles"),
)
PACKAGES = ("transformers", "accelerate", "peft", "deepspeed", "bitsandbytes", "flash-attn")
NOT_INSTALLED = "not installed"
REDACTED = "<redacted>"        # what `doctor facts --redact` leaves of a hostname (doctor.redact)
TOP_KEYS = ("schema_version", "schema", "doctor_version", "created", "profiles", "verdict", "results")
FACT_KEYS = ("provenance", "host", "gpu", "torch", "python")   # the facts sections read here


def parse(text: str, source: str) -> Any:
    """The JSON document in `text`. Anything json.loads refuses (bad JSON, NaN, a 5000-digit number, nesting past
    the recursion limit) goes through loading.load_json for its one-line message.

    loading.load_json also walks every value against doctor's input bounds (loading.check_shape); over a report,
    mostly facts the merge never looks at, that walk cost more than the parsing. Here only what the merge keeps
    of a report is held to those bounds (read, _bounded); the file size bound (loading.read_text) holds the rest."""
    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        return json.loads(text, parse_constant=constant)
    except (ValueError, RecursionError):
        return load_json(text, source)


def _read_part(data: dict[str, Any]) -> dict[str, Any]:
    """The parts of a report that read() looks at."""
    part = {k: data[k] for k in TOP_KEYS if k in data}
    facts = data.get("facts")
    part["facts"] = {k: facts[k] for k in FACT_KEYS if k in facts} if isinstance(facts, dict) else facts
    return part


def _bounded(report: NodeReport, data: dict[str, Any], source: str) -> NodeReport:
    """`report` when every value it kept is within loading.check_shape's bounds, else that check's InputError
    naming the key (found by walking the parts read)."""
    kept = [report.name, report.created, report.summary, *report.profiles, *report.checks, *report.findings,
            *report.versions.values(), *(v for g in report.gpus for v in g.values())]
    for value in kept:
        text = value.summary if isinstance(value, Finding) else value
        too_big = len(text) > MAX_STRING if isinstance(text, str) else isinstance(text, int) and abs(text) >= MAX_INT
        if too_big:
            check_shape(_read_part(data), source)   # raises
            raise InputError(source, None, "holds a value past doctor's input bounds")   # not reached
    return report


@dataclass(frozen=True)
class Finding:
    """A check that made the node not ready or undecided."""

    check_id: str
    status: str
    summary: str


@dataclass
class NodeReport:
    """What the merge keeps of one report (small, so 10,000 of them fit in memory)."""

    source: str                     # the file it came from
    name: str                       # hostname, else the file name's stem
    name_from: str                  # "provenance.hostname", "host.hostname" or "file name"
    created: str | None
    exit_code: int                  # the report's own verdict
    strict: bool
    summary: str
    profiles: tuple[str, ...]
    checks: dict[str, str]          # check id -> status, in the report's (profile) order
    findings: tuple[Finding, ...]   # fail / warn / error results, in that order
    versions: dict[str, str | None] = field(default_factory=dict)   # None: the report does not say
    gpus: tuple[dict[str, Any], ...] = ()


def read(data: Any, source: str) -> NodeReport:
    """Check `data` (a parsed JSON document from `source`) is a doctor check report of schema 1.x and reduce it."""
    if not isinstance(data, dict):
        raise InputError(source, None, f"is a JSON {type(data).__name__}; expected a `doctor check --format json` "
                                       "report (an object)")
    _schema(data, source)
    verdict = _obj(data, "verdict", source)
    code = verdict.get("exit_code")
    if code not in (0, 1, 3) or isinstance(code, bool):
        raise InputError(source, "verdict.exit_code", f"is {excerpt(code)}; expected 0, 1 or 3")
    results = data.get("results")
    if not isinstance(results, list):
        raise InputError(source, "results", f"is {excerpt(results)}; expected the list of check results")
    checks: dict[str, str] = {}
    findings: list[Finding] = []
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise InputError(source, f"results[{i}]", f"is {excerpt(r)}; expected an object")
        cid, status, summary = r.get("id"), r.get("status"), r.get("summary")
        if not isinstance(cid, str) or not cid:
            raise InputError(source, f"results[{i}].id", f"is {excerpt(cid)}; expected a check id")
        if status not in STATUSES:
            raise InputError(source, f"results[{i}].status", f"is {excerpt(status)}; expected one of "
                                                             f"{', '.join(STATUSES)}")
        if not isinstance(summary, str):
            raise InputError(source, f"results[{i}].summary", f"is {excerpt(summary)}; expected a string")
        checks[cid] = status
        if status in ("fail", "warn", "error"):
            findings.append(Finding(cid, status, summary))
    order = {"fail": 0, "error": 1, "warn": 2}
    findings.sort(key=lambda f: order[f.status])   # stable: profile order within a status
    facts = _obj(data, "facts", source)
    name, name_from = _name(facts, source)
    profiles = data.get("profiles")
    profiles = tuple(p for p in profiles if isinstance(p, str)) if isinstance(profiles, list) else ()
    created = data.get("created") if isinstance(data.get("created"), str) else None
    summary = verdict.get("summary") if isinstance(verdict.get("summary"), str) else ""
    report = NodeReport(source=source, name=name, name_from=name_from, created=created, exit_code=code,
                        strict=verdict.get("strict") is True, summary=summary, profiles=profiles, checks=checks,
                        findings=tuple(findings), versions=versions(data, facts), gpus=_gpus(facts))
    return _bounded(report, data, source)


def _schema(data: dict[str, Any], source: str) -> None:
    version = data.get("schema_version")
    if version is None:
        other = data.get("schema")
        what = f"a {excerpt(other)[1:-1]} document" if isinstance(other, str) else "not a doctor check report"
        raise InputError(source, "schema_version", f"missing: {what}; expected a `doctor check --format json` "
                                                   "report")
    m = re.fullmatch(r"(\d+)\.(\d+)", version) if isinstance(version, str) else None
    if not m:
        raise InputError(source, "schema_version", f"is {excerpt(version)}; expected \"1.<minor>\"")
    if int(m.group(1)) != 1:
        newer = int(m.group(1)) > 1
        raise InputError(source, "schema_version", f"is {version!r}; this doctor reads report schema 1.x"
                                                   + ("; upgrade doctor to merge it" if newer else ""))
    if "results" not in data and ("probes" in data or "provenance" in data):
        raise InputError(source, "results", "missing: this is a `doctor facts` snapshot; merge takes the reports "
                                            "of `doctor check --format json` (judge it with `doctor check --facts`)")


def _obj(data: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise InputError(source, key, f"is {excerpt(value)}; expected an object")
    return value


def _name(facts: dict[str, Any], source: str) -> tuple[str, str]:
    """The node's name: the hostname the facts recorded, else (redacted, or none) the file name's stem."""
    for section in ("provenance", "host"):
        host = (facts.get(section) or {}).get("hostname") if isinstance(facts.get(section), dict) else None
        if host is not None and not isinstance(host, str):
            raise InputError(source, f"facts.{section}.hostname", f"is {excerpt(host)}; expected a string")
        if host and host.strip() and host.strip() != REDACTED:
            return host.strip(), f"{section}.hostname"
    return PurePath(source).stem or source, "file name"


def _section(facts: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = facts.get(key)
    return value if isinstance(value, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them (flash_attn == flash-attn == Flash.Attn)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def versions(data: dict[str, Any], facts: dict[str, Any]) -> dict[str, str | None]:
    """The versions compared across nodes; None where the report does not say (a probe failed, a section
    is missing), `not installed` where it says the thing is absent."""
    gpu, torch, python = _section(facts, "gpu"), _section(facts, "torch"), _section(facts, "python")
    dists_raw = (python or {}).get("distributions")
    dists = {canonical(k): v for k, v in dists_raw.items() if isinstance(v, str)} if isinstance(dists_raw, dict) \
        else None
    profiles = data.get("profiles") if isinstance(data.get("profiles"), list) else []
    out: dict[str, str | None] = {
        "nvidia_driver": _text((gpu or {}).get("driver_version")),
        "cuda_driver": _text((gpu or {}).get("cuda_driver_version")),
        "python": _text((python or {}).get("version")),
        "doctor": _text(data.get("doctor_version")),
        "profiles": " + ".join(p for p in profiles if isinstance(p, str)) or None,
    }
    if torch is not None and torch.get("installed") is False:
        out["torch"] = out["torch_cuda"] = NOT_INSTALLED
    elif torch is not None:
        out["torch"] = _text(torch.get("version"))
        cuda, hip = _text(torch.get("cuda_build")), _text(torch.get("hip_build"))
        known = "cuda_build" in torch or "hip_build" in torch
        out["torch_cuda"] = cuda or (f"ROCm {hip}" if hip else "CPU only" if known else None)
    else:
        out["torch"] = dists.get("torch", NOT_INSTALLED) if dists is not None else None
        out["torch_cuda"] = None
    for pkg in PACKAGES:
        out[pkg] = dists.get(pkg, NOT_INSTALLED) if dists is not None else None
    devices = (gpu or {}).get("devices")
    if gpu is None or not isinstance(devices, list):
        out["gpu_model"] = out["gpu_count"] = None
    else:
        models = sorted({str(d.get("name")) if isinstance(d, dict) else "?" for d in devices})
        out["gpu_count"] = str(len(devices))
        out["gpu_model"] = " + ".join(models) if models else "none"   # how many: gpu_count
    return out


def _gpus(facts: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """Each GPU as NVML identifies it: UUID and PCI bus id (the NVML index is not the CUDA ordinal)."""
    devices = (_section(facts, "gpu") or {}).get("devices")
    if not isinstance(devices, list):
        return ()
    keys = ("nvml_index", "uuid", "pci_bus_id", "name")
    return tuple({k: d.get(k) for k in keys if isinstance(d.get(k), (str, int)) and not isinstance(d.get(k), bool)}
                 for d in devices if isinstance(d, dict))
