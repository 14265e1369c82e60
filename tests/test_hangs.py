"""A hang is a finding, a slow machine is not a hang, and a hung NVML leaves `doctor bench` undecided (exit 3)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from factsbuilder import edit, gpu_box

from doctor import subproc
from doctor.checks.torch_stack import torch_installed
from doctor.model import Status

FAKES = Path(__file__).parent / "fakes" / "nvml"


def test_a_killed_child_reports_whether_it_was_busy_or_blocked():
    busy = subproc.run([sys.executable, "-c", "while True: pass"], 2.5)
    blocked = subproc.run([sys.executable, "-c", "import time; time.sleep(60)"], 2.5)
    assert busy.timed_out and blocked.timed_out
    assert busy.cpu_s is not None and busy.cpu_s > 1.0
    assert blocked.cpu_s is not None and blocked.cpu_s < 1.0


def test_a_slow_import_is_undecided_a_blocked_one_is_a_hang():
    def hung(cpu_s):
        return edit(gpu_box(), "import hang", torch={"installed": None, "hang": {
            "stage": "import torch", "timeout_s": 60, "cpu_s": cpu_s,
            "message": "import torch did not finish within 60 s; the process was killed"}})

    slow = torch_installed(hung(41.5))
    assert slow.status is Status.ERROR and "still working" in slow.summary and "--timeout" in slow.summary
    stuck = torch_installed(hung(0.2))
    assert stuck.status is Status.FAIL and "hung" in stuck.summary


def test_a_hung_nvml_makes_bench_exit_3_not_0(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(FAKES), FAKE_NVML="hang")
    done = subprocess.run([sys.executable, "-m", "doctor", "bench", "--timeout", "20"], capture_output=True,
                          text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "could not decide" in done.stderr and "gpu" in done.stderr
