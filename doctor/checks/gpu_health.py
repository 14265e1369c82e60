"""GPU health from NVML and the kernel log: memory errors, clock-event reasons, PCIe width, NVLink,
fabric manager, Xid events, persistence mode, memory held by other processes."""
from __future__ import annotations

from typing import Any, Callable

from doctor.model import Remediation, Result, failed, passed, skipped, warned
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
    if not devs:
        return [], skipped("no NVIDIA GPU; see gpu.present")
    if all(d.get("health") is None for d in devs):
        return [], skipped("the snapshot has no GPU health facts (recorded by an older doctor)")
    return [d for d in devs if d.get("health") is not None], None


def _per_device(facts: dict[str, Any], judge: Callable[[dict[str, Any], dict[str, Any]], tuple[str, str] | None],
                unsupported: Callable[[dict[str, Any]], bool], what: str, ok: str,
                remedy: Callable[[list[dict[str, Any]]], Remediation]) -> Result:
    """Run `judge(device, health) -> (level, message) | None` on each GPU and fold the verdicts."""
    devs, skip = _health(facts)
    if skip:
        return skip
    judged = [d for d in devs if not unsupported(d["health"])]
    if not judged:
        return skipped(f"{what} is not reported by these GPUs")
    findings = [(d, *v) for d in judged if (v := judge(d, d["health"]))]
    if not findings:
        return passed(f"{ok} on {len(judged)} GPU(s)")
    level = "fail" if any(f[1] == "fail" for f in findings) else "warn"
    summary = "; ".join(f"{ident(d)}: {msg}" for d, _, msg in findings)
    return (failed if level == "fail" else warned)(summary, remedy([f[0] for f in findings]))


def _reset(devs: list[dict[str, Any]], text: str, url: str = MEM_ERRORS_URL) -> Remediation:
    return Remediation(text, tuple(RESET.format(i=d.get("nvml_index")) for d in devs), url)


@check("gpu.ecc", needs=("gpu",))
def gpu_ecc(facts: dict[str, Any]) -> Result:
    """No uncorrected ECC errors since the last reset (volatile); lifetime (aggregate) errors are a warning.

    Why: an uncorrected error corrupts a tensor or kills the process (Xid 48/94/95); a GPU that logged
    one since boot is likely to do it again mid-run.
    Fix: drain the GPU, reset it, and check row remapping (gpu.memory_remap); RMA if errors recur.
    """
    def judge(dev: dict[str, Any], h: dict[str, Any]) -> tuple[str, str] | None:
        ecc = h["ecc"]
        if not ecc.get("enabled"):
            return "warn", "ECC is disabled (memory errors go undetected)"
        if ecc.get("volatile_uncorrected"):
            return "fail", f"{ecc['volatile_uncorrected']} uncorrected ECC errors since the last reset"
        if ecc.get("aggregate_uncorrected"):
            return "warn", f"{ecc['aggregate_uncorrected']} uncorrected ECC errors in its lifetime"
        return None

    return _per_device(facts, judge, lambda h: h.get("ecc") is None, "ECC", "no uncorrected ECC errors",
                       lambda devs: _reset(devs, "Stop jobs on the GPU and reset it; if uncorrected errors come "
                                                 "back, have the GPU replaced."))


@check("gpu.memory_remap", needs=("gpu",))
def gpu_memory_remap(facts: dict[str, Any]) -> Result:
    """No pending page retirement or row remap, and no remapping failure.

    Why: a pending remap (A100/H100) or retirement (V100) takes effect only after a GPU reset; until
    then the bad memory is still in use. A remapping failure means the GPU ran out of spare rows.
    Fix: reset the GPU (or reboot) to apply pending remaps; a failure needs an RMA.
    """
    def judge(dev: dict[str, Any], h: dict[str, Any]) -> tuple[str, str] | None:
        rr = h.get("row_remap") or {}
        if rr.get("failure"):
            return "fail", "row remapping FAILED (no spare rows left): the GPU needs replacing"
        if rr.get("pending"):
            return "fail", f"row remap pending ({rr.get('uncorrected_rows')} rows for uncorrected errors)"
        if h.get("retired_pages_pending"):
            return "fail", "page retirement pending"
        return None

    return _per_device(facts, judge, lambda h: h.get("row_remap") is None and h.get("retired_pages_pending") is None,
                       "row remapping / page retirement", "no pending remap or retirement",
                       lambda devs: _reset(devs, "Reset the GPU (or reboot) so the pending remap takes effect; a "
                                                 "remapping failure needs an RMA."))


