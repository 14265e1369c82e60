"""Where this process sits in a launch: rank, world size, local rank and the rendezvous address, read from the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or, under srun, from Slurm's
(SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, the first node of SLURM_STEP_NODELIST / SLURM_JOB_NODELIST). Pure."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import InputError

DEFAULT_PORT = 29500   # torchrun's default MASTER_PORT; used under srun when MASTER_PORT is not set


@dataclass(frozen=True)
class RankEnv:
    """This rank's place in the launch and how it found it."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str                  # "torchrun", "slurm" or "env"
    agent_store: bool = False      # torchrun's agent hosts the TCPStore at MASTER_PORT (workers connect to it)
    notes: tuple[str, ...] = ()


def _int(environ: Mapping[str, str], name: str, low: int, high: int) -> int:
    raw = environ[name]
    try:
        value = int(raw.strip())
    except ValueError:
        raise InputError(name, None, f"is {raw[:40]!r}; expected a whole number") from None
    if not low <= value <= high:
        raise InputError(name, None, f"is {value}; expected {low} to {high}")
    return value


def from_environ(environ: Mapping[str, str]) -> RankEnv:
    """The rank's place, or InputError (exit 2) when this process was not started by a launcher."""
    notes: list[str] = []
    if "RANK" in environ and "WORLD_SIZE" in environ:
        launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in environ else "env"
        world = _int(environ, "WORLD_SIZE", 1, 1 << 20)
        rank = _int(environ, "RANK", 0, world - 1)
        local = _int(environ, "LOCAL_RANK", 0, world - 1) if "LOCAL_RANK" in environ else \
            (_int(environ, "SLURM_LOCALID", 0, world - 1) if "SLURM_LOCALID" in environ else 0)
    elif "SLURM_PROCID" in environ and "SLURM_NTASKS" in environ:
        launcher = "slurm"
        world = _int(environ, "SLURM_NTASKS", 1, 1 << 20)
        rank = _int(environ, "SLURM_PROCID", 0, world - 1)
        local = _int(environ, "SLURM_LOCALID", 0, world - 1) if "SLURM_LOCALID" in environ else 0
    else:
        raise InputError("--distributed", None, "needs a launcher: run it under torchrun (RANK, WORLD_SIZE) or "
                                                "srun (SLURM_PROCID, SLURM_NTASKS)")
    addr = environ.get("MASTER_ADDR", "").strip()
    if not addr:
        nodes = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST")
        if not nodes:
            raise InputError("MASTER_ADDR", None, "is not set and no SLURM_STEP_NODELIST/SLURM_JOB_NODELIST names "
                                                  "rank 0's node; export MASTER_ADDR=<rank 0's host>")
        from ..fleet.hostlist import expand

        first = expand(nodes, "SLURM_STEP_NODELIST" if environ.get("SLURM_STEP_NODELIST") else "SLURM_JOB_NODELIST")
        if not first:
            raise InputError("SLURM_JOB_NODELIST", None, f"{nodes!r} names no node")
        addr = first[0]
        notes.append(f"MASTER_ADDR not set: rank 0's node taken as {addr}, the first node of the Slurm step")
    if "MASTER_PORT" in environ:
        port = _int(environ, "MASTER_PORT", 1, 65535)
    else:
        port = DEFAULT_PORT
        notes.append(f"MASTER_PORT not set: using {DEFAULT_PORT} (export MASTER_PORT when two jobs share a node)")
    agent = environ.get("TORCHELASTIC_USE_AGENT_STORE", "").strip().lower() == "true"
    return RankEnv(rank, world, local, addr, port, launcher, agent, tuple(notes))


def device_ordinal(local_rank: int, device_count: int) -> tuple[int | None, str]:
    """(the CUDA ordinal this rank uses, the rule that chose it): torchrun's convention is
    `torch.cuda.set_device(LOCAL_RANK)`; a rank that sees exactly one GPU (srun --gpus-per-task=1, or
    CUDA_VISIBLE_DEVICES set per rank) uses ordinal 0. None when the rank sees no GPU or fewer than it needs."""
    if device_count <= 0:
        return None, "this rank sees no CUDA device"
    if device_count == 1:
        return 0, "the one CUDA device this rank sees"
    if local_rank < device_count:
        return local_rank, f"LOCAL_RANK {local_rank} of {device_count} visible CUDA devices"
    return None, f"LOCAL_RANK {local_rank} but this rank sees only {device_count} CUDA devices"
