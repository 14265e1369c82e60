"""`doctor check --health` (Slurm's HealthCheckProgram): only torch-free probes and checks, one line per failure
beginning with the check id, doctor check's exit codes, no torch import; and the docs' HealthCheckProgram script
run as printed with a stub scontrol."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_baseline import a800_node, docs_block

from doctor.health import HEALTH_CHECKS, PROBES
from doctor.registry import discover

ROOT = Path(__file__).resolve().parents[1]
SITE = """kind: machine
extends: [base]
machine:
  gpu: {count: 8, models: [A800 SXM4 80GB]}
checks:
  - id: driver.minimum
    params: {minimum: "570.124.06"}
"""


def torchless(facts: dict) -> dict:
    """The node's facts as a health run collects them: only its probes' sections."""
    keep = {"schema_version", "provenance", "probes", *PROBES}
    return {k: v for k, v in facts.items() if k in keep}


@pytest.fixture
def site(tmp_path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(SITE)
    return path


def test_health_checks_read_only_what_the_health_probes_collect():
    checks = discover().checks
    for cid in HEALTH_CHECKS:
        assert set(checks[cid].needs) <= set(PROBES), (cid, checks[cid].needs)


def test_one_line_per_failure_beginning_with_the_check_id(cli, site, facts_file):
    ok = torchless(a800_node())
    assert cli("check", "--health", "-p", str(site), "--facts", facts_file(ok)) == (0, "", "")
    xid = torchless(a800_node())
    xid["kernel"]["xid_events"] = [{"code": 79, "pci": "17:00.0", "text": "GPU has fallen off the bus."}]
    cases = {"gpu.count: found 7 GPUs": torchless(a800_node(count=7)),
             "driver.minimum: driver 550.54.15 is older than the minimum 570.124.06":
                 torchless(a800_node(driver="550.54.15", max_cuda="12.4")),
             "gpu.xid: ": xid}
    for start, facts in cases.items():
        code, out, err = cli("check", "--health", "-p", str(site), "--facts", facts_file(facts))
        lines = out.splitlines()
        assert code == 1 and lines and lines[0].startswith(start), (start, out, err)
        assert all(line.split(":")[0] in HEALTH_CHECKS for line in lines), lines
    broken = torchless(a800_node())
    del broken["gpu"]
    broken["probes"]["gpu"] = {"status": "timeout", "duration_s": 10.0, "message": "probe 'gpu' did not finish within 10 s"}
    code, out, _ = cli("check", "--health", "-p", str(site), "--facts", facts_file(broken))
    assert code == 3 and out.startswith("gpu.present: the gpu probe failed: probe 'gpu' did not finish"), out


def test_health_refuses_the_other_modes(cli, site):
    for extra in (["--distributed"], ["--format", "json"], ["-o", "x.txt"]):
        code, _, err = cli("check", "--health", "-p", str(site), *extra)
        assert code == 2 and len(err.splitlines()) == 1 and "--health" in err, (extra, err)


def test_live_run_imports_no_torch_and_probes_only_its_probes():
    code = ("import json, sys, time\n"
            "from doctor.session import Request, health\n"
            "t = time.monotonic()\n"
            "report = health(Request(('cpu-ci',), offline=True))\n"
            "print(json.dumps({'s': time.monotonic() - t, 'probes': sorted(report.facts['probes']),\n"
            "                  'heavy': [m for m in ('torch', 'transformers', 'bitsandbytes') if m in sys.modules],\n"
            "                  'exit': int(report.exit_code)}))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["heavy"] == [] and got["probes"] == sorted(PROBES) and got["exit"] in (0, 1, 3), got
    assert got["s"] < 15, got


def test_health_check_program_script_runs_as_printed(tmp_path, site):
    script = tmp_path / "doctor-health.sh"
    script.write_text(docs_block("healthcheck"))
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    log = tmp_path / "scontrol.args"
    scontrol = tmp_path / "scontrol"   # `-o show node N` prints a state line; `update ...` records its arguments
    scontrol.write_text(f"#!/bin/bash\nif [ \"$1\" = -o ]; then echo \"NodeName=$4 Arch=x86_64 "
                        f"State=${{NODE_STATE:-IDLE}} ThreadsPerCore=1 Reason=x\"; exit 0; fi\n"
                        f"printf '%s\\n' \"$@\" > {log}\n")
    doctor = tmp_path / "doctor"       # the real doctor, judging the node's recorded facts instead of probing
    doctor.write_text(f"#!/bin/bash\nexec {sys.executable} -m doctor \"$@\" --facts \"$NODE_FACTS\"\n")
    for f in (scontrol, doctor):
        f.chmod(0o755)
    env = {**os.environ, "DOCTOR": str(doctor), "SCONTROL": str(scontrol), "DOCTOR_PROFILE": str(site),
           "SLURMD_NODENAME": "gpu04", "PYTHONPATH": str(ROOT)}
    facts = tmp_path / "node.json"

    def run(node: dict, **extra: str) -> list[str]:
        facts.write_text(json.dumps(torchless(node)))
        log.unlink(missing_ok=True)
        done = subprocess.run(["bash", str(script)], env={**env, "NODE_FACTS": str(facts), **extra},
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return log.read_text().splitlines() if log.exists() else []

    assert run(a800_node()) == []
    args = run(a800_node(count=7))
    assert args[:3] == ["update", "nodename=gpu04", "state=drain"], args
    assert args[3].startswith("reason=gpu.count: found 7 GPUs") and args[3].endswith(" (doctor)"), args
    assert len(args[3]) <= len("reason=") + 190 + len(" (doctor)")
    assert run(a800_node(count=7), NODE_STATE="MIXED+DRAIN") == []          # an existing drain keeps its reason
    assert run(a800_node(count=7), DOCTOR_PROFILE=str(tmp_path / "nope.yaml")) == []   # doctor's bad input: exit 2
