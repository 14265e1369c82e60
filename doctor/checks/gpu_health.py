"""GPU health from NVML and the kernel log: memory errors, clock-event reasons, PCIe width, NVLink,
fabric manager, Xid events, persistence mode, memory held by other processes."""
from __future__ import annotations

import re
from typing import Any, Callable

from doctor.model import Remediation, Result, errored, failed, passed, skipped, warned
from doctor.refdata import load
from doctor.registry import check

from .common import devices, ident

MEM_ERRORS_URL = "https://docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt/index.html"
XID_URL = "https://docs.nvidia.com/deploy/xid-errors/index.html"
RESET = "nvidia-smi --gpu-reset -i {i}  # as root, with no process on the GPU; or reboot the node"
# nvml.h clocks-event reason bits that mean the GPU is being held back by hardware or heat.
CLOCK_FAIL = {0x8: "HW slowdown", 0x40: "HW thermal slowdown", 0x80: "HW power brake slowdown"}
CLOCK_WARN = {0x20: "SW thermal slowdown"}
CLOCK_IGNORED = {0x1: "GPU idle", 0x2: "applications clocks setting", 0x4: "SW power cap", 0x10: "sync boost",
                 0x100: "display clock setting"}


def _health(facts: dict[str, Any]) -> tuple[list[dict[str, Any]], Result | None]:
    devs = devices(facts["gpu"])
    runtime = (facts.get("torch") or {}).get("runtime") or {}
    if not devs and runtime.get("is_available") and runtime.get("device_count"):
        return [], errored("could not decide: NVML is unavailable, so GPU health is not readable, although CUDA "
                           f"sees {runtime['device_count']} GPU(s); see gpu.present")
    if not devs:   # the registry skipped the machines known to have none (needs_gpu)
        return [], errored("could not decide: NVML lists no GPU; see gpu.present")
    return devs, None


def _per_device(facts: dict[str, Any], judge: Callable[[dict[str, Any], dict[str, Any]], tuple[str, str] | None],
                unsupported: Callable[[dict[str, Any]], bool], what: str, ok: str,
                remedy: Callable[[list[dict[str, Any]]], Remediation]) -> Result:
    """Run `judge(device, health) -> (level, message) | None` on each GPU and fold the verdicts. A level of
    "unknown" (a field the snapshot lacks) makes the check undecided unless another GPU already fails it;
    `unsupported(health)` is a field NVML reported as not supported by the GPU."""
    devs, skip = _health(facts)
    if skip:
        return skip
    findings, unknown, judged = [], [], 0
    for d in devs:
        h = d.get("health")
        if not isinstance(h, dict):
            unknown.append((d, "no health facts for this GPU"))
            continue
        try:
            if unsupported(h):
                continue
            verdict = judge(d, h)
        except (KeyError, TypeError):   # a field the snapshot lacks
            verdict = ("unknown", f"the snapshot lacks {what} facts")
        judged += 1
        if verdict and verdict[0] == "unknown":
            unknown.append((d, verdict[1]))
        elif verdict:
            findings.append((d, *verdict))
    if any(f[1] == "fail" for f in findings):
        summary = "; ".join(f"{ident(d)}: {msg}" for d, _, msg in findings)
        return failed(summary, remedy([f[0] for f in findings]))
    if unknown:
        return errored(f"could not decide {what}: " + "; ".join(f"{ident(d)}: {why}" for d, why in unknown))
    if not judged:
        return skipped(f"{what} is not reported by these GPUs")
    if not findings:
        return passed(f"{ok} on {judged} GPU(s)")
    summary = "; ".join(f"{ident(d)}: {msg}" for d, _, msg in findings)
    return warned(summary, remedy([f[0] for f in findings]))


def _reset(devs: list[dict[str, Any]], text: str, url: str = MEM_ERRORS_URL) -> Remediation:
    return Remediation(text, tuple(RESET.format(i=d.get("nvml_index")) for d in devs), url)


