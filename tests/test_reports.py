"""Report formats: JSON against the shipped schema (and mutated reports against it), JUnit, console."""
from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from importlib import resources

import jsonschema
import pytest
from factsbuilder import gpu_box
from referencing import Registry, Resource

from doctor.model import Remediation, Report, Result, Status
from doctor.render import console, json_report, junit


def schema(name):
    return json.loads(resources.files("doctor").joinpath("schemas", name).read_text())


@pytest.fixture(scope="module")
def validator():
    facts = schema("facts.schema.json")
    reg = Registry().with_resource(facts["$id"], Resource.from_contents(facts))
    return jsonschema.Draft202012Validator(schema("report.schema.json"), registry=reg)


@pytest.fixture
def report_json(cli, recorded, facts_file):
    code, out, _ = cli("check", "--profile", "autodl-a800", "--facts", facts_file(recorded), "--format", "json")
    assert code == 1
    return json.loads(out)


def test_json_report_validates_and_embeds_the_facts(report_json, validator, recorded):
    validator.validate(report_json)
    assert report_json["facts"]["torch"] == recorded["torch"]
    assert report_json["verdict"] == {"ready": False, "exit_code": 1, "strict": False,
                                      "summary": "2 failed, 1 warning — not ready for autodl-a800.",
                                      "counts": {"pass": 10, "warn": 1, "fail": 2, "skip": 32, "error": 0}}
    folded = [r for r in report_json["results"] if r.get("cause") == "no NVIDIA GPU"]
    assert len(folded) == 18 and all(r["status"] == "skip" for r in folded)


def test_recorded_and_literal_facts_validate_against_facts_schema(recorded):
    jsonschema.Draft202012Validator(schema("facts.schema.json")).validate(recorded)
    jsonschema.Draft202012Validator(schema("facts.schema.json")).validate(gpu_box(count=2))


@pytest.mark.parametrize("mutate", [
    lambda r: r["results"][0].update(status="passed"),
    lambda r: r["results"][0].pop("summary"),
    lambda r: r["results"][0].update(remediation={"text": "x"}),
    lambda r: r["verdict"].update(exit_code=2),
    lambda r: r.pop("facts"),
    lambda r: r["facts"].pop("schema_version"),
    lambda r: r["facts"]["gpu"]["devices"].append({"name": "x"}),
    lambda r: r.update(extra=1),
], ids=["bad-status", "no-summary", "bad-remediation", "bad-exit", "no-facts", "facts-no-version",
        "device-no-index", "extra-key"])
def test_mutated_reports_fail_validation(report_json, validator, mutate):
    bad = copy.deepcopy(report_json)
    mutate(bad)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)


def test_json_report_can_be_rejudged(cli, report_json, tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report_json))
    code, out, err = cli("check", "--profile", "cpu-ci", "--facts", str(path))
    assert code == 0 and "Ready for cpu-ci." in out


FIXED = Report("autodl-a800", ["autodl-a800"], [
    Result("gpu.present", Status.PASS, "found 1× NVIDIA A800-SXM4-80GB (driver 570.124.06, NVML)", duration_s=0.001),
    Result("gpu.memory", Status.WARN, "short", ("GPU 0: 40960 MiB",), Remediation("Use bigger GPUs.", ("nvidia-smi",))),
    Result("torch.cuda_build", Status.FAIL, "CPU-only build", (), Remediation("Install CUDA torch.", ("pip install torch",), "https://pytorch.org")),
    Result("gpu.bf16", Status.SKIP, "no workload"),
    Result("torch.arch_coverage", Status.ERROR, "no arch list"),
], facts={}, notes=["inspected Python: /x/python (doctor's own interpreter)"])

GOLDEN = """\
inspected Python: /x/python (doctor's own interpreter)
[✗] torch.cuda_build: CPU-only build
    → Install CUDA torch.
      $ pip install torch
[?] torch.arch_coverage: no arch list
[!] gpu.memory: short
    → Use bigger GPUs.
      $ nvidia-smi
[✓] 1 check passed (-v lists every check)
[-] gpu.bf16: no workload

1 failed, 1 could not be decided, 1 warning — not ready for autodl-a800.
"""

GOLDEN_VERBOSE = """\
inspected Python: /x/python (doctor's own interpreter)
[✓] gpu.present: found 1× NVIDIA A800-SXM4-80GB (driver 570.124.06, NVML)  (1.0 ms)
[!] gpu.memory: short  (0.0 ms)
      GPU 0: 40960 MiB
    → Use bigger GPUs.
      $ nvidia-smi
[✗] torch.cuda_build: CPU-only build  (0.0 ms)
    → Install CUDA torch.
      $ pip install torch
      https://pytorch.org
[-] gpu.bf16: no workload  (0.0 ms)
[?] torch.arch_coverage: no arch list  (0.0 ms)

1 failed, 1 could not be decided, 1 warning — not ready for autodl-a800.
"""


def test_console_golden_plain_text():
    import io

    buf = io.StringIO()
    console.render(FIXED, buf)
    assert buf.getvalue() == GOLDEN


def test_console_verbose_lists_every_check_in_profile_order():
    import io

    buf = io.StringIO()
    console.render(FIXED, buf, verbose=True)
    assert buf.getvalue() == GOLDEN_VERBOSE


