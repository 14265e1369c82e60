"""`doctor baseline capture`: a known-good node's `doctor check --format json` report -> a machine profile the
rest of the fleet is checked against (GPU model and count, driver minimum, package versions, bench floors).

Pure: report in, YAML text out. Every value written names the fact it came from; a fact the report lacks is
left out with the reason, never filled in."""
from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from .. import __version__, refdata
from ..errors import InputError
from ..loading import excerpt
from .node import PACKAGES, read

VERSION_MODES = ("exact", "minimum", "none")
# bench.baseline's figures: key -> (what it is, its unit). read by doctor.checks.baseline
FIGURES = {"matmul_fp16_tflops": ("fp16 matmul", "TFLOPS"), "matmul_bf16_tflops": ("bf16 matmul", "TFLOPS"),
           "bandwidth_gbps": ("memory bandwidth", "GB/s"), "hvp_per_s": ("HVP rate", "HVP/s")}


def driver_tuple(text: Any) -> tuple[int, ...] | None:
    """'570.124.06' -> (570, 124, 6); None for anything that is not dotted digits."""
    if not isinstance(text, str) or not re.fullmatch(r"\d{1,6}(\.\d{1,6}){0,3}", text.strip()):
        return None
    return tuple(int(p) for p in text.strip().split("."))


def figure(dev: dict[str, Any], key: str) -> float | None:
    """A benchmarked device's figure for `key` (FIGURES), or None where it was not measured."""
    def num(value: Any) -> float | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        return float(value) if ok else None

    if key.startswith("matmul_"):
        fig = _dict(dev.get("matmul")).get(key.split("_")[1])
        return num(fig.get("tflops")) if isinstance(fig, dict) and "error" not in fig else None
    if key == "bandwidth_gbps":
        bw = dev.get("bandwidth")
        return num(bw.get("gbps")) if isinstance(bw, dict) and bw.get("verified") else None
    tr = _dict(dev.get("hvp")).get("transformer")
    if not isinstance(tr, dict):
        return None
    rates = [num((tr.get(m) or {}).get("per_s")) for m in ("double_backward", "forward_over_reverse")
             if isinstance(tr.get(m), dict)]
    rates = [r for r in rates if r is not None]
    return max(rates) if rates else None


