"""RAM (judged on the container's effective limit), CPU quota, /dev/shm and ulimits."""
from __future__ import annotations

from typing import Any

from doctor.model import Remediation, Result, failed, passed, skipped, warned
from doctor.registry import check

from .common import devices

GIB = 2**30
NCCL_DOCKER_URL = "https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/troubleshooting.html#docker"


def gib(n: float | None) -> str:
    return "?" if n is None else f"{n / GIB:.1f} GiB"


def effective_memory(res: dict[str, Any]) -> tuple[int, int | None, int]:
    """(effective limit, cgroup limit or None, available under that limit)."""
    mem = res["memory"]
    cg = mem.get("cgroup") or {}
    limit = cg.get("limit_bytes")
    total = mem["host_total_bytes"]
    if limit is not None and limit < total:
        used = cg.get("usage_bytes") or 0
        return limit, limit, max(0, min(limit - used, mem["host_available_bytes"]))
    return total, limit, mem["host_available_bytes"]


@check("memory.ram", needs=("resources",), binds={"ram_gib": "machine.ram_gib"})
def memory_ram(facts: dict[str, Any], *, ram_gib: float | None = None, tolerance_pct: float = 10.0) -> Result:
    """RAM as the job gets it: the smaller of the host's RAM and the container's cgroup memory limit,
    against the profile's machine.ram_gib; both views are shown.

    Why: in a container psutil and `free` report the host (e.g. 1 TB) while the cgroup caps the job at
    its share (e.g. 100 GB); loading a checkpoint or a CPU-offloaded optimizer past the cap is an
    OOM kill with no Python traceback.
    Fix: rent or request the memory the profile states, or lower CPU-side memory (fewer DataLoader
    workers, no optimizer offload, low_cpu_mem_usage model loading).
    """
    res = facts["resources"]
    eff, limit, avail = effective_memory(res)
    host = res["memory"]["host_total_bytes"]
    source = (res["memory"].get("cgroup") or {}).get("source")
    details = [f"host RAM (psutil): {gib(host)}",
               f"cgroup v{(res['memory'].get('cgroup') or {}).get('version')} limit: "
               + (f"{gib(limit)} ({source})" if limit is not None else "none"),
               f"swap: {gib(res['memory'].get('swap_total_bytes'))}"]
    judged = f"{gib(eff)} effective" + (" (the container limit, not the host's RAM)" if limit and limit < host else "")
    if ram_gib is not None and eff < ram_gib * GIB * (1 - tolerance_pct / 100):
        return failed(f"{judged}; the profile expects {ram_gib:g} GiB",
                      Remediation(f"This machine gives the job {gib(eff)} of RAM. Choose an instance with "
                                  f"{ram_gib:g} GiB, raise the container's memory limit, or lower the job's CPU-side "
                                  "memory (fewer DataLoader workers, no optimizer CPU offload)."), *details)
    if avail < eff * 0.10:
        return warned(f"{judged}, but only {gib(avail)} is available now",
                      Remediation("Other processes hold most of the memory; stop them before the job starts.",
                                  ("ps aux --sort=-rss | head",)), *details)
    expect = f" (profile expects {ram_gib:g} GiB)" if ram_gib is not None else ""
    return passed(f"{judged}, {gib(avail)} available{expect}", *details)


@check("cpu.quota", needs=("resources",), binds={"workers": "job.workload.dataloader_workers"})
def cpu_quota(facts: dict[str, Any], *, workers: int | None = None) -> Result:
    """CPUs the job may use (cgroup quota, affinity) versus the cores it can see, and its DataLoader workers.

    Why: torch and OpenMP size their thread pools from the visible cores; under a 4-CPU quota on a
    64-core host that is 16× oversubscription and a data pipeline many times slower.
    Fix: set OMP_NUM_THREADS (and DataLoader num_workers) to the quota.
    """
    res = facts["resources"]
    cpu = res["cpu"]
    quota = (cpu.get("cgroup") or {}).get("quota_cpus")
    visible = cpu.get("logical") or 0
    usable = min(x for x in (visible, cpu.get("affinity"), quota) if x)
    omp = ((facts.get("env") or {}).get("variables") or {}).get("OMP_NUM_THREADS")
    details = [f"visible cores: {visible}", f"affinity: {cpu.get('affinity')}",
               f"cgroup quota: {quota if quota is not None else 'none'}", f"OMP_NUM_THREADS: {omp or 'unset'}"]
    n = max(1, int(usable))
    if quota is not None and quota < visible and not omp:
        return warned(f"the container may use {quota:g} CPUs but sees {visible}; torch will start {visible} threads",
                      Remediation(f"Export OMP_NUM_THREADS={n} (and keep DataLoader num_workers <= {n}).",
                                  (f"export OMP_NUM_THREADS={n}",)), *details)
    if workers is not None and workers > usable:
        return warned(f"{workers} DataLoader workers on {usable:g} usable CPUs",
                      Remediation(f"Use num_workers <= {n}."), *details)
    return passed(f"{usable:g} usable CPUs" + (f" for {workers} DataLoader workers" if workers is not None else ""),
                  *details)


