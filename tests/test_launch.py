"""The `doctor` command's launcher (doctor.launch): the torch probe started before doctor loads, adopted only by
the command that selects the same interpreter, killed otherwise; the exit without teardown keeps the output
and the exit code."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from doctor.launch import plain_probing_command


@pytest.mark.parametrize("argv,plain", [
    (["check"], True),
    (["check", "--profile", "cpu-ci", "--offline"], True),
    (["check", "-p", "cpu-ci", "--format=json", "-o", "r.json", "--strict", "-v", "--no-bench"], True),
    (["check", "--timeout", "30", "--bench-timeout=60"], True),
    (["check", "--debug"], False),                              # the top-level parser's flag: argparse refuses it
    (["facts", "--redact", "--output", "f.json", "--profile", "base"], True),
    ([], False),
    (["estimate", "--model", "llama-2-7b"], False),
    (["check", "--python", "/opt/env/bin/python"], False),     # another interpreter: the command decides
    (["check", "--python=/opt/env/bin/python"], False),
    (["check", "--facts", "snapshot.json"], False),            # no probing
    (["check", "--health"], False),                             # never starts the torch probe
    (["check", "--distributed"], False),
    (["check", "--pro", "cpu-ci"], False),                      # an abbreviation argparse would accept
    (["check", "-pcpu-ci"], False),
    (["check", "--offline=yes"], False),                        # a value on a flag that takes none
    (["check", "--profile"], False),                            # a flag missing its value
    (["check", "cpu-ci"], False),                               # a stray argument
    (["check", "--help"], False),
])
def test_only_a_plain_probing_command_speculates(argv, plain):
    assert plain_probing_command(argv) is plain


def _doctor(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "doctor", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    return dict(env, XDG_CACHE_HOME=str(tmp_path / "xdg"), HF_HUB_CACHE=str(tmp_path / "hub"), **extra)


def test_a_plain_check_adopts_the_early_probe_and_another_interpreter_does_not(tmp_path):
    env = _env(tmp_path)
    plain = _doctor(["check", "--profile", "cpu-ci", "--offline", "--format", "json"], env, tmp_path)
    named = _doctor(["check", "--profile", "cpu-ci", "--offline", "--format", "json", "--python", sys.executable],
                    env, tmp_path)
    for done in (plain, named):
        assert done.returncode in (0, 1), done.stderr
    assert json.loads(plain.stdout)["facts"]["torch"]["started_early"] is True
    assert json.loads(named.stdout)["facts"]["torch"]["started_early"] is False


def _fake_env(tmp_path: Path, body: str) -> Path:
    """An activated environment whose python records its pid, then runs `body` (sh)."""
    prefix = tmp_path / "env"
    (prefix / "bin").mkdir(parents=True)
    python = prefix / "bin" / "python"
    python.write_text(f"#!/bin/sh\necho $$ >> {tmp_path / 'pids'}\n{body}\n")
    python.chmod(0o755)
    return prefix


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:   # a zombie not yet reaped by init counts as gone
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_early_probe_the_command_never_adopts_is_killed(tmp_path):
    prefix = _fake_env(tmp_path, "exec sleep 60")
    done = _doctor(["check", "--profile", "no-such-profile"], _env(tmp_path, VIRTUAL_ENV=str(prefix)), tmp_path)
    assert done.returncode == 2 and "no-such-profile" in done.stderr
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert pids, "the launcher started no probe"
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_adopted_probe_that_hangs_is_a_finding_within_the_timeout(tmp_path):
    prefix = _fake_env(tmp_path, "exec sleep 60")
    start = time.monotonic()
    done = _doctor(["check", "--profile", "cpu-ci", "--offline", "--format", "json", "--timeout", "3"],
                   _env(tmp_path, VIRTUAL_ENV=str(prefix)), tmp_path)
    took = time.monotonic() - start
    torch_facts = json.loads(done.stdout)["facts"]["torch"]
    assert torch_facts["started_early"] is True and torch_facts["hang"]["stage"] == "import torch"
    assert took < 20
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert pids and not any(_alive(p) for p in pids)


def test_the_fast_exit_keeps_the_report_file_and_the_exit_code(tmp_path):
    out = tmp_path / "report.json"
    done = _doctor(["check", "--facts", str(Path(__file__).parent / "facts" / "cpu-container-no-gpu.json"), "--profile",
                    "cpu-ci", "--format", "json", "--output", str(out)], _env(tmp_path), tmp_path)
    assert done.returncode == json.loads(out.read_text())["verdict"]["exit_code"]
    bad = _doctor(["check", "--bogus-flag"], _env(tmp_path), tmp_path)
    assert bad.returncode == 2 and "--bogus-flag" in bad.stderr


def test_a_process_that_said_its_last_line_is_not_waited_for():
    from doctor import subproc

    script = "import sys, time; print('a'); print('END'); sys.stdout.flush(); time.sleep(3)"
    start = time.monotonic()
    done = subproc.run([sys.executable, "-c", script], 20, last_line="END")
    assert time.monotonic() - start < 2.5
    assert done.stdout.split() == ["a", "END"] and done.returncode is None and not done.timed_out
    running = [r for r in subproc._LIVE if r._proc.args[-1] == script]
    assert running, "the process is still exiting: doctor keeps it to kill at exit"
    running[0]._proc.wait(10)
    deadline = time.monotonic() + 5
    while running[0] in subproc._LIVE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running[0] not in subproc._LIVE   # reaped once it exited


def test_without_its_last_line_a_process_is_waited_for_or_killed():
    from doctor import subproc

    exits = subproc.run([sys.executable, "-c", "print('a'); raise SystemExit(4)"], 20, last_line="END")
    assert exits.returncode == 4 and exits.stdout == "a\n"
    hangs = subproc.run([sys.executable, "-c", "import time; print('a', flush=True); time.sleep(60)"], 1.5,
                        last_line="END")
    assert hangs.timed_out and hangs.returncode is None and hangs.stdout == "a\n"
