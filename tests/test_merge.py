"""`doctor merge`: node reports made by the real `doctor check --format json` (literal A800 facts, tests/factsbuilder)
merged into the fleet view: table, reasons, skew, missing nodes, exit codes, JSON schema, JUnit, bad input,
Slurm hostlists, `%h` in output paths, and the Slurm prolog of docs/fleet.md run for real."""
from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from factsbuilder import QWEN_QLORA_ENV, autodl_box, edit, nvml_device, torch_cuda

from doctor.cli import main
from doctor.errors import InputError
from doctor.fleet import hostlist
from doctor.output import expand_path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "fleet.md"
PROFILE = """kind: machine
description: 8x NVIDIA A800 80GB node (the fleet tests)
extends: [autodl-a800]
machine:
  gpu:
    count: 8
"""
DEVICES = [nvml_device(i) for i in range(8)]


def node_facts(host: str | None, **gpu) -> dict:
    """Literal 8x A800 AutoDL-like facts (tests/factsbuilder) for `host`; `gpu` as for autodl_box."""
    facts = autodl_box(dict(QWEN_QLORA_ENV), hf_home="/root/autodl-tmp/huggingface", **{"count": 8, **gpu})
    if host:
        facts["provenance"]["hostname"] = host
    return facts


FLEET = {   # the CI figure: a healthy node twice, one with an old driver, one with a missing GPU
    "gpu01": lambda: node_facts("gpu01"),
    "gpu02": lambda: edit(node_facts("gpu02", driver="470.182.03", max_cuda="11.4",
                                     torch=torch_cuda(available=False, devices=DEVICES)),
                          "driver 470 (CUDA 11.4) under a cu128 torch: CUDA cannot initialise"),
    "gpu03": lambda: node_facts("gpu03"),
    "gpu04": lambda: edit(node_facts("gpu04", count=7), "7 of the 8 GPUs visible"),
}


def check_report(facts: dict, out: Path, tmp: Path, *flags: str) -> Path:
    """The real `doctor check --format json` report of `facts`, written to `out`."""
    facts_path = tmp / f"{out.stem}.facts.json"
    facts_path.write_text(json.dumps(facts))
    profile = tmp / "a800x8.yaml"
    profile.write_text(PROFILE)
    with contextlib.redirect_stdout(io.StringIO()):   # the console report check prints beside the file
        code = main(["check", "--facts", str(facts_path), "-p", str(profile), "-p", "qwen3-vl-32b-qlora",
                     "--no-bench", "--format", "json", "--output", str(out), *flags])
    assert code in (0, 1, 3) and out.is_file()
    return out


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fleet")
    reports = tmp / "reports"
    reports.mkdir()
    for host, make in FLEET.items():
        check_report(make(), reports / f"{host}.json", tmp)
    return reports


