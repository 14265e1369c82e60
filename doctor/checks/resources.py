"""RAM (judged on the container's effective limit, and against a distributed job's CPU RAM per node), CPU
quota, /dev/shm and ulimits. Malformed facts make a check undecided ("could not decide: ..."), never a crash."""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

from doctor.model import Remediation, Result, errored, failed, passed, skipped, warned
from doctor.registry import check
from doctor.units import human_bytes

from .common import devices

GIB = 2**30
NCCL_DOCKER_URL = "https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/troubleshooting.html#docker"
DS_MEMORY_URL = "https://deepspeed.readthedocs.io/en/latest/memory.html"


class Undecided(Exception):
    """A fact the check needs is missing or malformed."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _map(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise Undecided(f"{where} is missing" if value is None else f"{where} is {_shown(value)}; expected a mapping")


def _num(value: Any, where: str, optional: bool = False) -> float | None:
    """A non-negative finite number; None where `optional` and absent."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise Undecided(f"{where} is missing" if value is None else f"{where} is {_shown(value)}; expected a number")
    return value


def decides(func: Callable[..., Result]) -> Callable[..., Result]:
    """Turn a missing or malformed fact (Undecided) into an undecided result naming it."""

    @functools.wraps(func)
    def judged(facts: dict[str, Any], **params: Any) -> Result:
        try:
            return func(facts, **params)
        except Undecided as exc:
            return errored(f"could not decide: {exc}")

    return judged


def gib(n: float | None) -> str:
    return "?" if n is None else f"{n / GIB:.1f} GiB"


def effective_memory(res: dict[str, Any]) -> tuple[int, int | None, int]:
    """(effective limit, cgroup limit or None, available under that limit); Undecided when a figure is missing."""
    mem = _map(_map(res, "resources").get("memory"), "resources.memory")
    cg = _map(mem.get("cgroup") or {}, "resources.memory.cgroup")
    limit = _num(cg.get("limit_bytes"), "resources.memory.cgroup.limit_bytes", optional=True)
    total = _num(mem.get("host_total_bytes"), "resources.memory.host_total_bytes")
    avail = _num(mem.get("host_available_bytes"), "resources.memory.host_available_bytes")
    if limit is not None and limit < total:
        used = _num(cg.get("usage_bytes"), "resources.memory.cgroup.usage_bytes", optional=True) or 0
        # the working set, as the kubelet counts it (kubernetes.io docs, node-pressure eviction: "The kubelet excludes
        # inactive_file ... from its calculation, as it assumes that memory is reclaimable under pressure")
        cache = _num(cg.get("inactive_file_bytes"), "resources.memory.cgroup.inactive_file_bytes", optional=True)
        used = max(0, used - (cache or 0))
        return int(limit), int(limit), int(max(0, min(limit - used, avail)))
    return int(total), None if limit is None else int(limit), int(avail)


@check("memory.ram", needs=("resources",), binds={"ram_gib": "machine.ram_gib", "workload": "job.workload",
                                                  "deepspeed": "job.deepspeed"})
