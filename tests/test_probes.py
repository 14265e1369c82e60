"""Probes: NVML faked at its one seam (raising, hanging, partial), the torch subprocess, interpreter
choice, redaction."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from doctor.probing import ProbeContext

from doctor import subproc
from doctor.interpreter import select
from doctor.probes import gpu as gpu_probe
from doctor.probes.torch_env import facts_from_run, parse_stages
from doctor.redact import redact

FAKES = Path(__file__).parent / "fakes" / "nvml"


def run_doctor(*args, fake=None, env_extra=None, timeout=60):
    env = dict(os.environ)
    if fake:
        env["PYTHONPATH"] = str(FAKES) + os.pathsep + env.get("PYTHONPATH", "")
        env["FAKE_NVML"] = fake
    env.update(env_extra or {})
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "doctor", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    return done, time.monotonic() - t0


def fake_module(mode, monkeypatch):
    monkeypatch.setenv("FAKE_NVML", mode)
    monkeypatch.syspath_prepend(str(FAKES))
    sys.modules.pop("pynvml", None)
    import pynvml  # the fake

    monkeypatch.setattr(pynvml, "MODE", mode)
    return pynvml


def test_nvml_raising_is_recorded_as_data(monkeypatch):
    fake = fake_module("raise", monkeypatch)
    data = gpu_probe.collect(lambda: fake)
    assert data["available"] is False and data["reason"] == "the NVIDIA kernel driver is not loaded"


def test_nvml_missing_library_reason():
    class Err(Exception):
        value = 12

    class NoLib:
        @staticmethod
        def nvmlInit():
            raise Err("NVML Shared Library Not Found")

    data = gpu_probe.collect(lambda: NoLib)
    assert "libnvidia-ml.so.1" in data["reason"]


def test_nvml_partial_data_keeps_what_it_could_read(monkeypatch):
    fake = fake_module("partial", monkeypatch)
    data = gpu_probe.collect(lambda: fake)
    assert data["available"] and data["driver_version"] == "570.124.06" and data["cuda_driver_version"] == "12.8"
    d0, d1 = data["devices"]
    assert d0["memory"]["total_mib"] == 81920 and d0["compute_capability"] == "8.0"
    assert d0["pci_bus_id"] == "00000000:17:00.0" and d0["mig"] is None
    assert d1["memory"] is None and d1["compute_capability"] is None
    assert any("memory" in e and "Not Supported" in e for e in d1["errors"])


def test_partial_nvml_is_judged_not_passed(tmp_path):
    done, _ = run_doctor("check", "-p", "autodl-a800", "--format", "json", "--timeout", "30", fake="partial")
    report = json.loads(done.stdout)
    status = {r["id"]: r["status"] for r in report["results"]}
    assert status["gpu.present"] == "pass" and status["gpu.memory"] == "error"  # GPU 1's memory unknown: undecided
    assert done.returncode == 1


def test_hanging_nvml_does_not_hang_doctor():
    done, wall = run_doctor("facts", "--timeout", "8", fake="hang")
    assert done.returncode == 3
    assert "probe 'gpu' timeout" in done.stderr
    snapshot = json.loads(done.stdout)
    assert snapshot["probes"]["gpu"]["status"] == "timeout" and "gpu" not in snapshot
    assert wall < 8 + 5, wall  # the probe limit plus start-up, not forever


def test_hanging_nvml_makes_check_undecided_not_ready(tmp_path):
    gpu_only = tmp_path / "gpu-only.yaml"  # torch may or may not be installed where the tests run
    gpu_only.write_text("machine: {gpu: {models: [A800 SXM4 80GB]}}\nchecks: [{id: gpu.present}, {id: gpu.model}]\n")
    done, wall = run_doctor("check", "-p", str(gpu_only), "--timeout", "8", fake="hang")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "[?] gpu.present: the gpu probe failed: probe 'gpu' did not finish within 8 s" in done.stdout
    assert "Traceback" not in done.stderr and wall < 8 + 5


def write_python(tmp_path, body):
    """A stand-in interpreter: a shell script that ignores its arguments (the probe script path)."""
    exe = tmp_path / "python"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(0o755)
    return str(exe)


def test_torch_probe_hang_in_cuda_init_is_a_finding(tmp_path):
    line = json.dumps({"stage": "import", "data": {"installed": True, "version": "2.9.0+cu128",
                                                     "cuda_build": "12.8", "arch_flags": ["sm_80"]}})
    exe = write_python(tmp_path, f"echo '{line}'; exec sleep 600")
    t0 = time.monotonic()
    done = subproc.run([exe], timeout_s=1.5)
    assert done.timed_out and time.monotonic() - t0 < 5
    data = facts_from_run(done, 1.5)
    assert data["version"] == "2.9.0+cu128"  # what it printed before hanging is kept
    assert data["hang"]["stage"] == "CUDA initialisation" and data["hang"]["timeout_s"] == 1.5
    assert "did not finish within 1.5 s" in data["hang"]["message"]


def test_torch_probe_crash_and_stage_parsing():
    done = subproc.Completed(-11, '{"stage": "import", "data": {"installed": true, "version": "2.9.0"}}\nnoise\n',
                             "Segmentation fault\n", False, 0.5)
    data = facts_from_run(done, 60)
    assert data["version"] == "2.9.0" and "CUDA initialisation" in data["crash"]["message"]
    assert parse_stages("garbage\n{not json\n") == {}
    assert "crash" in facts_from_run(subproc.Completed(1, "", "boom", False, 0.1), 60)


def test_torch_probe_via_cli_with_hanging_interpreter(tmp_path):
    exe = write_python(tmp_path, "exec sleep 600")
    done, wall = run_doctor("check", "-p", "cpu-ci", "--python", exe, "--timeout", "2")
    assert done.returncode in (1, 3) and wall < 15
    assert "hung" in done.stdout or "did not finish" in done.stdout


def test_real_torch_probe_on_this_machine():
    pytest.importorskip("torch")
    from doctor.probes.torch_env import probe_torch

    data = probe_torch(ProbeContext(select()), 120)
    assert data["installed"] is True and data["version"].split("+")[0].count(".") == 2
    assert "runtime" in data and isinstance(data["runtime"]["is_available"], bool)


def test_interpreter_selection(tmp_path, monkeypatch):
    assert select().reason == "doctor's own interpreter"
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / "bin" / "python").chmod(0o755)
    chosen = select(environ={"VIRTUAL_ENV": str(venv)})
    assert chosen.executable == str(venv / "bin" / "python") and "VIRTUAL_ENV" in chosen.reason
    assert select(str(venv)).reason == "named with --python"
    from doctor.errors import InputError

    with pytest.raises(InputError, match="does not exist"):
        select(str(tmp_path / "nope"))


def test_python_probe_of_another_interpreter(tmp_path):
    from doctor.interpreter import Interpreter
    from doctor.probes.python_env import probe_python

    venv = tmp_path / "other"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    data = probe_python(ProbeContext(Interpreter(str(venv / "bin" / "python"), "test")), 30)
    assert data["venv"] is True and "torch" not in data["distributions"]
    assert data["inspected"]["reason"] == "test"


def test_redaction():
    names = ["gpu-node-17", "alice"]
    facts = {"host": {"hostname": "gpu-node-17.example"},
             "python": {"executable": "/home/alice/envs/x/bin/python", "note": "on gpu-node-17 at 10.1.2.3",
                        "v6": "fe80::1ff:fe23:4567:890a", "time": "12:30:45", "bus": "00000000:17:00.0"}}
    out = redact(facts, names)
    assert out["host"]["hostname"] == "<redacted>"
    assert out["python"]["executable"] == "/home/<user>/envs/x/bin/python"
    assert out["python"]["note"] == "on <redacted> at <ip>" and out["python"]["v6"] == "<ip>"
    assert out["python"]["time"] == "12:30:45" and out["python"]["bus"] == "00000000:17:00.0"


def test_facts_redact_cli(tmp_path):
    out = tmp_path / "f.json"
    done, _ = run_doctor("facts", "--redact", "-o", str(out))
    assert done.returncode == 0
    data = json.loads(out.read_text())
    import socket

    assert data["provenance"]["redacted"] is True and "hostname" not in data["provenance"]
    assert socket.gethostname() not in out.read_text() or len(socket.gethostname()) < 3


def test_cap_ipc_lock_is_read_from_the_effective_capabilities(tmp_path):
    """/proc/self/status CapEff, bit 14 (CAP_IPC_LOCK): root with every capability has it, a default Docker
    container's root (CapEff 00000000a80425fb) lacks it; no CapEff line or a garbled one says nothing."""
    from doctor.probes.resources import cap_ipc_lock

    status = tmp_path / "status"
    for text, want in (("Name:\tpython\nCapEff:\t000001ffffffffff\n", True),
                       ("CapEff:\t00000000a80425fb\n", False),
                       ("Name:\tpython\n", None), ("CapEff:\tzz\n", None)):
        status.write_text(text)
        assert cap_ipc_lock(status) is want, text
    assert cap_ipc_lock(tmp_path / "missing") is None
