"""Python facts of the inspected interpreter: version, venv/conda, installed distributions."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .. import subproc
from ..probing import ProbeContext, probe

SCRIPT = Path(__file__).with_name("dists_script.py")


@probe("python", timeout_s=30)
def probe_python(ctx: ProbeContext, timeout_s: float) -> dict[str, Any]:
    target = ctx.target
    if target.is_own:
        from . import dists_script

        data = dists_script.collect()
    else:
        done = subproc.run([target.executable, str(SCRIPT)], timeout_s=max(0.5, timeout_s - 1))
        if done.timed_out:
            raise TimeoutError(f"{target.executable} did not list its packages within {timeout_s:g} s")
        if done.returncode != 0:
            raise RuntimeError(f"{target.executable} failed: {done.stderr.strip()[-300:]}")
        data = json.loads(done.stdout.strip().splitlines()[-1])
    data["inspected"] = target.to_dict()
    data["doctor_executable"] = sys.executable
    return data