@decides
def memory_ram(facts: dict[str, Any], *, ram_gib: float | None = None, tolerance_pct: float = 10.0,
               workload: dict[str, Any] | None = None, deepspeed: dict[str, Any] | None = None,
               process_allowance_gib: float | None = None) -> Result:
    """RAM as the job gets it: the smaller of the host's RAM and the container's cgroup memory limit,
    against the profile's machine.ram_gib, and, for a distributed job (DeepSpeed ZeRO, FSDP, data parallel),
    against the CPU RAM one node needs: offloaded optimizer state and parameters, pinned staging buffers, the
    model as each rank loads it (doctor/vram/distributed.py), or, for one GPU with a bitsandbytes paged optimizer,
    the optimizer state that does not fit on the GPU and pages out to CPU RAM, plus `process_allowance_gib` per
    rank for the rest
    of each process (doctor's assumption, not a measurement, PROCESS_ALLOWANCE_GIB by default: Python, torch and CUDA
    libraries, host-side CUDA state, a DataLoader's prefetch; set it to the RSS you measure).

    Why: in a container psutil and `free` report the host (e.g. 1 TB) while the cgroup caps the job at
    its share (e.g. 100 GB); loading a checkpoint or a CPU-offloaded optimizer past the cap is an
    OOM kill with no Python traceback.
    Fix: rent or request the memory the job needs, or lower its CPU-side memory (NVMe offload, fewer bytes per
    optimizer state, bf16, no offload where the GPUs can hold the states); each alternative is computed, ZeRO-3
    with parameter offload too, which moves the 16-bit parameters to the CPU as well: it frees the GPU, not RAM.
    """
    if process_allowance_gib is None and isinstance(workload, dict):   # the job's figure needs it (and doctor.vram)
        from doctor.vram.distributed import PROCESS_ALLOWANCE_GIB
        process_allowance_gib = PROCESS_ALLOWANCE_GIB
    elif process_allowance_gib is not None:
        process_allowance_gib = _num(process_allowance_gib, "checks[memory.ram].params.process_allowance_gib")
    res = _map(facts.get("resources"), "resources")
    eff, limit, avail = effective_memory(res)
    mem = res["memory"]
    host = mem["host_total_bytes"]
    cgroup = mem.get("cgroup") or {}
    source = cgroup.get("source")
    details = [f"host RAM (psutil): {gib(host)}",
               f"cgroup v{cgroup.get('version')} limit: "
               + (f"{gib(limit)} ({source})" if limit is not None else "none"),
               f"swap: {gib(_num(mem.get('swap_total_bytes'), 'resources.memory.swap_total_bytes', optional=True))}"]
    judged = f"{gib(eff)} effective" + (" (the container limit, not the host's RAM)" if limit and limit < host else "")
    job = (_job_ram(facts, workload, deepspeed, (eff, limit, avail), process_allowance_gib)
           or _paged_spill(facts, workload, eff, process_allowance_gib))
    if job is not None and job.status.value in ("fail", "error"):
        extra = ([f"the profile expects {ram_gib:g} GiB of RAM"] if ram_gib is not None else [])
        return type(job)(job.check_id, job.status, job.summary, tuple(details) + job.details + tuple(extra),
                         job.remediation)
    if ram_gib is not None and eff < ram_gib * GIB * (1 - tolerance_pct / 100):
        return failed(f"{judged}; the profile expects {ram_gib:g} GiB",
                      Remediation(f"This machine gives the job {gib(eff)} of RAM. Choose an instance with "
                                  f"{ram_gib:g} GiB, raise the container's memory limit, or lower the job's CPU-side "
                                  "memory (fewer DataLoader workers, no optimizer CPU offload)."), *details)
    job_details = job.details if job is not None else ()
    if avail < eff * 0.10:
        return warned(f"{judged}, but only {gib(avail)} is available now",
                      Remediation("Other processes hold most of the memory; stop them before the job starts.",
                                  ("ps aux --sort=-rss | head",)), *details, *job_details)
    if job is not None and job.status.value == "warn":
        return warned(f"{judged}; " + job.summary, job.remediation, *details, *job_details)
    expect = f" (profile expects {ram_gib:g} GiB)" if ram_gib is not None else ""
    needs = f"; {job.summary}" if job is not None else ""
    return passed(f"{judged}, {gib(avail)} available{expect}{needs}", *details, *job_details)


def _job_workload(facts: dict[str, Any], workload: Any, deepspeed: Any) -> tuple[Any, dict[str, Any], Any] | None:
    """(model, fields, Workload) of the profile's job with the inspected interpreter's library versions applied, as
    vram.budget reads them (doctor.vram.versions.with_facts); None when the profile sets no usable workload."""
    from doctor.vram.estimator import Workload
    from doctor.vram.versions import resolve, with_facts
    from doctor.vram.workload import workload_from_job

    if not isinstance(workload, dict):
        return None
    model, fields = workload_from_job({"workload": workload,
                                       "deepspeed": deepspeed if isinstance(deepspeed, dict) else {}})
    try:
        fields = resolve(with_facts(fields, facts))   # the printed commands carry the versions, as vram.budget's
        return model, fields, Workload(**fields)
    except (TypeError, ValueError):
        return None