@check("gpu.ecc", needs_gpu=True)
def gpu_ecc(facts: dict[str, Any]) -> Result:
    """No uncorrected ECC errors since the last reset (volatile); lifetime (aggregate) errors are a warning.

    Why: an uncorrected error corrupts a tensor or kills the process (Xid 48/94/95); a GPU that logged
    one since boot is likely to do it again mid-run.
    Fix: drain the GPU, reset it, and check row remapping (gpu.memory_remap); RMA if errors recur.
    """
    def judge(dev: dict[str, Any], h: dict[str, Any]) -> tuple[str, str] | None:
        ecc = h["ecc"]
        if ecc.get("enabled") is None:
            return "unknown", "whether ECC is enabled is unknown"
        if not ecc["enabled"]:
            return "warn", "ECC is disabled (memory errors go undetected)"
        if ecc.get("volatile_uncorrected"):
            return "fail", f"{ecc['volatile_uncorrected']} uncorrected ECC errors since the last reset"
        if ecc.get("volatile_uncorrected") is None:
            return "unknown", "the uncorrected-error counter since the last reset was not read"
        if "aggregate_uncorrected" not in ecc:
            return "unknown", "the lifetime uncorrected-error counter was not read"
        if ecc["aggregate_uncorrected"]:     # None: NVML reports no lifetime counter for this GPU
            return "warn", f"{ecc['aggregate_uncorrected']} uncorrected ECC errors in its lifetime"
        return None

    return _per_device(facts, judge, lambda h: "ecc" in h and h["ecc"] is None, "ECC", "no uncorrected ECC errors",
                       lambda devs: _reset(devs, "Stop jobs on the GPU and reset it; if uncorrected errors come "
                                                 "back, have the GPU replaced."))


@check("gpu.memory_remap", needs_gpu=True)
def gpu_memory_remap(facts: dict[str, Any]) -> Result:
    """No pending page retirement or row remap, and no remapping failure.

    Why: a pending remap (A100/H100) or retirement (V100) takes effect only after a GPU reset; until
    then the bad memory is still in use. A remapping failure means the GPU ran out of spare rows.
    Fix: reset the GPU (or reboot) to apply pending remaps; a failure needs an RMA.
    """
    def judge(dev: dict[str, Any], h: dict[str, Any]) -> tuple[str, str] | None:
        rr = h.get("row_remap")
        if isinstance(rr, dict):   # Ampere and later remap rows (and do not retire pages)
            if rr.get("failure"):
                return "fail", "row remapping FAILED (no spare rows left): the GPU needs replacing"
            if rr.get("pending"):
                return "fail", f"row remap pending ({rr.get('uncorrected_rows')} rows for uncorrected errors)"
            if rr.get("failure") is None or rr.get("pending") is None:
                return "unknown", "the row-remap state was not read completely"
            return None
        if "retired_pages_pending" not in h or "row_remap" not in h:
            return "unknown", "the snapshot lacks the row-remap or page-retirement state"
        if h["retired_pages_pending"]:
            return "fail", "page retirement pending"
        return None

    return _per_device(facts, judge, lambda h: "row_remap" in h and h["row_remap"] is None
                       and "retired_pages_pending" in h and h["retired_pages_pending"] is None,
                       "row remapping / page retirement", "no pending remap or retirement",
                       lambda devs: _reset(devs, "Reset the GPU (or reboot) so the pending remap takes effect; a "
                                                 "remapping failure needs an RMA."))


