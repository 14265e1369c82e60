"""Regressions for what the hostile-input review of the newer surfaces found (hybrid Mamba configs, `doctor baseline
capture`, the --simulate parent, the library-version flags): each input once gave a traceback-class failure
("internal error"), a hang, a silent wrong action or a profile a report could write keys into."""
from __future__ import annotations

import json
import os
import shlex
import time

import pytest

from doctor.errors import InputError
from doctor.vram import versions
from doctor.vram.arch import from_config

BAMBA = {"model_type": "bamba", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 5,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "attn_layer_indices": [1, 3],
         "mamba_n_heads": 8, "mamba_d_state": 16, "mamba_n_groups": 2}
GRANITE = {"model_type": "granitemoehybrid", "hidden_size": 64, "shared_intermediate_size": 96, "num_hidden_layers": 4,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "num_local_experts": 0,
           "mamba_n_heads": 8, "mamba_d_state": 16, "mamba_n_groups": 2}
NEMOTRON = {"model_type": "nemotron_h", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 100, "mamba_num_heads": 8, "mamba_head_dim": 16,
            "ssm_state_size": 16, "n_groups": 2}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "internal error" not in err and "Traceback" not in err, err
    return lines[0]


# --- hybrid configs ---------------------------------------------------------------------------------------------


def test_bamba_attention_layers_are_the_listed_indices_inside_the_model_whatever_the_depth():
    """BambaConfig: layer i is attention when `i in attn_layer_indices`; out-of-range, negative and repeated indices
    name no layer. A 10**9-layer config was a 10**9-step loop (a hang)."""
    assert from_config(dict(BAMBA, attn_layer_indices=[1, 1, 3, -1, 99])).attention_layers == 2
    t0 = time.perf_counter()
    arch = from_config(dict(BAMBA, num_hidden_layers=10**9, attn_layer_indices=[0, 5, 10**10, -3]))
    assert time.perf_counter() - t0 < 1.0
    assert (arch.layers, arch.attention_layers) == (10**9, 2)


def test_granite_without_layer_types_is_all_mamba_without_building_a_list_per_layer():
    """GraniteMoeHybridConfig: no layer_types means all Mamba; [\"mamba\"] * 10**10 was a MemoryError (or 80 GB)."""
    t0 = time.perf_counter()
    arch = from_config(dict(GRANITE, num_hidden_layers=10**10))
    assert time.perf_counter() - t0 < 1.0
    assert (arch.layers, arch.attention_layers) == (10**10, 0)
    assert from_config(dict(GRANITE, layer_types=["mamba", "attention"] * 2)).attention_layers == 2


@pytest.mark.parametrize("cfg, key", [
    (dict(NEMOTRON, layer_types=[]), "layer_types"),                        # was "ValueError: max() arg is ..."
    (dict(BAMBA, mamba_n_heads=0), "mamba_n_heads"),                         # was "ZeroDivisionError"
])
def test_hybrid_configs_that_name_no_layer_or_no_head_are_refused_naming_the_key(cfg, key):
    with pytest.raises(InputError) as exc:
        from_config(cfg, source="config.json")
    assert exc.value.key == key and "Error" not in str(exc.value)


# --- library versions -------------------------------------------------------------------------------------------


def test_a_version_past_int_digits_is_not_a_version(cli):
    """packaging raises ValueError (not InvalidVersion) for a release number of 5000 digits."""
    with pytest.raises(InputError):
        versions.check("--transformers-version", "9" * 5000)
    code, _, err = cli("estimate", "--offline", "--model", "opt-125m", "--transformers-version", "9" * 5000)
    assert code == 2 and "is not a version; expected a PEP 440 version" in one_line(err)


# --- reading files ----------------------------------------------------------------------------------------------


def test_a_directory_where_a_file_belongs_is_bad_input(cli, tmp_path):
    """os.fdopen refuses a directory with IsADirectoryError before the S_ISREG test: was an internal error."""
    code, _, err = cli("check", "--facts", str(tmp_path), "-p", "base")
    assert code == 2 and one_line(err) == f"doctor: {tmp_path}: is a directory; expected a `doctor facts` snapshot " \
                                          "(JSON) file"
    code, _, err = cli("baseline", "capture", "--from-report", str(tmp_path), "-o", str(tmp_path / "b.yaml"))
    assert code == 2 and f"{tmp_path}: is a directory" in one_line(err)