def _paged_spill(facts: dict[str, Any], workload: dict[str, Any] | None, eff: float,
                 allowance_gib: float) -> Result | None:
    """A one-GPU job with a bitsandbytes paged optimizer whose GPU peak exceeds the GPU's free memory: the
    states that do not fit move to CPU RAM (CUDA unified memory), so they count against the container's RAM.
    None when that does not apply (no paged optimizer, a distributed job) or cannot be computed (no model
    config or no GPU memory figure: vram.budget reports those)."""
    from doctor.errors import InputError
    from doctor.vram.estimator import PAGED, estimate, sharding_of
    from doctor.vram.workload import attached_model

    job = _job_workload(facts, workload, None)
    if job is None:
        return None
    model, _, wl = job
    if wl.optimizer not in PAGED or wl.method == "inference" or sharding_of(wl) is not None:
        return None
    try:
        arch, _ = attached_model(workload, model)
    except InputError as exc:
        return errored(f"could not decide the paged optimizer's spill to CPU RAM: cannot read {model}'s config: "
                       f"{exc}")
    gpu_free = _gpu_free(facts)
    if arch is None or gpu_free is None:   # no config / no GPU: vram.budget reports it; no spill figure here
        return None
    est = estimate(arch, wl)
    spill = min(est.paged_bytes, max(0.0, est.peak_bytes - gpu_free))
    allowance = allowance_gib * GIB
    figure = (f"{gib(spill + allowance)} of CPU RAM ({gib(spill)} of {wl.optimizer} state paged out of the GPU: "
              f"peak {gib(est.peak_bytes)} vs {gib(gpu_free)} free; + {gib(allowance)} allowance)")
    details = [(f"paged optimizer state: {gib(est.paged_bytes)}; what does not fit on the GPU moves to CPU RAM "
                "(https://huggingface.co/docs/bitsandbytes/main/en/explanations/optimizers#paged-optimizers)"),
               f"process allowance: {allowance_gib:g} GiB (doctor's assumption, not measured)"]
    if spill + allowance <= eff:
        return passed(f"the job needs {figure}", *details)
    return failed(f"the job needs {figure} but this machine gives it {gib(eff)}",
                  Remediation("Lower the GPU peak so the paged state stays on the GPU (doctor estimate's what-ifs: "
                              "gradient checkpointing, a smaller micro-batch), use an 8-bit paged optimizer "
                              "(paged_adamw_8bit), or run with more RAM."), *details)


def _gpu_free(facts: dict[str, Any]) -> float | None:
    """The smallest free GPU memory NVML reports, or None where it reports none (malformed facts included)."""
    gpu = facts.get("gpu")
    free = []
    for dev in devices(gpu) if isinstance(gpu, dict) and isinstance(gpu.get("devices"), list) else []:
        memory = dev.get("memory") if isinstance(dev, dict) else None
        total = memory.get("total_bytes") if isinstance(memory, dict) else None
        used = (memory.get("used_mib") or 0) if isinstance(memory, dict) else 0
        if isinstance(total, (int, float)) and isinstance(used, (int, float)) and not isinstance(total, bool):
            free.append(total - used * 2**20)
    return min(free) if free else None


def _nvme_free(facts: dict[str, Any], path: str | None) -> tuple[str, float] | None:
    """(mount point, free bytes) of the filesystem holding `path`, from the disk facts; None where unknown."""
    disk = facts.get("disk")
    mounts = disk.get("mounts") if isinstance(disk, dict) else None
    if not path or not isinstance(mounts, list):
        return None
    best = None
    for m in mounts:
        point = m.get("mountpoint") if isinstance(m, dict) else None
        free = m.get("free_bytes") if isinstance(m, dict) else None
        if not isinstance(point, str) or isinstance(free, bool) or not isinstance(free, (int, float)):
            continue
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best[0])):
            best = (point, float(free))
    return best


def _largest_free(facts: dict[str, Any]) -> tuple[str, float] | None:
    """(mount point, free bytes) of the filesystem with the most free space, from the disk facts."""
    disk = facts.get("disk")
    mounts = disk.get("mounts") if isinstance(disk, dict) else None
    found = [(m["mountpoint"], float(m["free_bytes"])) for m in mounts or [] if isinstance(m, dict)
             and isinstance(m.get("mountpoint"), str) and isinstance(m.get("free_bytes"), (int, float))
             and not isinstance(m.get("free_bytes"), bool)] if isinstance(mounts, list) else []
    return max(found, key=lambda x: x[1]) if found else None