@check("gpu.clocks", needs_gpu=True)
def gpu_clocks(facts: dict[str, Any]) -> Result:
    """No clock-event reason that means hardware slowdown, thermal or power-brake throttling. Idle, power
    cap and application-clock reasons are ignored: an idle GPU lowers its clocks by design.

    Why: a GPU held at low clocks by an overheating board or a power brake trains several times slower
    for the whole run, with no error anywhere.
    Fix: check cooling and power (nvidia-smi -q -d PERFORMANCE,TEMPERATURE); report the node.
    """
    def judge(dev: dict[str, Any], h: dict[str, Any]) -> tuple[str, str] | None:
        bits = h["clocks_event_reasons"]
        bad = [name for bit, name in CLOCK_FAIL.items() if bits & bit]
        if bad:
            return "fail", ", ".join(bad)
        soft = [name for bit, name in CLOCK_WARN.items() if bits & bit]
        return ("warn", ", ".join(soft)) if soft else None

    return _per_device(facts, judge, lambda h: "clocks_event_reasons" in h and h["clocks_event_reasons"] is None,
                       "clock-event reasons",
                       "no hardware or thermal slowdown",
                       lambda devs: Remediation("The GPU is being slowed by hardware protection: check its cooling "
                                                "and power delivery, and report the node to the provider.",
                                                ("nvidia-smi -q -d PERFORMANCE,TEMPERATURE,POWER",)))


@check("gpu.pcie", needs_gpu=True)
def gpu_pcie(facts: dict[str, Any]) -> Result:
    """Each GPU's PCIe link runs at its full width. The generation is not judged: an idle GPU drops its
    link generation by design and raises it under load.

    Why: a card trained down to x8 or x4 (a loose riser, a bad slot) halves host-to-device bandwidth:
    data loading and ZeRO offload crawl.
    Fix: reseat the card or riser, or report the node.
    """
    def judge(dev: dict[str, Any], h: dict[str, Any]) -> tuple[str, str] | None:
        p = h["pcie"]
        if p.get("width_current") is None:
            return "unknown", "the PCIe link width was not read"
        if p["width_current"] < p["width_max"]:
            return "warn", f"PCIe link x{p['width_current']} of x{p['width_max']}"
        return None

    return _per_device(facts, judge, lambda h: "pcie" in h and (h["pcie"] is None or ("width_max" in h["pcie"]
                       and not h["pcie"]["width_max"])), "PCIe link width",
                       "full PCIe link width (generation not judged at idle)",
                       lambda devs: Remediation("The link trained below its width: reseat the GPU/riser or "
                                                "report the node.", ("nvidia-smi -q -d PCIE",)))


@check("gpu.nvlink", needs_gpu=True)
def gpu_nvlink(facts: dict[str, Any]) -> Result:
    """Every NVLink link of each GPU is up (a GPU with some links down is a fault; with none up, a
    PCIe card without a bridge, which is a warning).

    Why: with a link down NCCL silently routes through PCIe or fails to set up P2P; all-reduce runs
    many times slower.
    Fix: reset the GPUs / reboot; if the link stays down, report the node (Xid 74 in the kernel log).
    """
    def judge(dev: dict[str, Any], h: dict[str, Any]) -> tuple[str, str] | None:
        links = h["nvlink"]
        if any(x.get("active") is None for x in links):
            return "unknown", "the state of some NVLink links was not read"
        down = [str(x["link"]) for x in links if not x["active"]]
        if down and len(down) < len(links):
            return "fail", f"NVLink link(s) {', '.join(down)} down of {len(links)}"
        if down:
            return "warn", f"none of its {len(links)} NVLink links is up (no bridge, or all down)"
        return None

    return _per_device(facts, judge, lambda h: "nvlink" in h and not h["nvlink"], "NVLink", "all NVLink links up",
                       lambda devs: _reset(devs, "Reset the GPUs or reboot; a link that stays down is a hardware "
                                                 "fault to report.", XID_URL))


FABRIC_STATES = {0: "not supported", 1: "not started", 2: "in progress", 3: "completed"}


