"""The CLI in-process with --facts: every exit code, the auto-picked profile, explain/checks/profiles."""
from __future__ import annotations

import json

import pytest
from factsbuilder import QWEN_QLORA_ENV, autodl_box, edit, gpu_box, nvml_device, torch_cuda

import doctor
from doctor.registry import discover


def test_exit_1_on_machine_without_driver(cli, recorded, facts_file):
    code, out, err = cli("check", "--profile", "autodl-a800", "--facts", facts_file(recorded))
    assert code == 1 and err == ""
    assert "[✗] gpu.present: no NVIDIA driver/GPU found" in out
    assert "[✗] memory.ram: 23.5 GiB effective; the profile expects 100 GiB" in out  # this machine, recorded
    assert "[!] network.hub: https://huggingface.co is unreachable" in out  # no DNS for it here
    assert out.rstrip().endswith("2 failed, 1 warning — not ready for autodl-a800.")


def test_exit_0_ready_on_matching_gpu(cli, facts_file):
    box = autodl_box(QWEN_QLORA_ENV, hf_home="/root/autodl-tmp/huggingface")  # literal A800, cu128 torch, 570 driver
    code, out, _ = cli("check", "-p", "autodl-a800", "-p", "qwen3-vl-32b-qlora", "--facts", facts_file(box))
    assert code == 0, out
    assert out.rstrip().endswith("Ready for autodl-a800 + qwen3-vl-32b-qlora.")


def test_h100_judged_by_autodl_a800_fails_on_model_only(cli, facts_file):
    dev = nvml_device(0, "NVIDIA H100 80GB HBM3", 81559, "9.0")
    h100 = autodl_box(name=dev["name"], total_mib=81559, cc="9.0", torch=torch_cuda(devices=[dev]))
    code, out, _ = cli("check", "-p", "autodl-a800", "--facts", facts_file(h100), "--format", "json")
    results = {r["id"]: r for r in json.loads(out)["results"]}
    failing = sorted(i for i, r in results.items() if r["status"] == "fail")
    assert code == 1 and failing == ["gpu.arch", "gpu.model"]  # the profile also states Ampere
    assert results["gpu.model"]["summary"] == "found 1× NVIDIA H100 80GB HBM3; profile expects A800 80GB"
    assert cli("check", "-p", "h100-80g", "--facts", facts_file(h100))[0] == 0


def test_no_profile_picks_the_matching_machine_profile(cli, facts_file, recorded):
    h100 = autodl_box(name="NVIDIA H100 80GB HBM3", total_mib=81559, cc="9.0")
    code, out, _ = cli("check", "--facts", facts_file(h100))
    assert code == 0 and "using 'h100-80g', the machine profile matching NVIDIA H100 80GB HBM3" in out
    code, out, _ = cli("check", "--facts", facts_file(recorded))
    assert code == 1 and "using 'base', the generic profile" in out


def test_strict_turns_warnings_into_exit_1(cli, facts_file):
    box = autodl_box(driver="535.54.03", max_cuda="12.2")  # cu128 torch via minor-version compatibility: warn
    assert cli("check", "-p", "autodl-a800", "--facts", facts_file(box))[0] == 0
    code, out, _ = cli("check", "-p", "autodl-a800", "--facts", facts_file(box), "--strict")
    assert code == 1 and "[!] driver.torch_cuda" in out


def test_exit_3_when_a_probe_failed_and_nothing_failed(cli, facts_file):
    box = autodl_box()
    del box["torch"]
    box["probes"]["torch"] = {"status": "timeout", "duration_s": 61.0, "message": "probe 'torch' did not finish within 60 s"}
    code, out, _ = cli("check", "-p", "autodl-a800", "--facts", facts_file(box))
    assert code == 3 and "[?] torch.installed: the torch probe failed" in out
    assert "could not decide" in out


def test_missing_section_in_old_snapshot_is_undecided(cli, facts_file):
    box = autodl_box()
    del box["torch"], box["probes"]["torch"]
    code, out, _ = cli("check", "-p", "autodl-a800", "--facts", facts_file(box))
    assert code == 3 and "[?] torch.installed: could not decide: the facts snapshot has no 'torch' section" in out