def _job_ram(facts: dict[str, Any], workload: dict[str, Any] | None, deepspeed: dict[str, Any] | None,
             memory: tuple[int, int | None, int], allowance_gib: float) -> Result | None:
    """The job's CPU RAM per node against `memory` (effective_memory's limit, cgroup limit, available); None when
    the job is not distributed (nothing to judge)."""
    from doctor.errors import InputError
    from doctor.vram.distributed import Counts, deepspeed_figures
    from doctor.vram.estimator import (
        distributed_memory,
        largest_layer,
        largest_unit,
        sharding_of,
    )
    from doctor.vram.whatif import cpu_what_ifs
    from doctor.vram.workload import attached_model, estimate_command, shown_model, unknown_optimizer

    eff, limit, avail = memory
    job = _job_workload(facts, workload, deepspeed)   # with DeepSpeed's version: bit16 staging depends on it
    if job is None:
        return None
    model, fields, wl = job   # fields: the job's with the facts' versions, for the printed estimate commands
    sh = sharding_of(wl)
    if sh is None or wl.method == "inference":
        return None
    if unknown_optimizer(workload):
        return errored(f"could not decide the job's CPU RAM per node: optimizer {unknown_optimizer(workload)!r} "
                       "(job.workload.optimizer) is not one doctor models the state of (see doctor estimate --help)")
    try:
        arch, params = attached_model(workload, model)
    except InputError as exc:
        return errored(f"could not decide the job's CPU RAM: cannot read {model}'s config: {exc}")
    mem = distributed_memory(arch, wl, params)
    if mem is None:
        what = (f"a model doctor can build (job.workload.model: {model})" if model else "job.workload.model")
        return errored(f"could not decide the job's CPU RAM per node ({sh.describe()}): it needs the parameter "
                       f"count, from {what} or job.workload.params" + (
                           "" if wl.optimizer in ("adamw", "adamw_fused", "adamw_loop", "adamw_8bit", "sgd")
                           else f", and bytes per state of {wl.optimizer} without a model config"))
    allowance = allowance_gib * GIB * sh.per_node
    need = mem.cpu_bytes + allowance
    counts = (Counts(arch.params, arch.params, largest_layer(arch), largest_unit(arch), largest_layer(arch))
              if arch is not None else Counts(params or 0, params or 0))
    ds = deepspeed_figures(counts, sh)
    peak = mem.peak_moment
    what = sh.describe() + (f", from {sh.source}" if sh.source else "")
    details = [f"job: {what}"]
    details += [f"CPU per node, {k}: {gib(t.bytes)} = {t.formula} [{t.source}]" for k, t in mem.moments()[peak].items()]
    if peak != "model load":
        details += [f"CPU per node while loading the model (freed before training): {gib(mem.cpu_load)}"]
    if peak != "training":
        details += [f"CPU per node during training: {gib(mem.cpu_training)} (the {peak} is the peak)"]
    details.append(f"process allowance: {allowance_gib:g} GiB x {sh.per_node} rank(s) = {gib(allowance)} "
                   "(doctor's assumption for Python, torch/CUDA libraries and host-side CUDA state; not measured)")
    if mem.pinned_bytes:
        details.append(f"of which pinned (page-locked): {gib(mem.pinned_bytes)} [{DS_MEMORY_URL} 'Pinned Memory']")
    if ds:
        details.append(f"DeepSpeed's estimator ({ds['function']}): {gib(ds['cpu_per_node_bytes'])} per node, "
                       f"x{ds['buffer_factor']:g} buffer = {gib(ds['cpu_per_node_with_buffer_bytes'])}; "
                       f"GPU {gib(ds['gpu_per_rank_bytes'])} per rank (model states only)")
    details += [f"note: {n}" for n in mem.notes]
    moment = {"training": "training state"}.get(peak, peak)
    figure = f"{gib(need)} of CPU RAM per node ({gib(mem.cpu_bytes)} {moment} + {gib(allowance)} allowance)"
    problems = []
    if mem.nvme_bytes:
        path = sh.knob("nvme_path")
        where = _nvme_free(facts, path)
        if where is None:
            details.append(f"NVMe offload needs {gib(mem.nvme_bytes)} per node on {path or '(no nvme_path set)'}; "
                           "its free space is not in the facts")
        elif where[1] < mem.nvme_bytes:
            roomy = _largest_free(facts)
            move = (f" (point offload_*.nvme_path to {roomy[0].rstrip('/')}/ds_nvme: {roomy[0]} has "
                    f"{gib(roomy[1])} free)" if roomy and roomy[1] >= mem.nvme_bytes and roomy[0] != where[0] else "")
            problems.append(f"NVMe offload needs {gib(mem.nvme_bytes)} on {path} but {where[0]} has "
                            f"{gib(where[1])} free{move}")
        else:
            details.append(f"NVMe offload: {gib(mem.nvme_bytes)} on {path} ({where[0]}: {gib(where[1])} free)")
    lock_problem = None
    if mem.locked_per_rank:
        lock_problem, line = _memlock(facts, mem.locked_per_rank)
        details.append(line)
    if need <= eff and not problems and lock_problem is None:
        if need > avail:
            return warned(f"the job needs {figure}; this machine gives it {gib(eff)} but only {gib(avail)} is "
                          "available now", Remediation(
                              f"Other processes hold {gib(eff - avail)} of it: "
                              f"stop them before the job starts, or it runs out of memory at its peak ({peak}).",
                              ("ps aux --sort=-rss | head",)), *details)
        return passed(f"the job needs {figure}", *details)
    if need <= eff and not problems:
        return failed(lock_problem, MEMLOCK_FIX, *details)
    past = None   # a peak before training whose training fits: swap may carry it (the swap fact is read only then)
    if need > eff and mem.peak_moment in TRANSIENT and mem.cpu_training + allowance <= avail:
        swap = _swap_usable(facts["resources"]["memory"], limit)
        past = _past_the_peak(mem, need, avail, allowance, swap)
        if swap is None and not problems and lock_problem is None:
            return errored(f"could not decide: the job needs {figure}, {gib(need - eff)} more than this machine's "
                           f"{gib(eff)} of RAM, at the {peak} only, and swap could carry that but {SWAP_UNKNOWN}",
                           *details)
    if past is not None and past[0] and not problems and lock_problem is None:
        return warned(f"the job needs {figure}, {gib(need - eff)} more than this machine's {gib(eff)} of RAM, at "
                      f"the {peak} only: free swap carries it there, slowly", Remediation(past[1]), *details)
    gpu_free = _gpu_free(facts)
    options = cpu_what_ifs(arch, wl, params, eff, allowance_gib * GIB, others=max(0.0, eff - avail))
    rank = {"fits": 0, "GPU too small": 1, "NVMe too small": 1, "still too big": 2}
    judged_options = []
    for w in options:
        verdict = "fits" if w.fits else "still too big"
        if w.fits and w.gpu_bytes is not None and gpu_free is not None and w.gpu_bytes > gpu_free:
            verdict = "GPU too small"
        disk = _largest_free(facts) if w.nvme_bytes else None
        if verdict == "fits" and disk is not None and disk[1] < w.nvme_bytes:
            verdict = "NVMe too small"
        judged_options.append((rank[verdict], not w.flag, w.cpu_bytes, verdict, disk, w))
    judged_options.sort(key=lambda x: x[:3])
    lines = []
    for _, _, _, verdict, disk, w in judged_options[:7]:
        gpu = f", GPU {gib(w.gpu_bytes)} per rank" if w.gpu_bytes is not None else ""
        nvme = f", NVMe {gib(w.nvme_bytes)}" + (f" (largest free here: {disk[0]}, {gib(disk[1])})" if disk else "") \
            if w.nvme_bytes else ""
        config = w.deepspeed.replace("/local_nvme", disk[0].rstrip("/") + "/ds_nvme") if disk else w.deepspeed
        lines.append(f"{w.change}: {gib(w.cpu_bytes)} CPU per node{gpu}{nvme} ({verdict}; {w.cost})"
                     + (f" [DeepSpeed config: {config}]" if config else ""))
    options = [x[-1] for x in judged_options]
    commands = tuple(estimate_command(shown_model(workload, model), fields, w.flag) for w in options
                     if model and arch is not None and w.flag)[:3]
    caveat = "" if arch is not None else (" (GPU figures: model states and buffers only; the activations need a "
                                          "model config)")
    remedy = Remediation(f"Alternatives, each computed{caveat}: " + "; ".join(lines) + "."
                         + (f" And: {MEMLOCK_FIX.text}" if lock_problem else ""),
                         commands + (MEMLOCK_FIX.commands if lock_problem else ()), DS_MEMORY_URL)
    if past is not None:
        remedy = Remediation(remedy.text + " " + past[1], remedy.commands, remedy.url)
    problems += [lock_problem] if lock_problem else []
    if need > eff:
        return failed(f"the job needs {figure} but this machine gives it {gib(eff)}", remedy,
                      *details, *problems)
    return failed("; ".join(problems), remedy, *details)


