"""Child process of one rank's NCCL all-reduce sweep (doctor.distributed.allreduce.run_nccl_child): its own NCCL
process group on a port rank 0 chose, one JSON line on stdout. Killed by its parent at the deadline. Not
validated on GPUs yet."""
from __future__ import annotations

import datetime as _dt
import json
import os


def main() -> int:
    import torch
    import torch.distributed as dist

    from .allreduce import run_in_process

    spec = json.loads(os.environ["DOCTOR_NCCL_SPEC"])
    torch.cuda.set_device(spec["ordinal"])
    dist.init_process_group("nccl", init_method=f"tcp://{spec['addr']}:{spec['port']}", rank=spec["rank"],
                            world_size=spec["world_size"], timeout=_dt.timedelta(seconds=spec["timeout_s"]),
                            device_id=torch.device("cuda", spec["ordinal"]))
    try:
        out = run_in_process(dist, spec["world_size"], spec["max_bytes"], device=f"cuda:{spec['ordinal']}")
    finally:
        dist.destroy_process_group()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