def test_console_folds_skips_by_cause_and_passes_into_one_line():
    import io

    from doctor.model import skipped

    results = [Result(f"gpu.c{i}", Status.SKIP, f"no NVIDIA GPU (reason {i})", cause="no NVIDIA GPU") for i in range(7)]
    results += [Result("x.a", Status.PASS, "ok"), Result("x.b", Status.PASS, "ok"),
                Result("x.c", Status.SKIP, "offline"), Result("x.d", Status.SKIP, "offline"),
                Result("x.e", Status.SKIP, "own reason"), Result("x.f", Status.FAIL, "bad")]
    buf = io.StringIO()
    console.render(Report("p", ["p"], results, {}), buf)
    assert buf.getvalue().splitlines() == [
        "[✗] x.f: bad", "[✓] 2 checks passed (-v lists every check)", "[-] 7 checks skipped: no NVIDIA GPU",
        "[-] 2 checks skipped: offline", "[-] x.e: own reason", "", "1 failed — not ready for p."]
    assert skipped("s", cause="c").cause == "c"


def test_console_joins_checks_with_nothing_to_judge_to_the_passes_line():
    import io

    from doctor.model import NOT_ASKED

    idle = [Result(f"x.n{i}", Status.SKIP, f"profile sets no key {i}", cause=NOT_ASKED) for i in range(3)]
    with_pass = [*idle, Result("x.a", Status.PASS, "ok")]
    buf = io.StringIO()
    console.render(Report("p", ["p"], with_pass, {}), buf)
    assert buf.getvalue().splitlines()[0] == ("[✓] 1 check passed, 3 had nothing to judge in this profile "
                                              "(-v lists every check)")
    buf = io.StringIO()   # no pass to join: the skips keep their own line
    console.render(Report("p", ["p"], idle, {}), buf)
    assert buf.getvalue().splitlines()[0] == f"[-] 3 checks skipped: {NOT_ASKED}"


def test_console_colour_keeps_the_text():
    import io
    import re

    buf = io.StringIO()
    console.render(FIXED, buf, color=True)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", buf.getvalue())
    assert plain == GOLDEN and "\x1b[" in buf.getvalue()


def test_verdict_lines():
    ready = Report("a100-80g", ["a100-80g"], [Result("x.y", Status.PASS, "ok")], {})
    assert ready.verdict() == "Ready for a100-80g." and ready.exit_code == 0
    warn = Report("p", ["p"], [Result("x.y", Status.WARN, "hm")], {})
    assert warn.verdict() == "Ready for p. (1 warning)" and warn.exit_code == 0
    warn.strict = True
    assert warn.exit_code == 1
    err = Report("p", ["p"], [Result("x.y", Status.ERROR, "?")], {})
    assert err.exit_code == 3 and "could not decide" in err.verdict()


def test_junit_mapping():
    root = ET.fromstring(junit.render(FIXED))
    suite = root.find("testsuite")
    assert suite.get("tests") == "5" and suite.get("failures") == "1" and suite.get("errors") == "1"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["torch.cuda_build"].find("failure") is not None
    assert "pip install torch" in cases["torch.cuda_build"].find("failure").text
    assert cases["torch.arch_coverage"].find("error") is not None
    assert cases["gpu.bf16"].find("skipped") is not None
    warn = cases["gpu.memory"]
    assert warn.find("failure") is None and "WARNING: short" in warn.find("system-out").text
    assert list(cases["gpu.present"]) == []


def test_json_render_is_schema_valid_for_fixed_report(validator, recorded):
    FIXED.facts = recorded
    validator.validate(json.loads(json_report.render(FIXED)))


def test_live_run_on_this_machine_validates(validator):
    """The real probes on whatever runs the tests: on a machine without a driver this is the issue's
    'no NVIDIA driver' case (exit 1, plain message, torch facts carried)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "doctor", "check", "-p", "autodl-a800", "--format", "json"],
                          capture_output=True, text=True, timeout=180)
    report = json.loads(done.stdout)
    validator.validate(report)
    assert done.returncode == report["verdict"]["exit_code"] and "Traceback" not in done.stderr
    assert "installed" in report["facts"]["torch"]
    if not report["facts"]["gpu"]["available"]:
        assert done.returncode == 1
        present = next(r for r in report["results"] if r["id"] == "gpu.present")
        assert present["status"] == "fail" and present["summary"].startswith("no NVIDIA driver/GPU found")


def test_readme_example_report_is_a_fresh_run():
    """README.md's report block is what scripts/readme_report.py prints now (regenerate it when this fails)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "scripts" / "readme_report.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_status_order_and_the_one_fold():
    from doctor.model import fold

    order = sorted(Status, key=lambda s: s.severity)
    assert order == [Status.SKIP, Status.PASS, Status.WARN, Status.ERROR, Status.FAIL]
    assert fold([Status.PASS, Status.WARN, Status.SKIP]) is Status.WARN
    assert fold([Status.ERROR, Status.FAIL, Status.PASS]) is Status.FAIL
    assert fold([]) is Status.SKIP and fold([Status.SKIP, Status.PASS]) is Status.PASS