# why a peak before training passes: what frees it
TRANSIENT = {"FSDP lazy init": "each unpinned parameter shard is freed at its unit's first forward",
             "model load": "the model built on the CPU is freed once it moves to the GPUs"}
ANSWERAI_SWAP = ("Answer.AI's Llama-2-70B QLoRA run on a 128 GB box did so with a 10 GB swapfile, "
                 "AnswerDotAI/fsdp_qlora benchmarks_03_2024.md")
SWAP_UNKNOWN = ("the facts hold no free swap figure, or not how much of it the container may use (cgroup v1, swap "
                "accounting off, or a snapshot before facts 1.4)")


def _swap_usable(mem: dict[str, Any], limit: int | None) -> float | None:
    """Free swap the job can use: the host's, or under a container's memory limit the host's up to the room its
    cgroup v2 path leaves (swap_room_bytes), all of it where every memory.swap.max is unlimited; None where that is
    not known (the fact is missing, cgroup v1, swap accounting off, a snapshot before facts 1.4). No free swap on
    the host is none in any container."""
    free = _num(mem.get("swap_free_bytes"), "resources.memory.swap_free_bytes", optional=True)
    if free is None or free == 0 or limit is None or \
            limit >= _num(mem.get("host_total_bytes"), "resources.memory.host_total_bytes"):
        return free
    cg = mem.get("cgroup") or {}
    if cg.get("swap_unlimited") is True:
        return free
    room = _num(cg.get("swap_room_bytes"), "resources.memory.cgroup.swap_room_bytes", optional=True)
    return None if room is None else min(free, room)


