"""torch facts, from a subprocess of the inspected interpreter under a timeout."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import subproc
from ..probing import ProbeContext, probe
from . import torch_early

SCRIPT = Path(torch_early.SCRIPT)
LAST_LINE = json.dumps({"stage": "done", "data": {}})   # what the script prints once it has said everything
TIMEOUT_S = 60.0
GRACE_S = 1.0  # left to the thread to report the kill before its own deadline


def parse_stages(stdout: str) -> dict[str, Any]:
    """Collect the JSON stage lines the script printed, ignoring anything else."""
    stages: dict[str, Any] = {}
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{") and '"stage"' in line:
            try:
                obj = json.loads(line)
                stages[obj["stage"]] = obj["data"]
            except (ValueError, KeyError, TypeError):
                continue
    return stages


def facts_from_run(done: subproc.Completed, timeout_s: float) -> dict[str, Any]:
    """Turn the subprocess outcome into the torch section; a hang or crash is data."""
    stages = parse_stages(done.stdout)
    data: dict[str, Any] = dict(stages.get("import") or {})
    if "runtime" in stages:
        data["runtime"] = stages["runtime"]
    if "extensions" in stages:
        data["extensions"] = stages["extensions"]
    if done.timed_out:
        where = "CUDA initialisation" if "import" in stages else "import torch"
        data["hang"] = {"stage": where, "timeout_s": timeout_s, "cpu_s": done.cpu_s,
                        "message": f"{where} did not finish within {timeout_s:g} s; the process was killed"}
    else:
        message = None
        if not stages.get("import"):
            message = f"the torch probe exited with code {done.returncode} before reporting"
        elif ("runtime" in stages and "extensions" not in stages and data.get("installed")
              and not data.get("import_error")):
            message = (f"the process died importing a compiled extension (flash-attn, mamba-ssm or "
                       f"causal-conv1d; exit code {done.returncode})")
        elif "runtime" not in stages and data.get("installed") and not data.get("import_error"):
            message = f"the process died during CUDA initialisation (exit code {done.returncode})"
        if message:
            data["crash"] = {"returncode": done.returncode, "message": message,
                             "stderr_tail": (done.stderr or "").strip().splitlines()[-3:]}
    data.setdefault("installed", None)
    data["probe_s"] = round(done.duration_s, 3)
    return data


@probe("torch", timeout_s=TIMEOUT_S)
def probe_torch(ctx: ProbeContext, timeout_s: float) -> dict[str, Any]:
    target = ctx.target
    limit = max(0.5, timeout_s - GRACE_S)
    early = torch_early.take(target.executable)   # the process the launcher started for it, if any
    done = subproc.run([target.executable, str(SCRIPT)], timeout_s=limit, adopt=early, last_line=LAST_LINE)
    data = facts_from_run(done, limit)
    data["interpreter"] = target.executable
    data["started_early"] = early is not None
    return data