def gpu_devices(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """The benchmarked GPUs that finished (the CPU path's figures say nothing about a GPU)."""
    return [d for d in bench.get("devices") or [] if isinstance(d, dict) and d.get("key") != "cpu"
            and d.get("status") == "ok"]


def medians(bench: dict[str, Any]) -> dict[str, tuple[float, int]]:
    """FIGURES key -> (median over the finished GPUs, how many GPUs had it)."""
    out = {}
    for key in FIGURES:
        values = [v for v in (figure(d, key) for d in gpu_devices(bench)) if v is not None]
        if values:
            out[key] = (statistics.median(values), len(values))
    return out


@dataclass
class Baseline:
    text: str                                         # the profile, YAML with provenance comments
    kept: list[str] = field(default_factory=list)     # one line per value written
    omitted: list[str] = field(default_factory=list)  # one line per value left out, with why


def parse_tolerance(text: str) -> float:
    """'10%' or '10' -> 10.0 (percent, from 0 up to but not including 100); else InputError naming --tolerance."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%?\s*", text or "")
    value = float(m.group(1)) if m else -1.0
    if not 0 <= value < 100:
        raise InputError("--tolerance", None, f"is {text!r}; expected a percentage from 0 up to 100, such as 10%")
    return value


def _printable(text: str) -> str:
    """`text` without the characters YAML refuses in a file (control characters, DEL, C1, surrogates)."""
    return "".join(c if c.isprintable() else " " for c in text)


def _q(value: Any) -> str:
    """A YAML scalar: JSON's quoting is valid YAML (flow style)."""
    return json.dumps(_printable(value) if isinstance(value, str) else value, ensure_ascii=False)


def _comment(text: str) -> str:
    return " ".join(_printable(str(text)).split())


def _line(yaml: str, why: str) -> str:
    """A YAML line with its provenance comment in one column."""
    return f"{yaml:<38} # {_comment(why)}"


def _floor(value: float) -> float:
    """`value` rounded down to 4 significant digits (a floor never above the exact product)."""
    from decimal import ROUND_FLOOR, Decimal

    d = Decimal(repr(value))
    exp = d.adjusted() - 3
    return float(d.scaleb(-exp).to_integral_value(ROUND_FLOOR).scaleb(exp))


def _specifier(version: str, mode: str) -> str | None:
    """'==2.9.0+cu128' (exact) or '>=2.9.0' (minimum: a local label is not allowed there); None when packaging
    refuses it."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    spec = f"=={version}" if mode == "exact" else ">=" + version.split("+")[0]
    try:
        SpecifierSet(spec)
    except InvalidSpecifier:
        return None
    return spec


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def build(report: Any, source: str, *, tolerance_pct: float = 10.0, name: str | None = None,
          versions: str = "exact", captured: str = "") -> Baseline:
    """The profile for the node of `report` (a parsed report from `source`). Raises InputError for what is not a
    report, or a report whose node is not ready (a baseline comes from a known-good node)."""
    if isinstance(report, dict) and "results" not in report and "probes" in report:
        raise InputError(source, "results", "missing: this is a `doctor facts` snapshot; expected a `doctor check "
                                            "--format json` report (it carries the verdict and the bench figures)")
    node = read(report, source)
    if node.exit_code == 1:
        first = node.findings[0] if node.findings else None
        why = f"; first: {first.check_id}: {first.summary}" if first else ""
        raise InputError(source, "verdict.exit_code", f"the node is not ready (exit 1{why})"[:400]
                         + "; a baseline is captured on a known-good node")
    facts = report["facts"]
    gpu, bench = _dict(facts.get("gpu")), facts.get("bench")
    for key, section in (("gpu", gpu), ("bench", bench)):
        listed = section.get("devices") if isinstance(section, dict) else None
        if listed is not None and not isinstance(listed, list):
            raise InputError(source, f"facts.{key}.devices", f"is {excerpt(listed)}; expected a list of devices")
    out = Baseline("")
    host = node.name if node.name_from != "file name" else f"{node.name} (file name; the report is redacted)"
    title = name or node.name
    machine: list[str] = []
    devices = [d for d in gpu.get("devices") or [] if isinstance(d, dict)]
    if devices:
        names = sorted({str(d.get("name")) for d in devices if isinstance(d.get("name"), str)})
        machine += ["  gpu:", _line("    required: true", "facts.gpu.devices lists NVML devices"),
                    _line(f"    count: {len(devices)}", f"facts.gpu.devices: {len(devices)} GPU(s) on {node.name}")]
        out.kept.append(f"machine.gpu.count: {len(devices)} (facts.gpu.devices)")
        rows = [refdata.gpu_spec(n) for n in names]
        if names and all(rows):
            models = sorted({r["name"] for r in rows if r})
            machine.append(_line(f"    models: [{', '.join(_q(m) for m in models)}]",
                                 f"facts.gpu.devices[*].name {', '.join(names)} (rows of doctor's GPU table)"))
            out.kept.append(f"machine.gpu.models: {', '.join(models)} (facts.gpu.devices[*].name)")
        else:
            unlisted = [n for n, r in zip(names, rows) if not r] or ["a GPU without a name"]
            out.omitted.append(f"machine.gpu.models: {', '.join(unlisted)} is not in doctor's GPU table "
                               "(`doctor gpus`), so gpu.model cannot name it")
        if names:
            machine.append(_line(f"    name: {_q(' + '.join(names))}", "the label gpu.model prints"))
    else:
        why = gpu.get("reason") or ("the report has no gpu section" if not gpu else "NVML listed no device")
        out.omitted.append(f"machine.gpu (count, models) and driver.minimum: no GPU in the report ({_comment(why)})")
        if gpu.get("available") is False:   # NVML said so: the fleet's nodes need none either
            machine += ["  gpu:", _line("    required: false", f"facts.gpu.available is false: {why}")]
            out.kept.append("machine.gpu.required: false (facts.gpu.available)")
    checks: list[str] = []
    driver = gpu.get("driver_version") if devices else None
    if isinstance(driver, str) and re.fullmatch(r"\d{1,6}(\.\d{1,6}){0,3}", driver):
        checks += ["  - id: driver.minimum", _line(f"    params: {{minimum: {_q(driver)}}}", "facts.gpu.driver_version")]
        out.kept.append(f"driver.minimum: {driver} (facts.gpu.driver_version)")
    elif devices:
        out.omitted.append(f"driver.minimum: the report records no driver version ({driver!r})")
    software = _software(facts, versions, out)
    checks += _bench(bench, tolerance_pct, out)
    head = [f"# Site baseline {_comment(title)}, written by `doctor baseline capture` (doctor {__version__})"
            + (f" at {captured}" if captured else "") + ".",
            (f"# Source: {_comment(source)}; host {_comment(host)}; report created "
             f"{_comment(node.created or '?')} by doctor "
             f"{_comment(report.get('doctor_version') or '?')}; profiles judged: "
             f"{_comment(', '.join(node.profiles) or '?')}; verdict exit {node.exit_code}."),
            "# Each value below names the fact of that report it came from. Bench floors: the median over the",
            f"# node's GPUs x (1 - {tolerance_pct:g}%).",
            *[f"# Left out: {_comment(line)}" for line in out.omitted],
            "# Check a node against it: doctor check --profile <this file>"]
    gpus = f"{len(devices)}x {' + '.join(sorted({str(d.get('name')) for d in devices}))}" if devices else "no GPU"
    desc = f"Site baseline {title}: {node.name} ({gpus}" + (f", driver {driver}" if driver else "") + ")"
    body = ["kind: machine", f"description: {_q(_comment(desc))}", "extends: [base]"]
    body += ["machine:", *machine] if machine else []
    body += software
    body += ["checks:", *checks] if checks else []
    out.text = "\n".join(head + body) + "\n"
    return out


def _software(facts: dict[str, Any], mode: str, out: Baseline) -> list[str]:
    """job.software: Python and the key packages, each pinned (exact) or floored (minimum) at the node's."""
    if mode == "none":
        out.omitted.append("job.software: --versions none")
        return []
    python, torch = _dict(facts.get("python")), _dict(facts.get("torch"))
    dists = _dict(python.get("distributions"))
    lines: list[str] = []
    version = python.get("version")
    spec = _specifier(version, mode) if isinstance(version, str) else None
    if spec:
        lines.append(_line(f"    python: {_q(spec)}", "facts.python.version"))
        out.kept.append(f"job.software.python: {spec} (facts.python.version)")
    else:
        out.omitted.append(f"job.software.python: the report records no Python version ({version!r})")
    packages: list[str] = []
    wanted = {"torch": torch.get("version") if isinstance(torch.get("version"), str) else dists.get("torch")}
    canon = {re.sub(r"[-_.]+", "-", k).lower(): k for k in dists}
    for pkg in PACKAGES:
        key = canon.get(pkg)
        if key is not None:
            wanted[key] = dists[key]
    for pkg, ver in wanted.items():
        where = "facts.torch.version" if pkg == "torch" and isinstance(torch.get("version"), str) else \
            f"facts.python.distributions.{pkg}"
        spec = _specifier(ver, mode) if isinstance(ver, str) else None
        if spec:
            packages.append(_line(f"      {pkg}: {_q(spec)}", where))
            out.kept.append(f"job.software.packages.{pkg}: {spec} ({where})")
        elif pkg == "torch" and not dists:
            out.omitted.append("job.software.packages: the report has no package listing (facts.python)")
        elif isinstance(ver, str):
            out.omitted.append(f"job.software.packages.{pkg}: {ver!r} is not a PEP 440 version")
    if not lines and not packages:
        return []
    return ["job:", "  software:", *lines, *(["    packages:", *packages] if packages else [])]


def _bench(bench: Any, tolerance_pct: float, out: Baseline) -> list[str]:
    """The bench.baseline entry: each figure's median over the node's GPUs x (1 - tolerance)."""
    if not isinstance(bench, dict):
        out.omitted.append("bench.baseline: the report has no bench section (run doctor check without --no-bench "
                           "on a GPU node)")
        return []
    if bench.get("status") == "skipped":
        out.omitted.append(f"bench.baseline: the bench phase was skipped ({_comment(bench.get('reason'))})")
        return []
    found = medians(bench)
    if not found:
        out.omitted.append("bench.baseline: no GPU of the bench section finished with a figure")
        return []
    lines = ["  - id: bench.baseline", "    params:", "      figures:"]
    for key, (median, n) in found.items():
        what, unit = FIGURES[key]
        floor = _floor(median * (1 - tolerance_pct / 100))
        lines.append(_line(f"        {key}: {floor:g}", f"{what}: median {median:.6g} {unit} of {n} GPU(s) "
                                                        f"(facts.bench.devices) x (1 - {tolerance_pct:g}%)"))
        out.kept.append(f"bench.baseline.{key}: {floor:g} {unit} (median {median:.6g} of {n} GPU(s) - "
                        f"{tolerance_pct:g}%)")
    return lines