@check("shm.size", needs=("resources",), binds={"workers": "job.workload.dataloader_workers"})
def shm_size(facts: dict[str, Any], *, min_gib: float = 1.0, workers: int | None = None) -> Result:
    """/dev/shm is large enough for DataLoader worker batches and NCCL's intra-node buffers.

    Why: Docker's default /dev/shm is 64 MB; DataLoader workers pass batches through it and die with
    "Bus error" / "unable to write to file </torch_...>", and NCCL fails to allocate its shared memory.
    Fix: start the container with `--ipc=host` or `--shm-size=16g` (Kubernetes: an emptyDir with
    medium Memory mounted at /dev/shm).
    """
    shm = facts["resources"].get("shm")
    if not shm:
        return skipped("no /dev/shm on this system")
    size = shm["total_bytes"]
    multi = len(devices(facts.get("gpu") or {})) > 1
    if size >= min_gib * GIB:
        return passed(f"/dev/shm is {gib(size)} ({gib(shm['free_bytes'])} free)")
    remedy = Remediation("PyTorch's DataLoader workers and NCCL use shared memory; the container default is too "
                         "small. Restart the container with a larger /dev/shm.",
                         ("docker run --ipc=host ...  # or: --shm-size=16g",), NCCL_DOCKER_URL)
    summary = f"/dev/shm is {size / 2**20:.0f} MiB (needs at least {min_gib:g} GiB)"
    if multi or (workers is not None and workers > 0):
        why = "several GPUs (NCCL)" if multi else f"{workers} DataLoader workers"
        return failed(f"{summary} and the job uses {why}", remedy)
    return warned(f"{summary}; fatal once the job uses DataLoader workers or several GPUs", remedy)


@check("limits.ulimits", needs=("resources",))
def limits_ulimits(facts: dict[str, Any], *, min_open_files: int = 4096) -> Result:
    """Open-file limit for DataLoader workers, and unlimited locked memory where RDMA devices exist.

    Why: workers share tensors through file descriptors; a 1024 `ulimit -n` ends with "Too many open
    files". NCCL over InfiniBand pins memory and fails to register it under a small memlock limit.
    Fix: raise the limits (`ulimit -n 65536`; Docker `--ulimit nofile=65536 --ulimit memlock=-1`).
    """
    res = facts["resources"]
    lim = res.get("ulimits") or {}
    if not lim:
        return skipped("no POSIX resource limits on this platform")
    nofile = (lim.get("nofile") or [None])[0]
    memlock = (lim.get("memlock_bytes") or [None])[0]
    rdma = res.get("rdma_devices") or []
    details = [f"open files (soft): {nofile if nofile is not None else 'unlimited'}",
               f"locked memory (soft): {gib(memlock) if memlock is not None else 'unlimited'}",
               f"RDMA devices: {', '.join(rdma) or 'none'}"]
    problems, commands = [], []
    if nofile is not None and nofile < min_open_files:
        problems.append(f"open files limit {nofile} < {min_open_files}")
        commands.append("ulimit -n 65536")
    if rdma and memlock is not None:
        problems.append(f"locked memory is limited to {gib(memlock)} on a machine with RDMA devices")
        commands.append("docker run --ulimit memlock=-1 ...  # or set memlock unlimited in limits.conf")
    if problems:
        return warned("; ".join(problems), Remediation("Raise the limits before launching.", tuple(commands),
                                                         NCCL_DOCKER_URL), *details)
    return passed(f"open files {nofile or 'unlimited'}" + ("; memlock unlimited for RDMA" if rdma else ""), *details)