@pytest.fixture
def merge(cli, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    return lambda *args: cli("merge", *map(str, args))


def table(out: str) -> dict[str, list[str]]:
    """The fleet table as {node: [verdict, marks...]}, plus 'node' for the header."""
    rows = {}
    for line in out.split("\n\n")[1].splitlines():
        if line.startswith(("✓ pass", "(unnamed)")) or "not shown" in line:
            continue
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return rows


def test_fleet_table_reasons_skew_and_exit_1(merge, fleet_dir):
    code, out, err = merge(fleet_dir, "--expect-nodes", "gpu[01-05]")
    assert code == 1 and err == ""
    rows = table(out)
    assert list(rows) == ["node", "gpu05", "gpu02", "gpu04", "gpu01", "gpu03"]   # worst first
    columns = rows["node"][1:]
    assert sorted(columns) == ["driver.torch_cuda", "gpu.count", "torch.cuda_available"]   # only what is not pass
    assert rows["gpu05"] == ["missing", "·", "·", "·"]
    assert dict(zip(columns, rows["gpu02"][1:])) == {"gpu.count": "✓", "driver.torch_cuda": "✗",
                                                     "torch.cuda_available": "✗"}
    assert dict(zip(columns, rows["gpu04"][1:]))["gpu.count"] == "✗" and rows["gpu04"][0] == "not ready"
    assert rows["gpu01"] == rows["gpu03"] == ["ready", "✓", "✓", "✓"]
    assert re.search(r"^  gpu02  driver\.torch_cuda: driver 470\.182\.03 .* built for CUDA 12\.8", out, re.MULTILINE)
    assert re.search(r"^         torch\.cuda_available: torch\.cuda\.is_available\(\) is False", out, re.MULTILINE)
    assert "  gpu04  gpu.count: found 7 GPUs (7× NVIDIA A800-SXM4-80GB); profile expects at least 8\n" in out
    assert "  gpu05  no report from this node" in out
    assert "  NVIDIA driver: 570.124.06 on gpu[01,03-04]; 470.182.03 on gpu02\n" in out
    assert "  CUDA (driver): 12.8 on gpu[01,03-04]; 11.4 on gpu02\n" in out
    assert "  GPU count: 8 on gpu[01-03]; 7 on gpu04\n" in out
    assert "GPU model" not in out and "torch:" not in out   # the same on every node: no skew line
    assert out.endswith("\n2 not ready, 1 missing, 2 ready of 5 nodes — the fleet is not ready.\n")


def test_docs_example_is_this_run(merge, fleet_dir):
    """docs/fleet.md shows the output of the test above, verbatim."""
    code, out, _ = merge(fleet_dir, "--expect-nodes", "gpu[01-05]")
    block = DOC.read_text().split("<!-- merge-example:begin -->")[1].split("<!-- merge-example:end -->")[0]
    expected = f"```\n$ doctor merge reports/ --expect-nodes 'gpu[01-05]'\n{out}$ echo $?\n{code}\n```\n"
    assert block.strip("\n") == expected.strip("\n"), "docs/fleet.md's example is stale: paste this run's output"


def test_exit_codes_ready_missing_undecided(merge, fleet_dir, tmp_path):
    healthy = [fleet_dir / "gpu01.json", fleet_dir / "gpu03.json"]
    code, out, _ = merge(*healthy)
    assert code == 0 and out.endswith("\nAll 2 nodes ready.\n") and "version skew: none" in out
    assert merge(*healthy, "--expect-nodes", "gpu[01,03]")[0] == 0
    code, out, _ = merge(*healthy, "--expect", "3")
    assert code == 1 and "1 of the 3 expected nodes sent no report" in out
    sick = node_facts("gpu09")
    del sick["torch"]
    sick["probes"]["torch"] = {"status": "timeout", "duration_s": 61.0, "message": "probe 'torch' did not finish"}
    undecided = check_report(sick, tmp_path / "gpu09.json", tmp_path)
    code, out, _ = merge(*healthy, undecided)
    assert code == 3 and "undecided:\n  gpu09  torch.installed: the torch probe failed" in out
    assert out.endswith("— could not decide whether the fleet is ready.\n")
    assert merge(*healthy, undecided, fleet_dir / "gpu04.json")[0] == 1   # a failure outranks undecided


def test_strict_counts_warnings_and_skew(merge, fleet_dir, tmp_path):
    warned = check_report(node_facts("gpu11", driver="535.54.03", max_cuda="12.2"), tmp_path / "gpu11.json", tmp_path)
    code, out, _ = merge(fleet_dir / "gpu01.json", warned)
    assert code == 0 and "(1 with warnings)" in out and "warnings:\n  gpu11  driver.torch_cuda:" in out
    code, out, _ = merge(fleet_dir / "gpu01.json", warned, "--strict")
    assert code == 1 and "not ready:\n  gpu11  driver.torch_cuda:" in out
    newer = check_report(node_facts("gpu12", driver="570.133.20"), tmp_path / "gpu12.json", tmp_path)
    code, out, _ = merge(fleet_dir / "gpu01.json", newer)
    assert code == 0 and "  NVIDIA driver: 570.124.06 on gpu01; 570.133.20 on gpu12\n" in out
    code, out, _ = merge(fleet_dir / "gpu01.json", newer, "--strict")
    assert code == 1 and out.endswith("the fleet is not ready (version skew across nodes, --strict).\n")


def test_slurm_job_nodelist_names_the_missing_node(cli, fleet_dir, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[01-04],gpu06")
    code, out, _ = cli("merge", str(fleet_dir))
    assert code == 1 and "5 nodes expected (SLURM_JOB_NODELIST gpu[01-04],gpu06)" in out and "  gpu06  no report" in out
    code, out, _ = cli("merge", str(fleet_dir), "--expect", "4")   # an explicit count wins over the environment
    assert "gpu06" not in out and "1 missing" not in out


def test_newest_duplicate_wins_and_unlisted_nodes_are_not_judged(merge, fleet_dir, tmp_path):
    old = json.loads((fleet_dir / "gpu02.json").read_text())
    fixed = json.loads((fleet_dir / "gpu01.json").read_text())
    fixed["facts"]["provenance"]["hostname"] = "gpu02.cluster.local"   # the same node by its long name
    fixed["created"] = "2099-01-01T00:00:00+00:00"
    (tmp_path / "gpu02-rerun.json").write_text(json.dumps(fixed))
    (tmp_path / "gpu02.json").write_text(json.dumps(old))
    code, out, _ = merge(tmp_path, fleet_dir / "gpu01.json")
    assert code == 0, out
    assert f"gpu02.cluster.local: 2 reports ({tmp_path / 'gpu02-rerun.json'}, {tmp_path / 'gpu02.json'}); using the " \
           f"newest, {tmp_path / 'gpu02-rerun.json'}" in out
    code, out, _ = merge(fleet_dir, "--expect-nodes", "gpu[01,03]")
    assert code == 0 and "2 reports from nodes outside the node list (--expect-nodes), not judged: " \
                         "gpu02 (not ready), gpu04 (not ready)" in out


def test_redacted_report_is_named_by_its_file(merge, tmp_path):
    report = check_report(node_facts(None), tmp_path / "node7.json", tmp_path)
    code, out, _ = merge(report, "--format", "json")
    node = json.loads(out)["nodes"][0]
    assert code == 0 and (node["name"], node["name_from"]) == ("node7", "file name")


@pytest.fixture(scope="module")
def merge_validator():
    schema = json.loads(resources.files("doctor").joinpath("schemas", "merge.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_json_validates_and_identifies_gpus(merge, fleet_dir, merge_validator, tmp_path):
    code, out, _ = merge(fleet_dir, "--expect-nodes", "gpu[01-05]", "--format", "json")
    doc = json.loads(out)
    merge_validator.validate(doc)
    assert code == doc["verdict"]["exit_code"] == 1
    assert doc["verdict"]["counts"] == {"missing": 1, "not_ready": 2, "undecided": 0, "ready": 2}
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert [n["name"] for n in doc["nodes"]] == ["gpu05", "gpu02", "gpu04", "gpu01", "gpu03"]
    assert [r["check"] for r in nodes["gpu02"]["reasons"]] == ["driver.torch_cuda", "torch.cuda_available"]
    assert nodes["gpu04"]["versions"]["gpu_count"] == "7" and len(nodes["gpu04"]["gpus"]) == 7
    assert nodes["gpu01"]["gpus"][3] == {k: DEVICES[3][k] for k in ("nvml_index", "uuid", "pci_bus_id", "name")}
    assert nodes["gpu01"]["versions"]["transformers"] == QWEN_QLORA_ENV["transformers"]
    assert nodes["gpu01"]["versions"]["deepspeed"] == "not installed"
    assert {s["key"] for s in doc["skew"]} == {"nvidia_driver", "cuda_driver", "gpu_count"}
    for mutate in (lambda d: d["nodes"][0].update(status="down"), lambda d: d.pop("skew"),
                   lambda d: d["verdict"].update(exit_code=2)):
        bad = json.loads(out)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            merge_validator.validate(bad)
    reports = shutil.copytree(fleet_dir, tmp_path / "reports")
    target = reports / "fleet.json"   # -o: the file gets the JSON, the terminal the table
    code, out, _ = merge(reports, "--format", "json", "-o", target)
    merge_validator.validate(json.loads(target.read_text()))
    assert code == 1 and out.startswith("doctor merge: 4 node reports")
    code, out, _ = merge(reports)   # the merge result left in the directory is skipped, with a note
    assert code == 1 and f"skipped {target}: a `doctor merge` result" in out


def test_junit_has_one_suite_per_node(merge, fleet_dir):
    code, out, _ = merge(fleet_dir, "--expect-nodes", "gpu[01-05]", "--format", "junit")
    suites = {s.get("name"): s for s in ET.fromstring(out.split("\n", 1)[1]).iter("testsuite")}
    assert code == 1 and sorted(suites) == [f"doctor:gpu0{i}" for i in range(1, 6)]
    assert suites["doctor:gpu05"].find("testcase/failure").get("message") == "no report from this node"
    failed = [c.get("name") for c in suites["doctor:gpu02"].iter("testcase") if c.find("failure") is not None]
    assert failed == ["driver.torch_cuda", "torch.cuda_available"] and suites["doctor:gpu02"].get("failures") == "2"
    assert suites["doctor:gpu01"].get("failures") == "0"


def test_untrusted_text_cannot_reach_the_terminal_raw(merge, fleet_dir, tmp_path):
    doc = json.loads((fleet_dir / "gpu02.json").read_text())
    doc["facts"]["provenance"]["hostname"] = "evil\x1b[2J\ud800"
    doc["results"][9]["summary"] = "drv\x1b]0;owned\x07 old"
    (tmp_path / "evil.json").write_text(json.dumps(doc))
    for fmt in ("console", "junit"):
        code, out, _ = merge(tmp_path / "evil.json", "--format", fmt)
        assert code == 1 and "\x1b" not in out and "\x07" not in out and "evil\\x1b[2J\\ud800" in out
    ET.fromstring(out.split("\n", 1)[1])


def bad(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize("case,expected", [
    ("not-json", r"not-json\.json: invalid JSON at line 1, column 1"),
    ("facts", r"facts\.json: results: missing: this is a `doctor facts` snapshot"),
    ("schema-2", r"schema-2\.json: schema_version: is '2\.0'; this doctor reads report schema 1\.x; upgrade doctor"),
    ("bad-status", r"bad-status\.json: results\[0\]\.status: is 'passed'; expected one of pass, warn"),
    ("list", r"list\.json: is a JSON list; expected a `doctor check --format json` report"),
    ("merge-result", r"merge-result\.json: schema_version: missing: a doctor\.merge/1 document"),
    ("no-files", r"doctor merge: no reports given"),
    ("empty-dir", r"empty: is a directory with no \*\.json report in it"),
    ("no-such-file", r"nope\.json: cannot read doctor check report \(No such file or directory\)"),
    ("bad-nodelist", r"--expect-nodes: unclosed '\[' in 'gpu\[01-04'"),
    ("bad-env-nodelist", r"SLURM_JOB_NODELIST: range '4-1' in 'gpu\[4-1\]' runs backwards"),
    ("dev-zero", r"/dev/zero: is a device; expected a doctor check report file"),
    ("huge", r"huge\.json: is larger than 64 MiB; expected a doctor check report"),
    ("fifo", r"fifo\.json: is a FIFO; expected a doctor check report file"),
    ("not-utf8", r"not-utf8\.json: is not UTF-8 text \(byte 0\); expected a doctor check report"),
    ("one-bad-among-good", r"not-json\.json: invalid JSON at line 1"),
    ("nan", r"nan\.json: invalid JSON \(NaN is not a number JSON allows\)"),
    ("long-summary", r"long\.json: results\[0\]\.summary: is a string of 200,000 characters; expected at most"),
    ("deep", r"deep\.json: invalid JSON \(nested more than 64 levels\)"),
])
def test_bad_input_is_one_line_exit_2(merge, fleet_dir, tmp_path, monkeypatch, recorded, case, expected):
    report = json.loads((fleet_dir / "gpu01.json").read_text())
    args = {
        "not-json": lambda: [bad(tmp_path, "not-json.json", "<html>502 Bad Gateway</html>")],
        "facts": lambda: [bad(tmp_path, "facts.json", recorded)],
        "schema-2": lambda: [bad(tmp_path, "schema-2.json", {**report, "schema_version": "2.0"})],
        "bad-status": lambda: [bad(tmp_path, "bad-status.json",
                                   {**report, "results": [{**report["results"][0], "status": "passed"}]})],
        "list": lambda: [bad(tmp_path, "list.json", [report])],
        "merge-result": lambda: [bad(tmp_path, "merge-result.json", {"schema": "doctor.merge/1", "nodes": []})],
        "no-files": list,
        "empty-dir": lambda: [(tmp_path / "empty").mkdir() or tmp_path / "empty"],
        "no-such-file": lambda: [tmp_path / "nope.json"],
        "bad-nodelist": lambda: [fleet_dir, "--expect-nodes", "gpu[01-04"],
        "bad-env-nodelist": lambda: [monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[4-1]") or fleet_dir],
        "dev-zero": lambda: [fleet_dir / "gpu01.json", "/dev/zero"],
        "huge": lambda: [sparse(tmp_path / "huge.json", 65 << 20)],
        "fifo": lambda: [os.mkfifo(tmp_path / "fifo.json") or tmp_path / "fifo.json"],
        "not-utf8": lambda: [(tmp_path / "not-utf8.json").write_bytes(b"\xff\xfe{}") and tmp_path / "not-utf8.json"],
        "one-bad-among-good": lambda: [fleet_dir, bad(tmp_path, "not-json.json", "{"), fleet_dir / "gpu01.json"],
        "nan": lambda: [bad(tmp_path, "nan.json", json.dumps({**report, "created": float("nan")}))],
        "long-summary": lambda: [bad(tmp_path, "long.json",
                                     {**report, "results": [{**report["results"][0], "status": "fail",
                                                                         "summary": "x" * 200_000}]})],
        "deep": lambda: [bad(tmp_path, "deep.json", "[" * 100_000 + "]" * 100_000)],
    }[case]()
    code, out, err = merge(*args)
    assert code == 2 and out == "" and err.count("\n") == 1, (out, err)
    assert re.match(r"doctor: .*" + expected, err), err


def sparse(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes no disk space (a report grown past the read limit)."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_one_bad_report_among_many_names_the_first_in_order(fleet_dir, tmp_path, monkeypatch):
    from doctor.fleet import command

    for i in range(6):
        shutil.copy(fleet_dir / "gpu01.json", tmp_path / f"n{i}.json")
    (tmp_path / "n4.json").write_text("{")
    (tmp_path / "n2.json").write_text("[]")
    monkeypatch.setattr(command, "PARALLEL_MIN", 2)   # through the process pool
    with pytest.raises(InputError, match=r"n2\.json: is a JSON list"):
        command.load(command.report_files([str(tmp_path)]))
    for i in (2, 4):
        (tmp_path / f"n{i}.json").unlink()
    reports, _ = command.load(command.report_files([str(tmp_path)]))
    assert [r.source for r in reports] == [str(tmp_path / f"n{i}.json") for i in (0, 1, 3, 5)]


@pytest.mark.parametrize("spec,hosts", [
    ("gpu[01-04,07],login1", ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07", "login1"]),
    ("n[8-10]", ["n8", "n9", "n10"]),                 # width of the lower bound: no padding
    ("n[08-10]", ["n08", "n09", "n10"]),
    ("n[098-101]", ["n098", "n099", "n100", "n101"]),
    ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),   # the last bracket fastest
    ("a1 b2\tc3,,d4", ["a1", "b2", "c3", "d4"]),       # commas, spaces, tabs; empty names dropped
    ("x[1,1-2],x2", ["x1", "x2"]),                     # each host once
    ("n[0]", ["n0"]),
    ("[1-2]", ["1", "2"]),
    ("gpu-a100-[1-3]", ["gpu-a100-1", "gpu-a100-2", "gpu-a100-3"]),
])
def test_hostlist_expansion(spec, hosts):
    assert hostlist.expand(spec) == hosts
    assert hostlist.expand(hostlist.compress(hosts)) == sorted(hosts, key=hostlist.natural_key)


@pytest.mark.parametrize("spec", ["gpu[01-", "gpu]1", "gpu[4-1]", "gpu[a-b]", "gpu[1-2[3]]", "n[-1]", "n[0-99999999]",
                                  "n[1-",  "n[]"])
def test_hostlist_refuses_what_slurm_refuses(spec):
    with pytest.raises(InputError) as info:
        hostlist.expand(spec)
    assert "\n" not in str(info.value)


def test_hostlist_compress_round_trips():
    rng = random.Random(7)
    for _ in range(200):
        names = {f"{rng.choice(['gpu', 'n', 'rack1-n', 'a'])}{str(rng.randrange(120)).zfill(rng.choice([1, 2, 3]))}"
                 for _ in range(rng.randrange(1, 30))}
        assert set(hostlist.expand(hostlist.compress(sorted(names)))) == names, sorted(names)
    assert hostlist.compress(["gpu01", "gpu02", "gpu03", "gpu07", "gpu10", "login1"]) == "gpu[01-03,07,10],login1"
    assert hostlist.compress(["n8", "n9", "n10"]) == "n[8-10]"


def test_percent_h_in_output_paths(monkeypatch, cli, tmp_path):
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "gpu07.cluster.local")
    assert expand_path("reports/%h.json") == "reports/gpu07.json"
    assert expand_path("r/%%h-%h.json") == "r/%h-gpu07.json" and expand_path("100%%/%h") == "100%/gpu07"
    for plain in ("a%%b.json", "x%d.json", "report.json", "%H.json"):   # no %h: used exactly as given
        assert expand_path(plain) == plain
    facts = tmp_path / "f.json"
    facts.write_text(json.dumps(node_facts("gpu07")))
    code, _, _ = cli("check", "--facts", str(facts), "-p", "autodl-a800", "--no-bench", "--format", "json",
                     "-o", str(tmp_path / "%h.json"))
    assert code == 0 and json.loads((tmp_path / "gpu07.json").read_text())["verdict"]["exit_code"] == 0


def prolog_script() -> str:
    return DOC.read_text().split("<!-- prolog:begin -->")[1].split("```bash\n")[1].split("```")[0]


def test_prolog_snippet_parses_and_drains_with_the_first_failing_check(tmp_path):
    script = tmp_path / "prolog.sh"
    script.write_text(prolog_script())
    assert subprocess.run(["bash", "-n", str(script)], check=False, capture_output=True, text=True).returncode == 0
    profile = tmp_path / "a800x8.yaml"
    profile.write_text(PROFILE)
    log = tmp_path / "scontrol.args"
    fake_scontrol = tmp_path / "scontrol"
    fake_scontrol.write_text(f"#!/bin/bash\nprintf '%s\\n' \"$@\" > {log}\n")
    fake_doctor = tmp_path / "doctor"   # the real doctor, judging the node's recorded facts instead of probing
    fake_doctor.write_text(f"#!/bin/bash\nexec {sys.executable} -m doctor \"$@\" --facts \"$NODE_FACTS\"\n")
    for f in (fake_scontrol, fake_doctor):
        f.chmod(0o755)
    env = {**os.environ, "DOCTOR": str(fake_doctor), "PYTHON": sys.executable, "SCONTROL": str(fake_scontrol),
           "DOCTOR_PROFILE": str(profile), "DOCTOR_REPORT_DIR": str(tmp_path / "log"), "SLURM_JOB_ID": "4242",
           "SLURMD_NODENAME": "gpu02", "PYTHONPATH": str(ROOT)}
    for host, expect_rc in (("gpu01", 0), ("gpu02", 1)):
        facts = tmp_path / f"{host}.facts.json"
        facts.write_text(json.dumps(FLEET[host]()))
        run = subprocess.run(["bash", str(script)], env={**env, "NODE_FACTS": str(facts)}, check=False,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == expect_rc, run.stderr
        assert log.exists() == (expect_rc == 1)
    args = log.read_text().splitlines()
    assert args[:3] == ["update", "nodename=gpu02", "state=drain"]
    assert re.fullmatch(r"reason=driver\.torch_cuda: driver 470\.182\.03 \(NVML: supports up to CUDA 11\.4\);"
                        r" torch 2\.9\.0\+cu128 is built .{20,}", args[3]) and len(args[3]) <= len("reason=") + 200
    assert list((tmp_path / "log").glob("*.4242.json")), "the report the reason was read from"


# ------------------------------------------------------------------------- reports doctor writes on this machine

def doctor_cmd() -> list[str]:
    return [sys.executable, "-m", "doctor"]


def env_without_slurm(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


@pytest.fixture(scope="module")
def probed_report(tmp_path_factory) -> Path:
    """`doctor check --profile cpu-ci --offline --format json` run for real on this machine (README's CI command),
    written through doctor's own `%h`."""
    folder = tmp_path_factory.mktemp("probed")
    run = subprocess.run([*doctor_cmd(), "check", "--profile", "cpu-ci", "--offline", "--format", "json",
                          "--output", "reports-%h.json"], cwd=folder, env=env_without_slurm(), capture_output=True,
                         text=True, timeout=300, check=False)
    found = list(folder.glob("reports-*.json"))
    assert run.returncode in (0, 1, 3) and len(found) == 1, run.stderr
    return found[0]


def test_merge_of_probed_reports_as_a_user_runs_it(probed_report, tmp_path):
    """Two nodes' real reports (the second a copy renamed, as another host would write it), merged by a separate
    `doctor merge` process: one row per node, the exit code the reports' verdicts give."""
    host = probed_report.stem.removeprefix("reports-")
    doc = json.loads(probed_report.read_text())
    other = {**doc, "facts": {**doc["facts"], "provenance": {**doc["facts"]["provenance"], "hostname": "peer9"}}}
    (tmp_path / "peer9.json").write_text(json.dumps(other))
    shutil.copy(probed_report, tmp_path / f"{host}.json")
    run = subprocess.run([*doctor_cmd(), "merge", *sorted(map(str, tmp_path.glob("*.json"))), "--expect", "3"],
                         env=env_without_slurm(), capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 1 and run.stderr == "", run.stderr   # a third node was expected and sent nothing
    rows = table(run.stdout)
    assert {r.split(".")[0] for r in rows} == {"node", host, "peer9"} and "(unnamed)  missing    × 1" in run.stdout
    assert "1 of the 3 expected nodes sent no report" in run.stdout
    assert rows["peer9"][0] == {0: "ready", 1: "not ready", 3: "undecided"}[doc["verdict"]["exit_code"]]


def test_merge_imports_no_torch(probed_report):
    """`doctor merge` is pure: no torch (nor numpy) among its imports, checked with -X importtime."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "doctor", "merge", str(probed_report)],
                         env=env_without_slurm(), capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode in (0, 1, 3), run.stderr
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in run.stderr.splitlines()
               if line.startswith("import time:")}
    assert "doctor" in modules and "json" in modules   # the listing is real
    assert not modules & {"torch", "numpy", "pynvml", "psutil"}, sorted(modules & {"torch", "numpy"})


def test_merged_output_is_scrubbed_of_secrets(merge, probed_report, tmp_path):
    token = "hf_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7"
    doc = json.loads(probed_report.read_text())
    doc["results"][0] = {**doc["results"][0], "status": "fail",
                         "summary": f"cannot read /home/u/.cache/hf?token={token} (HF_TOKEN={token})"}
    report = tmp_path / "leaky.json"
    report.write_text(json.dumps(doc))
    for fmt in ("console", "json", "junit"):
        code, out, _ = merge(report, "--format", fmt)
        assert code == 1 and "cannot read /home/u/.cache/hf?token=" in out and token not in out, fmt
    code, _, _ = merge(report, "--format", "json", "-o", tmp_path / "fleet.json")
    assert code == 1 and token not in (tmp_path / "fleet.json").read_text()


def doc_block(name: str) -> str:
    text = DOC.read_text()
    return text.split(f"<!-- {name}:begin -->")[1].split("```bash\n")[1].split("```")[0]


def stub_bin(folder: Path) -> Path:
    """PATH entries a Slurm node would have: `doctor` (this checkout), `srun` that runs its command once here
    (as on a one-node allocation), `torchrun` that records that it ran."""
    folder.mkdir()
    stubs = {
        "doctor": f'exec {sys.executable} -m doctor "$@"\n',
        "srun": 'while [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n',
        "torchrun": f'echo "$@" > {folder / "torchrun.args"}\n',
    }
    for name, body in stubs.items():
        (folder / name).write_text("#!/bin/bash\n" + body)
        (folder / name).chmod(0o755)
    return folder


def test_docs_slurm_blocks_run_as_printed(tmp_path):
    """docs/fleet.md's srun + merge block and its sbatch script, run with bash as printed (stubs for srun and
    torchrun only): the real doctor probes this machine, writes reports/<short host>.json via %h, and the merge
    lines read it; the sbatch script gates torchrun on the merge's exit code."""
    import socket

    short = socket.gethostname().split(".")[0]
    stubs = stub_bin(tmp_path / "bin")
    env = env_without_slurm(PATH=f"{stubs}:{os.environ['PATH']}", SLURM_JOB_NODELIST=short, SLURM_JOB_ID="77",
                            SLURM_NNODES="1")
    work = tmp_path / "job"
    work.mkdir()
    for name in ("fleet-run", "fleet-sbatch"):
        (tmp_path / f"{name}.sh").write_text(doc_block(name))
    run = subprocess.run(["bash", str(tmp_path / "fleet-run.sh")], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode in (0, 1, 3) and "Traceback" not in run.stderr, run.stderr
    report = work / "reports" / f"{short}.json"
    assert json.loads(report.read_text())["schema_version"].startswith("1.")
    assert run.stdout.count(f"doctor merge: 1 node report; 1 node expected (SLURM_JOB_NODELIST {short})") == 2
    suites = ET.parse(work / "fleet.xml").getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == [f"doctor:{short}"]
    run = subprocess.run(["bash", str(tmp_path / "fleet-sbatch.sh")], cwd=work, env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    fleet = json.loads((work / "reports" / "77.fleet.json").read_text())
    assert fleet["schema"] == "doctor.merge/1" and [n["name"] for n in fleet["nodes"]] == [short]
    ready = fleet["verdict"]["exit_code"] == 0
    assert run.returncode == (0 if ready else 1), run.stderr
    assert (stubs / "torchrun.args").exists() == ready