def _past_the_peak(mem: Any, need: float, avail: float, allowance: float, swap: float | None
                   ) -> tuple[bool, str]:
    """(swap takes it, what to say) for a job over the RAM at a moment before training only -
    FSDP's lazy init or the model load - whose training fits what is available: swap can carry the pageable part
    of that peak beyond `avail` (pinned memory cannot be swapped)."""
    peak = mem.peak_moment
    training = mem.cpu_training + allowance
    deficit = need - avail
    pinned = sum(t.bytes for t in mem.moments()[peak].values() if t.pinned)
    takes = swap is not None and swap >= deficit and pinned <= avail
    text = (f"The peak is the {peak}, which passes ({TRANSIENT[peak]}); during training the job needs "
            f"{gib(training)}. Swap of at least {gib(deficit)} beyond the {gib(avail)} available gets it past the "
            f"peak, slowly ({ANSWERAI_SWAP}); "
            + ("how much this machine has is not known" if swap is None
               else f"this machine has {gib(swap)} of free swap the job can use")
            + (f", but {gib(pinned)} of the peak is pinned and cannot be swapped" if pinned > avail else "")
            + ".")
    return takes, text


MEMLOCK_FIX = Remediation(
    "Raise the locked-memory limit of the shell that launches the job (`ulimit -l unlimited`, allowed up to the hard "
    "limit), or start the container with `--ulimit memlock=-1` (Docker) / set memlock unlimited in "
    "/etc/security/limits.conf; granting CAP_IPC_LOCK works too.", ("ulimit -l unlimited",))


