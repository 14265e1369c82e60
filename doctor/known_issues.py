"""Evaluate the known-incompatibility rows of data/known_issues.yaml against facts and a job. Pure."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .refdata import load


@dataclass(frozen=True)
class Hit:
    """A row that applies, with the verdict it gives here and the versions it was judged on."""

    row: dict[str, Any]
    verdict: str
    versions: dict[str, str]

    def summary(self) -> str:
        return self.row["summary"].format(**self.versions)


def floor(spec: str | None) -> Version | None:
    """The lowest version a requirement specifier admits at its bound (>=, >, ==, ~=), if any."""
    try:
        specs = SpecifierSet(spec or "")
    except InvalidSpecifier:
        return None
    bounds = []
    for s in specs:
        if s.operator in (">=", ">", "==", "~=", "==="):
            try:
                bounds.append(Version(s.version.rstrip(".*")))
            except InvalidVersion:
                continue
    return max(bounds) if bounds else None


def forced(job_spec: str, spec: str) -> tuple[bool, Version | None]:
    """Does every version the job's specifier admits fall in `spec`? pip installs the newest admitted
    version, so a not-yet-installed package is judged on the whole range, not on its floor."""
    low = floor(job_spec)
    if spec.strip() in ("*", ""):
        return True, low
    try:
        row = SpecifierSet(spec)
        job = SpecifierSet(job_spec or "")
    except InvalidSpecifier:
        return False, low
    pins = [Version(s.version) for s in job if s.operator in ("==", "===") and "*" not in s.version]
    if pins:
        return pins[0] in row, pins[0]
    if low is None or all(s.operator in (">=", ">") for s in row):
        return low is not None and low in row, low
    return False, low


def _matches(version: str | Version | None, spec: str) -> bool:
    if version is None:
        return False
    if spec.strip() in ("*", ""):
        return True
    try:
        return Version(str(version)) in SpecifierSet(spec, prereleases=True)
    except (InvalidVersion, InvalidSpecifier):
        return False


def _cc_below(ccs: list[str], limit: str) -> bool:
    def key(cc: str) -> tuple[int, ...]:
        return tuple(int(x) for x in cc.split("."))

    return any(key(cc) < key(limit) for cc in ccs)


def _job_holds(conditions: dict[str, Any], workload: dict[str, Any], required: dict[str, str]) -> bool:
    for key, allowed in conditions.items():
        if key == "needs":
            for pkg, version in allowed.items():
                low = floor(required.get(canonicalize_name(pkg)))
                if low is None or low < Version(str(version)):
                    return False
        elif workload.get(key) not in allowed:
            return False
    return True


def evaluate(installed: dict[str, str], required: dict[str, str], ccs: list[str], torch_cuda: str | None,
             platform: str | None, workload: dict[str, Any]) -> list[Hit]:
    """Rows that apply. `installed` and `required` are keyed by canonical distribution name."""
    hits = []
    for row in load("known_issues")["rows"]:
        versions: dict[str, str] = {}
        applies = True
        for pkg, spec in (row.get("packages") or {}).items():
            name = canonicalize_name(pkg)
            version: str | Version | None = installed.get(name)
            if version is None and name in required:  # not installed yet: judge what the job will install
                ok, _ = forced(required[name], spec)
                versions[pkg] = f"{required[name] or 'any version'} (required by the job)"
                applies = applies and ok
            else:
                versions[pkg] = str(version)
                applies = applies and _matches(version, spec)
        if "cc_below" in row:
            applies = applies and _cc_below(ccs, row["cc_below"])
        if "torch_cuda" in row:
            applies = applies and torch_cuda is not None and _matches(torch_cuda, row["torch_cuda"])
            versions["torch_cuda"] = str(torch_cuda)
        if "platform_not" in row:
            applies = applies and platform is not None and platform not in row["platform_not"]
        if "job" in row:
            applies = applies and _job_holds(row["job"], workload, required)
        if not applies:
            continue
        verdict = row["verdict"]
        if verdict == "warn" and "fail_when_job" in row and _job_holds(row["fail_when_job"], workload, required):
            verdict = "fail"
        hits.append(Hit(row, verdict, versions))
    return hits