# --- baseline capture ---------------------------------------------------------------------------------------------


@pytest.fixture
def report(cli, tmp_path):
    """A real `doctor check --format json` report (a GPU node's recorded facts, no bench section)."""
    from factsbuilder import autodl_box

    facts = autodl_box()
    facts["provenance"]["hostname"] = "gpu01"
    src, out = tmp_path / "gpu01.facts.json", tmp_path / "gpu01.json"
    src.write_text(json.dumps(facts))
    code, _, err = cli("check", "--facts", str(src), "-p", "base", "--format", "json", "--output", str(out))
    assert code == 0, err
    return out


def test_capture_to_an_unwritable_place_is_one_line(cli, report):
    code, _, err = cli("baseline", "capture", "--from-report", str(report), "-o", "/proc/doctor-test.yaml")
    assert code == 2 and one_line(err).startswith("doctor: /proc/doctor-test.yaml: cannot write the profile (")


def test_capture_never_renames_over_a_fifo_or_device_even_with_force(cli, report, tmp_path):
    fifo = tmp_path / "out.yaml"
    os.mkfifo(fifo)
    code, _, err = cli("baseline", "capture", "--from-report", str(report), "-o", str(fifo), "--force")
    assert code == 2 and "is not a regular file" in one_line(err)
    assert fifo.is_fifo()


def test_an_empty_from_report_is_bad_input_not_a_check_of_this_node(cli, tmp_path):
    """`--from-report ''` was falsy: capture probed this node and wrote its baseline instead."""
    code, _, err = cli("baseline", "capture", "--from-report", "", "-o", str(tmp_path / "b.yaml"))
    assert code == 2 and "--from-report: is empty" in one_line(err)
    assert not (tmp_path / "b.yaml").exists()


def test_a_report_cannot_write_keys_into_the_profile_through_its_created_time(cli, report, tmp_path):
    data = json.loads(report.read_text())
    data["created"] = "2026-11-28T00:00:00+00:00\nchecks: [{id: gpu.count, params: {count: 1}}]"
    report.write_text(json.dumps(data))
    out = tmp_path / "site.yaml"
    code, _, err = cli("baseline", "capture", "--from-report", str(report), "-o", str(out))
    assert code == 0, err
    text = out.read_text()
    assert [ln for ln in text.splitlines() if "params: {count: 1}" in ln] == \
        [ln for ln in text.splitlines() if ln.startswith("# Source:")]


def test_the_printed_check_command_survives_a_path_with_spaces_and_quotes(cli, report, tmp_path):
    folder = tmp_path / "a b'$(x)"
    folder.mkdir()
    out = folder / "site baseline.yaml"
    code, stdout, err = cli("baseline", "capture", "--from-report", str(report), "-o", str(out))
    assert code == 0, err
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("check a node against it: doctor check --profile ")
    assert shlex.split(last.split(": ", 1)[1]) == ["doctor", "check", "--profile", str(out)]


# --- the --simulate parent ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer, says", [
    ({"ok": True}, "peak_bytes None; expected a whole number of bytes"),
    ({"ok": True, "peak_bytes": 1.5}, "peak_bytes 1.5"),
    ({"ok": True, "peak_bytes": 10, "by_category": "abc"}, "by_category 'abc'"),
    ({"ok": True, "peak_bytes": 10, "seconds": "x"}, "seconds 'x'; expected a JSON dict"),
    ({"ok": True, "peak_bytes": 10, "notes": [1]}, "notes [1]; expected a list of strings"),
])
def test_a_malformed_child_answer_is_a_finding_not_an_internal_error(tmp_path, capsys, answer, says):
    from doctor.vram.catalogue import resolve
    from doctor.vram.estimator import Workload, estimate
    from doctor.vram.simulate import render, simulate

    child = tmp_path / "child.py"
    child.write_text(f"print({json.dumps(json.dumps(answer))})\n")
    arch, wl = resolve("opt-125m"), Workload(method="inference", batch=1, seq=8)
    sim = simulate({}, arch, wl, estimate(arch, wl), timeout_s=30, script=child)
    assert not sim.ok and sim.reason.startswith("not simulated: the simulation process answered ")
    assert says in sim.reason
    render(sim)
    assert "simulation: not simulated" in capsys.readouterr().out