def _memlock(facts: dict[str, Any], locked: float) -> tuple[str | None, str]:
    """(problem or None, detail line): `locked` bytes per rank that DeepSpeed mlock()s against this process's
    RLIMIT_MEMLOCK, which CAP_IPC_LOCK lifts. A limit or capability missing from the facts decides nothing."""
    what = (f"DeepSpeed mlock()s {gib(locked)} per rank for its NVMe swap buffers (from 0.19.4: "
            "csrc/pin_memory/page_alloc.cpp 'mlock(ptr, size)'; a failure is 'mlock failed to allocate' and no buffer)")
    res = facts.get("resources") if isinstance(facts.get("resources"), dict) else {}
    cap = res.get("cap_ipc_lock")
    cap = cap if isinstance(cap, bool) else None   # anything but a boolean says nothing
    if cap is True:
        return None, f"{what}; CAP_IPC_LOCK lifts the memlock limit"
    lim = res.get("ulimits") if isinstance(res.get("ulimits"), dict) else {}
    if not lim.get("memlock_bytes"):
        return None, f"{what}; could not decide whether it may: the memlock limit is not in the facts"
    soft = _soft(lim, "memlock_bytes")
    if soft is None or soft >= locked:
        return None, f"{what}; memlock limit {human_bytes(soft) if soft is not None else 'unlimited'}"
    if cap is None:
        return None, (f"{what}; could not decide whether it may: the memlock limit is {human_bytes(soft)} and "
                      "whether the process has CAP_IPC_LOCK is not in the facts")
    return (f"{what}, but the memlock limit is {human_bytes(soft)} and the process lacks CAP_IPC_LOCK: the job "
            "dies creating them"), f"memlock limit (soft): {human_bytes(soft)}; CAP_IPC_LOCK: no"


@check("cpu.quota", needs=("resources",), binds={"workers": "job.workload.dataloader_workers"})
@decides
def cpu_quota(facts: dict[str, Any], *, workers: int | None = None) -> Result:
    """CPUs the job may use (cgroup quota, affinity) versus the cores it can see, and its DataLoader workers.

    Why: torch and OpenMP size their thread pools from the visible cores; under a 4-CPU quota on a
    64-core host that is 16× oversubscription and a data pipeline many times slower.
    Fix: set OMP_NUM_THREADS (and DataLoader num_workers) to the quota.
    """
    res = _map(facts.get("resources"), "resources")
    cpu = _map(res.get("cpu"), "resources.cpu")
    quota = _num(_map(cpu.get("cgroup") or {}, "resources.cpu.cgroup").get("quota_cpus"),
                 "resources.cpu.cgroup.quota_cpus", optional=True)
    visible = _num(cpu.get("logical"), "resources.cpu.logical", optional=True) or 0
    affinity = _num(cpu.get("affinity"), "resources.cpu.affinity", optional=True)
    counts = [x for x in (visible, affinity, quota) if x]
    if not counts:
        raise Undecided("resources.cpu reports no CPU count (logical, affinity or cgroup quota)")
    usable = min(counts)
    env = facts.get("env")
    variables = env.get("variables") if isinstance(env, dict) else None
    omp = variables.get("OMP_NUM_THREADS") if isinstance(variables, dict) else None
    details = [f"visible cores: {visible:g}", f"affinity: {affinity if affinity is not None else 'none'}",
               f"cgroup quota: {quota if quota is not None else 'none'}", f"OMP_NUM_THREADS: {omp or 'unset'}"]
    n = max(1, int(usable))
    if quota is not None and quota < visible and not omp:
        return warned(f"the container may use {quota:g} CPUs but sees {visible:g}; torch will start {visible:g} "
                      "threads", Remediation(f"Export OMP_NUM_THREADS={n} (and keep DataLoader num_workers <= {n}).",
                                             (f"export OMP_NUM_THREADS={n}",)), *details)
    if workers is not None and workers > usable:
        return warned(f"{workers} DataLoader workers on {usable:g} usable CPUs",
                      Remediation(f"Use num_workers <= {n}."), *details)
    return passed(f"{usable:g} usable CPUs" + (f" for {workers} DataLoader workers" if workers is not None else ""),
                  *details)