@check("gpu.fabric", needs_gpu=True)
def gpu_fabric(facts: dict[str, Any]) -> Result:
    """On NVSwitch systems, the fabric manager has registered each GPU with the fabric.

    Why: on an HGX board whose nvidia-fabricmanager is stopped or mismatched with the driver, CUDA
    initialisation fails with "system not yet initialized" (cudaErrorSystemNotReady).
    Fix: start nvidia-fabricmanager, at the same version as the driver.
    """
    def judge(dev: dict[str, Any], h: dict[str, Any]) -> tuple[str, str] | None:
        f = h["fabric"]
        if f.get("state") != 3:
            return "fail", f"fabric registration {FABRIC_STATES.get(f.get('state'), f.get('state'))}"
        if f.get("status") not in (0, None):
            return "fail", f"fabric registration completed with NVML status {f.get('status')}"
        return None

    return _per_device(facts, judge, lambda h: "fabric" in h and (h["fabric"] is None or h["fabric"].get("state") == 0),
                       "NVSwitch fabric state", "fabric registration completed",
                       lambda devs: Remediation("Start the fabric manager (same version as the driver).",
                                                ("systemctl start nvidia-fabricmanager",
                                                 "systemctl status nvidia-fabricmanager")))


def _bus(pci: str | None) -> str | None:
    """'00000000:17:00.0' or '17:00' -> '17:00' (bus:device; the kernel log drops domain and function)."""
    if not pci:
        return None
    parts = pci.lower().split(".")[0].split(":")
    return ":".join(parts[-2:])


XID154 = re.compile(r"recovery action changed from .*? to (0x[0-9a-fA-F]+) \(([^)]*)\)", re.I)