@check("gpu.clocks", needs=("gpu",))
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

    return _per_device(facts, judge, lambda h: h.get("clocks_event_reasons") is None, "clock-event reasons",
                       "no hardware or thermal slowdown",
                       lambda devs: Remediation("The GPU is being slowed by hardware protection: check its cooling "
                                                "and power delivery, and report the node to the provider.",
                                                ("nvidia-smi -q -d PERFORMANCE,TEMPERATURE,POWER",)))


@check("gpu.pcie", needs=("gpu",))
def gpu_pcie(facts: dict[str, Any]) -> Result:
    """Each GPU's PCIe link runs at its full width. The generation is not judged: an idle GPU drops its
    link generation by design and raises it under load.

    Why: a card trained down to x8 or x4 (a loose riser, a bad slot) halves host-to-device bandwidth:
    data loading and ZeRO offload crawl.
    Fix: reseat the card or riser, or report the node.
    """
    def judge(dev: dict[str, Any], h: dict[str, Any]) -> tuple[str, str] | None:
        p = h["pcie"]
        if p.get("width_current") and p.get("width_max") and p["width_current"] < p["width_max"]:
            return "warn", f"PCIe link x{p['width_current']} of x{p['width_max']}"
        return None

    return _per_device(facts, judge, lambda h: not (h.get("pcie") or {}).get("width_max"), "PCIe link width",
                       "full PCIe link width (generation not judged at idle)",
                       lambda devs: Remediation("The link trained below its width: reseat the GPU/riser or "
                                                "report the node.", ("nvidia-smi -q -d PCIE",)))


@check("gpu.nvlink", needs=("gpu",))
def gpu_nvlink(facts: dict[str, Any]) -> Result:
    """Every NVLink link of each GPU is up (a GPU with some links down is a fault; with none up, a
    PCIe card without a bridge, which is a warning).

    Why: with a link down NCCL silently routes through PCIe or fails to set up P2P; all-reduce runs
    many times slower.
    Fix: reset the GPUs / reboot; if the link stays down, report the node (Xid 74 in the kernel log).
    """
    def judge(dev: dict[str, Any], h: dict[str, Any]) -> tuple[str, str] | None:
        links = h["nvlink"]
        down = [str(x["link"]) for x in links if not x["active"]]
        if down and len(down) < len(links):
            return "fail", f"NVLink link(s) {', '.join(down)} down of {len(links)}"
        if down:
            return "warn", f"none of its {len(links)} NVLink links is up (no bridge, or all down)"
        return None

    return _per_device(facts, judge, lambda h: not h.get("nvlink"), "NVLink", "all NVLink links up",
                       lambda devs: _reset(devs, "Reset the GPUs or reboot; a link that stays down is a hardware "
                                                 "fault to report.", XID_URL))


FABRIC_STATES = {0: "not supported", 1: "not started", 2: "in progress", 3: "completed"}


@check("gpu.fabric", needs=("gpu",))
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

    return _per_device(facts, judge, lambda h: (h.get("fabric") or {}).get("state") in (None, 0),
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


@check("gpu.xid", needs=("gpu", "kernel"))
def gpu_xid(facts: dict[str, Any]) -> Result:
    """No Xid events in the kernel log that mark a hardware fault (double-bit ECC, fallen off the bus,
    NVLink error, GSP errors); application-level Xids (13, 31, 43) are reported as warnings.

    Why: a GPU that logged Xid 79 or 48 since boot tends to fail the next long job too.
    Fix: drain and reset the GPU; repeated hardware Xids need an RMA. Reading the log may need root.
    """
    kernel = facts["kernel"]
    if not kernel.get("readable"):
        return skipped(f"the kernel log is not readable here ({kernel.get('reason')}); run as root to include Xids")
    events = kernel.get("xid_events") or []
    if not events:
        return passed(f"no Xid events in {kernel.get('source')}")
    table = load("xid")
    by_bus = {_bus(d.get("pci_bus_id")): d for d in devices(facts["gpu"])}
    worst, lines = "warn", []
    for code in sorted({e["code"] for e in events}):
        row = table["codes"].get(code, table["unknown"])
        hits = [e for e in events if e["code"] == code]
        where = sorted({ident(by_bus[_bus(e["pci"])]) if _bus(e["pci"]) in by_bus else f"PCI {e['pci']}"
                        for e in hits})
        lines.append(f"Xid {code} ×{len(hits)} on {', '.join(where)}: {row['text']} [{row['severity']}]")
        if row["severity"] == "fail":
            worst = "fail"
    remedy = Remediation("Drain the GPU and reset it; if hardware Xids recur after the reset, report it for "
                         "replacement.", ("dmesg -T | grep -i xid",), XID_URL)
    return (failed if worst == "fail" else warned)("; ".join(lines), remedy, f"source: {kernel.get('source')}")


@check("gpu.persistence", needs=("gpu",))
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


@check("gpu.processes", needs=("gpu",))
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