@check("shm.size", needs=("resources",), binds={"workers": "job.workload.dataloader_workers"})
@decides
def shm_size(facts: dict[str, Any], *, min_gib: float = 1.0, workers: int | None = None) -> Result:
    """/dev/shm is large enough for DataLoader worker batches and NCCL's intra-node buffers.

    Why: Docker's default /dev/shm is 64 MB; DataLoader workers pass batches through it and die with
    "Bus error" / "unable to write to file </torch_...>", and NCCL fails to allocate its shared memory.
    Fix: start the container with `--ipc=host` or `--shm-size=16g` (Kubernetes: an emptyDir with
    medium Memory mounted at /dev/shm).
    """
    shm = _map(facts.get("resources"), "resources").get("shm")
    if not shm:
        return skipped("no /dev/shm on this system")
    shm = _map(shm, "resources.shm")
    size = _num(shm.get("total_bytes"), "resources.shm.total_bytes")
    free = _num(shm.get("free_bytes"), "resources.shm.free_bytes", optional=True)
    gpu = facts.get("gpu")
    multi = len(devices(gpu)) > 1 if isinstance(gpu, dict) and isinstance(gpu.get("devices"), list) else False
    if size >= min_gib * GIB:
        return passed(f"/dev/shm is {gib(size)} ({gib(free)} free)")
    remedy = Remediation("PyTorch's DataLoader workers and NCCL use shared memory; the container default is too "
                         "small. Restart the container with a larger /dev/shm.",
                         ("docker run --ipc=host ...  # or: --shm-size=16g",), NCCL_DOCKER_URL)
    summary = f"/dev/shm is {size / 2**20:.0f} MiB (needs at least {min_gib:g} GiB)"
    if multi or (workers is not None and workers > 0):
        why = "several GPUs (NCCL)" if multi else f"{workers} DataLoader workers"
        return failed(f"{summary} and the job uses {why}", remedy)
    return warned(f"{summary}; fatal once the job uses DataLoader workers or several GPUs", remedy)


def _soft(lim: dict[str, Any], key: str) -> float | None:
    """The soft limit of a [soft, hard] pair; None means unlimited."""
    pair = lim.get(key)
    if pair is None:
        return None
    if not isinstance(pair, (list, tuple)):
        raise Undecided(f"resources.ulimits.{key} is {_shown(pair)}; expected [soft, hard]")
    return _num(pair[0] if pair else None, f"resources.ulimits.{key}[0]", optional=True)


@check("limits.ulimits", needs=("resources",))
@decides
def limits_ulimits(facts: dict[str, Any], *, min_open_files: int = 4096) -> Result:
    """Open-file limit for DataLoader workers, and unlimited locked memory where RDMA devices exist.

    Why: workers share tensors through file descriptors; a 1024 `ulimit -n` ends with "Too many open
    files". NCCL over InfiniBand pins memory and fails to register it under a small memlock limit.
    Fix: raise the limits (`ulimit -n 65536`; Docker `--ulimit nofile=65536 --ulimit memlock=-1`).
    """
    res = _map(facts.get("resources"), "resources")
    lim = res.get("ulimits") or {}
    if not lim:
        return skipped("no POSIX resource limits on this platform")
    lim = _map(lim, "resources.ulimits")
    nofile = _soft(lim, "nofile")
    memlock = _soft(lim, "memlock_bytes")
    rdma = res.get("rdma_devices") or []
    if not isinstance(rdma, list) or not all(isinstance(d, str) for d in rdma):
        raise Undecided(f"resources.rdma_devices is {_shown(rdma)}; expected a list of device names")
    details = [f"open files (soft): {f'{nofile:g}' if nofile is not None else 'unlimited'}",
               f"locked memory (soft): {gib(memlock) if memlock is not None else 'unlimited'}",
               f"RDMA devices: {', '.join(rdma) or 'none'}"]
    problems, commands = [], []
    if nofile is not None and nofile < min_open_files:
        problems.append(f"open files limit {nofile:g} < {min_open_files}")
        commands.append("ulimit -n 65536")
    if rdma and memlock is not None:
        problems.append(f"locked memory is limited to {gib(memlock)} on a machine with RDMA devices")
        commands.append("docker run --ulimit memlock=-1 ...  # or set memlock unlimited in limits.conf")
    if problems:
        return warned("; ".join(problems), Remediation("Raise the limits before launching.", tuple(commands),
                                                         NCCL_DOCKER_URL), *details)
    return passed(f"open files {f'{nofile:g}' if nofile else 'unlimited'}"
                  + ("; memlock unlimited for RDMA" if rdma else ""), *details)