@pytest.mark.parametrize("content,expected", [
    ("not json", "invalid JSON"), ("[]", "expected a JSON object"),
    ('{"schema_version": "2.0"}', "this doctor reads schema 1.x"),
    ('{"schema_version": "1.0", "gpu": []}', "gpu: expected an object"),
])
def test_bad_facts_file_exit_2(cli, tmp_path, content, expected):
    f = tmp_path / "f.json"
    f.write_text(content)
    code, out, err = cli("check", "-p", "cpu-ci", "--facts", str(f))
    assert code == 2 and err.startswith(f"doctor: {f}") and expected in err and err.count("\n") == 1


def test_bad_usage_exit_2(cli, recorded, facts_file):
    assert cli("check", "-p", "no-such-profile", "--facts", facts_file(recorded))[0] == 2
    assert cli("check", "--facts", "/nonexistent.json")[0] == 2
    assert cli("explain", "gpu.modle")[0] == 2
    assert cli("profiles", "show")[0] == 2
    code, _, err = cli("check", "--format", "yaml")       # argparse's error: exit 2, one line, no usage dump
    assert code == 2 and err.count("\n") == 1 and "argument --format" in err


def test_output_file_and_junit(cli, recorded, facts_file, tmp_path):
    out_file = tmp_path / "r.xml"
    code, out, _ = cli("check", "-p", "autodl-a800", "--facts", facts_file(recorded), "--format", "junit",
                       "-o", str(out_file))
    assert code == 1 and "<failure" in out_file.read_text() and "not ready" in out


def test_verbose_shows_details_and_timings(cli, facts_file):
    code, out, _ = cli("check", "-p", "autodl-a800", "--facts", facts_file(gpu_box()), "-v")
    assert " ms)" in out and "GPU 0 (00000000:17:00.0" in out


def test_checks_explain_profiles(cli):
    code, out, _ = cli("checks")
    assert code == 0 and "gpu.model" in out and "torch.arch_coverage" in out
    code, out, _ = cli("explain", "driver.torch_cuda")
    assert code == 0 and "Why:" in out and "How to fix:" in out and "525.60.13" in out
    code, out, _ = cli("profiles")
    assert code == 0 and "autodl-a800" in out and "job" in out
    code, out, _ = cli("profiles", "show", "autodl-a800")
    assert code == 0 and "arch: Ampere" in out and "- id: gpu.present" in out


@pytest.mark.parametrize("check_id", sorted(discover().checks))
def test_every_check_documents_what_why_fix(check_id):
    doc = discover().checks[check_id].doc
    assert doc["what"] and doc.get("why") and doc.get("fix"), check_id


def test_python_api_gate(recorded):
    with pytest.raises(doctor.NotReady) as exc:
        doctor.preflight("autodl-a800", "qwen3-vl-32b-qlora", facts=recorded)
    assert exc.value.report.exit_code == 1 and "gpu.present" in str(exc.value)
    report = doctor.preflight("autodl-a800", "qwen3-vl-32b-qlora",
                              facts=autodl_box(QWEN_QLORA_ENV, hf_home="/root/autodl-tmp/huggingface"))
    assert report.ready
    from doctor.errors import InputError

    with pytest.raises(InputError):
        doctor.preflight("nope", facts=recorded)


def test_internal_error_is_one_line_not_a_traceback(cli, recorded, facts_file, monkeypatch):
    import doctor.runner

    monkeypatch.setattr(doctor.runner, "judge", lambda *a, **k: 1 / 0)
    code, out, err = cli("check", "-p", "cpu-ci", "--facts", facts_file(recorded))
    assert code == 3 and "internal error: ZeroDivisionError" in err and "Traceback" not in err


def test_a_crashing_check_is_an_error_not_a_pass(registry, recorded):
    from doctor.model import Status
    from doctor.profile import load
    from doctor.runner import run_check

    broken = edit(recorded, "gpu.devices holds a non-object", gpu={**recorded["gpu"], "devices": [None]})
    result = run_check(registry.checks["gpu.model"], {"id": "gpu.model"}, broken, load(["autodl-a800"], registry))
    assert result.status is Status.ERROR and "check crashed" in result.summary


def test_python_flag_errors_are_bad_usage(cli, recorded, facts_file, tmp_path):
    code, _, err = cli("check", "-p", "cpu-ci", "--facts", facts_file(recorded), "--python", "/usr/bin/python3")
    assert code == 2 and "--python: has no effect with --facts" in err
    plain = tmp_path / "notpython"
    plain.write_text("")
    code, _, err = cli("check", "-p", "cpu-ci", "--python", str(plain))
    assert code == 2 and "is not executable" in err and err.count("\n") == 1