def _xid_row(table: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """The catalog row for an event. Xid 154 carries its own verdict in its text (NVIDIA: "recovery action changed
    from 0x0 (None) to 0x2 (Node Reboot Required)"): None is info, any other recovery action fails."""
    row = table["codes"].get(event["code"], table["unknown"])
    if event["code"] == 154:
        m = XID154.search(event.get("text") or "")
        if m:
            sev = "info" if m.group(2).strip().lower() == "none" else "fail"
            return {**row, "severity": sev, "action": f"XID_154: {m.group(2).strip()}"}
    return row


@check("gpu.xid", needs=("gpu", "kernel"))
def gpu_xid(facts: dict[str, Any]) -> Result:
    """No Xid event in the kernel log whose NVIDIA immediate action is a GPU reset, a reboot or a hardware check
    (double-bit ECC, fallen off the bus, NVLink, GSP errors); application-level Xids (NVIDIA: RESTART_APP, e.g. 13,
    31) are warnings; Xids NVIDIA says to IGNORE are listed but pass. Severity comes from NVIDIA's Xid catalog
    (doctor/data/xid.yaml, generated by scripts/refresh/xid.py).

    Why: a GPU that logged Xid 79 or 48 since boot tends to fail the next long job too.
    Fix: NVIDIA's immediate action for each Xid (reset the GPU, restart the machine, restart the application, ...);
    repeated hardware Xids need an RMA. Reading the log may need root.
    """
    kernel = facts["kernel"]
    if not kernel.get("readable"):
        return skipped(f"the kernel log is not readable here ({kernel.get('reason')}); run as root to include Xids")
    events = kernel.get("xid_events") or []
    if not events:
        return passed(f"no Xid events in {kernel.get('source')}")
    table = load("xid")
    url = (table.get("source") or {}).get("url") or XID_URL
    by_bus = {_bus(d.get("pci_bus_id")): d for d in devices(facts["gpu"])}
    rank = {"info": 0, "warn": 1, "fail": 2}
    worst, lines, todo, reset = "info", [], {}, set()
    for code in sorted({e["code"] for e in events}):
        hits = [e for e in events if e["code"] == code]
        rows = [_xid_row(table, e) for e in hits]
        row = max(rows, key=lambda r: rank.get(r["severity"], 1))
        where = sorted({ident(by_bus[_bus(e["pci"])]) if _bus(e["pci"]) in by_bus else f"PCI {e['pci']}"
                        for e in hits})
        action = row.get("action") or "no immediate action in NVIDIA's catalog"
        lines.append(f"Xid {code} ×{len(hits)} on {', '.join(where)}: {row['text']} [{row['severity']}] "
                     f"(NVIDIA immediate action: {action})")
        if rank.get(row["severity"], 1) > rank[worst]:
            worst = row["severity"]
        if row["severity"] != "info":
            bucket = (row.get("action") or "").split(":")[0]
            todo.setdefault(bucket, []).append(code)
            if bucket == "RESET_GPU":
                reset |= {by_bus[_bus(e["pci"])].get("nvml_index") for e in hits if _bus(e["pci"]) in by_bus}
    if worst == "info":
        codes = ", ".join(str(c) for c in sorted({e["code"] for e in events}))
        return passed(f"only Xids that NVIDIA says need no action ({codes})", *lines,
                      f"source: {kernel.get('source')}")
    actions = table.get("actions") or {}
    steps = []
    for bucket, codes in todo.items():
        said = actions.get(bucket) or ("see the Xid's row in NVIDIA's catalog" if bucket else
                                       "NVIDIA's catalog gives no immediate action; read the event text")
        steps.append(f"Xid {', '.join(map(str, codes))}: {bucket or 'no action listed'}: {said}")
    commands = ("dmesg -T | grep -i xid", *(RESET.format(i=i) for i in sorted(x for x in reset if x is not None)))
    remedy = Remediation("NVIDIA's immediate action per Xid (Xid catalog): " + " | ".join(steps)
                         + " If hardware Xids recur after the action, report the GPU for replacement.", commands, url)
    summary = "; ".join(l for l in lines if "] (NVIDIA immediate action" in l and "[info]" not in l)
    return (failed if worst == "fail" else warned)(summary, remedy, *lines, f"source: {kernel.get('source')}")


@check("gpu.persistence", needs_gpu=True)
def gpu_persistence(facts: dict[str, Any]) -> Result:
    """Persistence mode is on (Linux), so the driver stays initialised between processes.

    Why: with it off, each process start re-initialises the GPU (seconds per launch, per rank) and
    GPU state such as ECC counters is torn down between runs.
    Fix: run nvidia-persistenced (preferred) or enable persistence mode as root.
    """
    def judge(dev: dict[str, Any], h: dict[str, Any]) -> tuple[str, str] | None:
        return None if h["persistence_mode"] else ("warn", "persistence mode is off")

    return _per_device(facts, judge, lambda h: h.get("persistence_mode") is None, "persistence mode",
                       "persistence mode on",
                       lambda devs: Remediation("Enable persistence (as root; the provider's images usually do this).",
                                                ("systemctl enable --now nvidia-persistenced", "nvidia-smi -pm 1")))


@check("gpu.processes", needs_gpu=True)
def gpu_processes(facts: dict[str, Any], *, max_used_pct: float = 10.0) -> Result:
    """No other process holds a meaningful share of GPU memory before the job starts.

    Why: a forgotten notebook or a zombie rank holding 20 GB turns a fitting job into an OOM, and
    in a container those processes are invisible to `ps`.
    Fix: stop the processes listed (or, when none is visible, the other container on this GPU).
    """
    def judge(dev: dict[str, Any], h: dict[str, Any]) -> tuple[str, str] | None:
        mem = dev.get("memory") or {}
        total, used = mem.get("total_mib") or 0, mem.get("used_mib") or 0
        procs = h.get("processes") or []
        held = sum(p.get("used_mib") or 0 for p in procs)
        if procs and total and held > total * max_used_pct / 100:
            pids = ", ".join(f"{p['pid']} ({p.get('used_mib')} MiB)" for p in procs[:5])
            return ("fail" if held > total / 2 else "warn"), f"{held} MiB held by processes {pids}"
        if total and used > total * max_used_pct / 100:
            return "warn", (f"{used} of {total} MiB in use by processes not visible here "
                            "(another container?)")
        return None

    return _per_device(facts, judge, lambda h: h.get("processes") is None, "the process list",
                       f"no process holds more than {max_used_pct:g}% of GPU memory",
                       lambda devs: Remediation("Stop the processes holding GPU memory before launching.",
                                                ("nvidia-smi --query-compute-apps=pid,used_memory --format=csv",)))