@pytest.mark.parametrize("as_json", [False, True])
def test_an_unmodelled_model_without_a_simulation_exits_2_with_one_stderr_line(capsys, as_json):
    """Exit 2 printed its finding on stdout only (the contract: one line on stderr naming the file and why)."""
    from doctor.vram.estimator import Workload
    from doctor.vram.simulate import Simulation, report_alone

    sim = Simulation(False, reason="not simulated: did not finish in 1 s (killed); raise --simulate-timeout",
                     stage="timeout", timed_out=True)
    why = "c.json: model_type: is 'gpt2'; doctor estimate models opt, llama"
    assert report_alone("c.json", "c.json", why, Workload(), sim, as_json=as_json) == 2
    assert one_line(capsys.readouterr().err) == f"doctor: {why}; and no simulation: {sim.reason}"


def test_control_characters_of_a_name_or_a_report_never_make_the_profile_unreadable(cli, report, tmp_path):
    """YAML refuses ESC, NUL, DEL, C1 and lone surrogates in a file: --name or the report's hostname and GPU name
    carrying one made the written profile fail its own load (exit 2 naming a temporary file)."""
    data = json.loads(report.read_text())
    data["facts"]["provenance"]["hostname"] = "gpu\x1b01\x00"
    data["facts"]["gpu"]["devices"][0]["name"] = "NVIDIA A800-SXM4-80GB\x7f\x85\ud800"
    report.write_text(json.dumps(data))
    out = tmp_path / "site.yaml"
    code, _, err = cli("baseline", "capture", "--from-report", str(report), "-o", str(out), "--name", "lab\x1b[31m\x00")
    assert code == 0, err
    code, _, err = cli("profiles", "show", str(out))
    assert code == 0, err


@pytest.mark.parametrize("key, value", [("gpu", 3), ("bench", "x")])
def test_devices_that_are_not_a_list_are_bad_input_naming_the_key(cli, report, tmp_path, key, value):
    data = json.loads(report.read_text())
    data["facts"].setdefault("bench", {"status": "ok", "devices": []})
    data["facts"][key]["devices"] = value
    report.write_text(json.dumps(data))
    code, _, err = cli("baseline", "capture", "--from-report", str(report), "-o", str(tmp_path / "b.yaml"))
    assert code == 2 and one_line(err) == f"doctor: {report}: facts.{key}.devices: is {value!r}; expected a list " \
                                          "of devices"


@pytest.mark.parametrize("section", ["matmul", "hvp"])
def test_a_bench_figure_section_of_another_type_is_not_measured(section):
    """figure() called .get on whatever the report held there: an internal error for a list."""
    from doctor.fleet.baseline import figure

    assert figure({section: [1]}, "matmul_fp16_tflops" if section == "matmul" else "hvp_per_s") is None


@pytest.mark.parametrize("stage, edit", [
    ("matmul", lambda d: d.__setitem__("matmul", {"fp16": {"tflops": 280.0}})),
    ("hvp", lambda d: d.__setitem__("hvp", {"transformer": {}})),
])
def test_bench_figures_missing_inner_keys_are_undecided_not_crashed(stage, edit):
    """Facts that pass the schema but lack a figure's inner keys: the GPU is 'could not decide', never a crash."""
    from test_baseline import a800_node

    from doctor.checks.bench import bench_hvp, bench_matmul
    from doctor.model import Status

    facts = a800_node()
    edit(facts["bench"]["devices"][1])
    r = (bench_matmul if stage == "matmul" else bench_hvp)(facts)
    assert r.status is Status.ERROR, r.summary
    assert "could not decide" in r.summary and f"the {stage} figures are incomplete" in r.summary
