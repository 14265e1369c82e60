"""Cross-rank checks of `doctor check --distributed`: pure functions of the `distributed` section rank 0 gathers
(doctor.distributed.driver): every rank arrived in time, every rank's own verdict, the same versions everywhere,
one GPU per rank and no GPU shared, and the all-reduce bus bandwidth against the profile's interconnect.

They are registered like every check (`doctor checks`, `doctor explain distributed.versions`) but judged only in
that mode: the driver builds their registry, and a profile's check list does not name them."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from doctor import refdata
from doctor.fleet.node import VERSION_KEYS, versions
from doctor.model import NO_GPU, NOT_ASKED, Remediation, Result, errored, failed, passed, skipped, warned
from doctor.registry import check

CHECKS = ("distributed.barrier", "distributed.ranks", "distributed.versions", "distributed.gpu_visible",
          "distributed.gpu_unique", "distributed.allreduce")
# versions that must agree on every rank; GPU count differs legitimately between hosts (gpu.count judges it)
COMPARED = tuple((k, label) for k, label in VERSION_KEYS if k not in ("gpu_count", "doctor", "profiles"))


def _ranks(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in d.get("ranks") or [] if isinstance(r, dict)]


def _who(entry: dict[str, Any]) -> str:
    host = entry.get("hostname")
    return f"rank {entry.get('rank')}" + (f" ({host})" if host else "")


def _rank_list(numbers: list[int]) -> str:
    """'rank 3' / 'ranks 1, 4-6'."""
    nums = sorted(set(numbers))
    spans: list[str] = []
    for n in nums:
        if spans and spans[-1].split("-")[-1] == str(n - 1):
            spans[-1] = f"{spans[-1].split('-')[0]}-{n}"
        else:
            spans.append(str(n))
    return f"rank{'s' * (len(nums) != 1)} {', '.join(spans)}"


def _reported(d: dict[str, Any]) -> tuple[list[dict[str, Any]], list[int]]:
    """(the ranks that sent their report, the ranks that did not)."""
    entries = _ranks(d)
    have = [r for r in entries if not r.get("missing")]
    world = d.get("world_size")
    seen = {r.get("rank") for r in have}
    missing = [n for n in range(world) if n not in seen] if isinstance(world, int) else \
        [r.get("rank") for r in entries if r.get("missing")]
    return have, missing


@check("distributed.barrier", needs=("distributed",))
def distributed_barrier(facts: dict[str, Any]) -> Result:
    """Every rank joined the gloo process group and arrived at a timed barrier (torch.distributed's
    monitored_barrier, which names the ranks that do not arrive) within the timeout.

    Why: one rank that hangs (a stuck CUDA initialisation, a dead node, a firewall between nodes) hangs the
    whole job at its first collective, usually for the 10-30 minute NCCL timeout, with no word of which rank.
    Fix: look at the named rank's node: its own report (run doctor there), its network path to MASTER_ADDR,
    and whether its process was started at all.
    """
    d = facts["distributed"]
    timeout = d.get("timeout_s")
    init = d.get("init") if isinstance(d.get("init"), dict) else {}
    barrier = d.get("barrier") if isinstance(d.get("barrier"), dict) else {}
    world = d.get("world_size")
    if not isinstance(world, int) or not init:
        return errored("could not decide: the facts hold no world size or process-group start")
    remedy = Remediation("Run doctor on the named rank's node alone, check that it can reach MASTER_ADDR:MASTER_PORT, "
                         "and that its process started.", ("doctor check --no-bench",))
    if not init.get("ok"):
        joined = [r for r in d.get("joined") or [] if isinstance(r, int)]
        never = [r for r in range(world) if r not in joined]
        if never:
            return failed(f"{_rank_list(never)} never joined the process group within {timeout:g} s "
                          f"({len(joined)} of {world} joined)", remedy, f"init: {init.get('error')}")
        return failed(f"the gloo process group did not form: {init.get('error')}", remedy)
    if barrier.get("ok"):
        return passed(f"all {world} ranks arrived at the barrier (rank 0 waited {barrier.get('seconds', 0):.1f} s)")
    late = [r for r in barrier.get("missing") or [] if isinstance(r, int)]
    if late:
        hosts = {r.get("rank"): r.get("hostname") for r in _ranks(d)}
        where = ", ".join(f"rank {r} on {hosts[r]}" for r in late if hosts.get(r))
        return failed(f"{_rank_list(late)} did not arrive at the barrier within {timeout:g} s: hung or dead"
                      + (f" ({where})" if where else ""), remedy, f"barrier: {barrier.get('error')}")
    waited = [r for r in _ranks(d) if r.get("rank") != 0 and isinstance(r.get("barrier"), dict)
              and not r["barrier"].get("ok") and isinstance(r["barrier"].get("seconds"), (int, float))
              and isinstance(timeout, (int, float)) and r["barrier"]["seconds"] >= 0.9 * timeout]
    if waited:   # the others gave up on rank 0: rank 0 is the late one
        zero = next((r for r in _ranks(d) if r.get("rank") == 0), {"rank": 0})
        return failed(f"{_who(zero)} did not arrive at the barrier within {timeout:g} s: "
                      f"{_rank_list([r['rank'] for r in waited])} waited for it", remedy)
    return errored(f"could not decide which rank is late: the barrier failed ({barrier.get('error')})")


@check("distributed.ranks", needs=("distributed",))
def distributed_ranks(facts: dict[str, Any]) -> Result:
    """Every rank's own checks (the same profile, judged on each rank's node and GPU) say ready.

    Why: a job is only as ready as its worst rank; a failure on one node is invisible in rank 0's own report.
    Fix: the failing rank's check names its own fix; its full report is under `ranks` in the JSON report.
    """
    d = facts["distributed"]
    have, missing = _reported(d)
    bad = [r for r in have if r.get("exit_code") == 1]
    undecided = [r for r in have if r.get("exit_code") == 3]
    first = {r.get("rank"): next((f for f in r.get("findings") or [] if f.get("status") == "fail"), None)
             for r in bad}
    lines = tuple(f"{_who(r)}: {f['id']}: {f['summary']}" if (f := first.get(r.get("rank"))) else
                  f"{_who(r)}: {r.get('summary')}" for r in bad)
    if bad:
        return failed(f"{_rank_list([r['rank'] for r in bad])} of {d.get('world_size')} not ready: "
                      + "; ".join(lines[:3]) + (f"; +{len(lines) - 3} more" if len(lines) > 3 else ""), None, *lines)
    if missing:
        return errored(f"could not decide for {_rank_list(missing)}: no report arrived (see distributed.barrier)")
    if undecided:
        return errored(f"could not decide for {_rank_list([r['rank'] for r in undecided])}: "
                       + "; ".join(f"{_who(r)}: {r.get('summary')}" for r in undecided[:3]))
    return passed(f"all {len(have)} ranks ready on their own checks")


@check("distributed.versions", needs=("distributed",))
def distributed_versions(facts: dict[str, Any]) -> Result:
    """The NVIDIA driver, the CUDA it supports, torch and its CUDA build, Python, the key packages
    (transformers, accelerate, peft, deepspeed, bitsandbytes, flash-attn) and the GPU model are the same on
    every rank.

    Why: ranks with different torch, NCCL or CUDA builds can disagree on collective protocols and hang or
    corrupt results; a different driver or GPU model gives different kernels and speeds across ranks.
    Fix: install the same environment on every node (one container image, or one locked environment).
    """
    have, _ = _reported(facts["distributed"])
    if len(have) < 2:
        return skipped(f"{len(have)} rank reported: nothing to compare", cause=NOT_ASKED)
    skew, unknown = [], []
    for key, label in COMPARED:
        values: dict[str, list[int]] = defaultdict(list)
        blind: list[int] = []
        for r in have:
            v = versions({}, r.get("facts") or {}).get(key)
            (values[v] if v is not None else blind).append(r["rank"])
        if len(values) > 1:
            skew.append(f"{label}: " + "; ".join(f"{v} on {_rank_list(ns)}"
                                                 for v, ns in sorted(values.items(), key=lambda kv: -len(kv[1]))))
        elif values and blind:
            unknown.append(f"{label} on {_rank_list(blind)}")
    if skew:
        return failed(f"versions differ across ranks: {skew[0]}" + (f" (+{len(skew) - 1} more)" if len(skew) > 1 else ""),
                      Remediation("Run every rank in the same environment (one container image or locked "
                                  "environment on every node)."), *skew)
    if unknown:
        return errored(f"could not decide: the facts do not say the {'; '.join(unknown)}")
    return passed(f"the same driver, CUDA, torch, Python, key packages and GPU model on all {len(have)} ranks")


def _gpu_ranks(facts: dict[str, Any]) -> list[dict[str, Any]] | Result:
    """The ranks that reported, or the result that settles a GPU check without them: undecided when none
    reported, a skip when no rank has a GPU and each says why."""
    have, _ = _reported(facts["distributed"])
    if not have:
        return errored("could not decide: no rank reported")
    if any((r.get("device") or {}).get("ordinal") is not None for r in have):
        return have
    if all(r.get("gpu_absent") is True for r in have):
        return skipped(f"{NO_GPU} on any of the {len(have)} ranks", cause=NO_GPU)
    return have


@check("distributed.gpu_visible", needs=("distributed",))
def distributed_gpu_visible(facts: dict[str, Any]) -> Result:
    """Every rank has a CUDA device of its own to use: ordinal LOCAL_RANK under torchrun, or the one device a
    rank sees when the launcher gives each rank one (srun --gpus-per-task=1, CUDA_VISIBLE_DEVICES per rank).

    Why: a rank whose LOCAL_RANK is past the devices it sees crashes at torch.cuda.set_device ("invalid device
    ordinal"), after every other rank has started and is waiting for it.
    Fix: launch as many ranks per node as it has GPUs (torchrun --nproc-per-node), and do not narrow
    CUDA_VISIBLE_DEVICES below that.
    """
    have = _gpu_ranks(facts)
    if isinstance(have, Result):
        return have
    unknown = [r for r in have if (r.get("device") or {}).get("known") is False]
    blind = [r for r in have if (r.get("device") or {}).get("ordinal") is None and r not in unknown]
    if blind:
        lines = tuple(f"{_who(r)}: {(r.get('device') or {}).get('rule')}" for r in blind)
        return failed(f"{_rank_list([r['rank'] for r in blind])} {'has' if len(blind) == 1 else 'have'} no CUDA "
                      f"device to use: {lines[0]}", Remediation(
                          "Launch as many ranks per node as it has GPUs, with each rank on CUDA device LOCAL_RANK.",
                          ("nvidia-smi -L",)), *lines)
    if unknown:
        return errored(f"could not decide for {_rank_list([r['rank'] for r in unknown])}: "
                       f"{(unknown[0].get('device') or {}).get('rule')}")
    return passed(f"each of the {len(have)} ranks has a CUDA device: "
                  + ", ".join(f"rank {r['rank']} -> cuda:{r['device']['ordinal']}" for r in have[:8])
                  + (" ..." if len(have) > 8 else ""))


def _gpu_key(r: dict[str, Any]) -> tuple[str, str] | None:
    """(how the GPU is identified, the id): its UUID, else host + PCI bus id (the NVML index and the CUDA
    ordinal name different GPUs in different processes)."""
    dev = r.get("device") or {}
    if dev.get("uuid"):
        return "UUID", str(dev["uuid"])
    if dev.get("pci_bus_id") is not None and r.get("hostname"):
        return "PCI bus id", f"{r['hostname']}/{dev['pci_bus_id']}"
    return None


@check("distributed.gpu_unique", needs=("distributed",))
def distributed_gpu_unique(facts: dict[str, Any]) -> Result:
    """No two ranks use the same GPU, compared by the GPU's UUID (else host and PCI bus id), never by index.

    Why: two ranks on one GPU halve its memory and speed, and NCCL refuses the pair ("Duplicate GPU detected")
    or hangs; it happens when CUDA_VISIBLE_DEVICES is set the same for every rank, or a script forgets
    torch.cuda.set_device(LOCAL_RANK).
    Fix: call torch.cuda.set_device(int(os.environ["LOCAL_RANK"])) before the first CUDA call, or give each rank
    its own device (srun --gpus-per-task=1).
    """
    have = _gpu_ranks(facts)
    if isinstance(have, Result):
        return have
    using = [r for r in have if (r.get("device") or {}).get("ordinal") is not None]
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    unidentified = []
    for r in using:
        key = _gpu_key(r)
        (by[key[1]] if key else unidentified).append(r)
    shared = {k: rs for k, rs in by.items() if len(rs) > 1}
    if shared:
        lines = tuple(f"GPU {k}: " + ", ".join(f"{_who(r)} cuda:{r['device']['ordinal']}" for r in rs)
                      for k, rs in shared.items())
        return failed(f"{len(shared)} GPU{'s' * (len(shared) != 1)} used by more than one rank: {lines[0]}",
                      Remediation("Give each rank its own GPU: torch.cuda.set_device(LOCAL_RANK) before any CUDA "
                                  "call, and the same CUDA_VISIBLE_DEVICES (all of the node's GPUs) for every "
                                  "rank of a node, or srun --gpus-per-task=1."), *lines)
    if unidentified:
        return errored(f"could not decide for {_rank_list([r['rank'] for r in unidentified])}: the facts give "
                       "neither a UUID nor a PCI bus id for its GPU")
    if not using:
        return errored("could not decide: no rank says which GPU it uses")
    return passed(f"{len(using)} ranks on {len(by)} distinct GPUs (by UUID)")


def _threshold(link: str | None, ports: int | None, min_gbps: float | None) -> tuple[float, float, str] | None:
    """(warn below, fail below, what they come from), or None when the profile sets neither."""
    data = refdata.load("interconnect")
    levels = data["levels"]
    if min_gbps is not None:
        return min_gbps, min_gbps * levels["fail_fraction"] / levels["warn_fraction"], \
            f"the profile's machine.interconnect.min_busbw_gbps {min_gbps:g} GB/s"
    row = data["links"].get(link) if link else None
    if row is None:
        return None
    speed = row["gbps"] * (ports or 1)
    return speed * levels["warn_fraction"], speed * levels["fail_fraction"], \
        f"{link} ({row['what']}{f', x{ports} ports' if ports and ports > 1 else ''}): {speed:g} GB/s one way"


@check("distributed.allreduce", needs=("distributed",),
       binds={"intra_node": "machine.interconnect.intra_node", "inter_node": "machine.interconnect.inter_node",
              "inter_node_ports": "machine.interconnect.inter_node_ports",
              "min_busbw_gbps": "machine.interconnect.min_busbw_gbps"})
def distributed_allreduce(facts: dict[str, Any], *, intra_node: str | None = None, inter_node: str | None = None,
                          inter_node_ports: int | None = None, min_busbw_gbps: float | None = None) -> Result:
    """The all-reduce bus bandwidth across the ranks (nccl-tests' busbw = bytes/time * 2(n-1)/n, median of the
    timed iterations at the largest size) is near the one-way speed of the link it crosses: the profile's
    intra-node link on one host, its inter-node link across hosts (doctor/data/interconnect.yaml). Over gloo on
    CPU it is reported, not judged.

    Why: a degraded NVLink, a PCIe link trained at a lower width, or NCCL falling back to TCP sockets makes
    every step of a data-parallel job crawl, and shows in no single-GPU figure.
    Fix: check the links (nvidia-smi nvlink --status, nvidia-smi topo -m), then rerun with NCCL_DEBUG=INFO to
    see which transport NCCL picked.
    """
    d = facts["distributed"]
    ar = d.get("allreduce") if isinstance(d.get("allreduce"), dict) else None
    if ar is None:
        return errored("could not decide: the facts hold no all-reduce result")
    status = ar.get("status")
    if status == "skipped":
        return skipped(f"all-reduce not run: {ar.get('reason')}")
    if status == "hung":
        return failed(str(ar.get("reason")), Remediation("Rerun with NCCL_DEBUG=INFO to see where NCCL stops.",
                                                         ("export NCCL_DEBUG=INFO",)))
    if status != "ok":
        return errored(f"could not decide: {ar.get('reason')}")
    busbw, size = ar.get("busbw_gbps"), ar.get("bytes")
    if not isinstance(busbw, (int, float)) or not isinstance(size, int):
        return errored("could not decide: the all-reduce result has no bus bandwidth")
    hosts = sorted({r.get("hostname") for r in _ranks(d) if r.get("hostname")})
    n = ar.get("world_size")
    figure = (f"all-reduce busbw {busbw:.2f} GB/s (algbw {ar.get('algbw_gbps', 0):.2f}) at {size / 2**20:g} MiB over "
              f"{n} ranks on {len(hosts)} host{'s' * (len(hosts) != 1)} ({ar.get('backend')})")
    details = tuple(f"{row['bytes'] / 2**20:g} MiB: {row['median_s'] * 1e3:.3f} ms, busbw {row['busbw_gbps']:.2f} GB/s"
                    for row in ar.get("sizes") or [] if isinstance(row, dict) and row.get("busbw_gbps") is not None)
    if ar.get("backend") != "nccl":
        return skipped(f"{figure}; not applicable: gloo on CPU has no interconnect threshold", *details)
    across = len(hosts) > 1
    limit = _threshold(inter_node if across else intra_node, inter_node_ports if across else None, min_busbw_gbps)
    if limit is None:
        key = "inter_node" if across else "intra_node"
        return skipped(f"{figure}; the profile sets no machine.interconnect.{key} or min_busbw_gbps to judge it by",
                       *details, cause=NOT_ASKED)
    warn_below, fail_below, source = limit
    text = f"{figure}; expected at least {warn_below:.1f} GB/s from {source}"
    remedy = Remediation("Check the GPU links and which transport NCCL uses.",
                         ("nvidia-smi topo -m", "nvidia-smi nvlink --status", "export NCCL_DEBUG=INFO"))
    if busbw < fail_below:
        return failed(text + f" (fails below {fail_below:.1f})", remedy, *details)
    if busbw < warn_below:
        return warned(text, remedy, *details)
    return passed(text, *details)

