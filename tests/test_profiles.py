"""Profiles: every shipped one validates; composition rules; bad input exits 2 with file and key path."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doctor.errors import InputError
from doctor.profile import available, load, merge_checks, pick_machine_profile

SHIPPED = sorted(available())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_validates_and_resolves(name, registry):
    profile = load([name], registry)
    assert profile.checks, name
    assert all(c["id"] in registry.checks for c in profile.checks)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_number_in_a_profile_cites_its_source(name):
    text = available()[name].read_text()
    for line in text.splitlines():
        key_value = line.split("#")[0]
        if key_value.lstrip().startswith("description:"):
            continue
        if re.search(r":\s*['\"]?\d", key_value) and "#" not in line:
            pytest.fail(f"{name}: number without a source comment: {line.strip()}")


def test_machine_plus_job_composes(registry):
    p = load(["autodl-a800", "qwen3-vl-32b-qlora"], registry)
    assert p.name == "autodl-a800 + qwen3-vl-32b-qlora" and p.kind == "machine"
    assert p.value("machine.gpu.models") == (True, ["A800 SXM4 80GB", "A800 PCIe 80GB"])
    assert p.value("job.workload.dtype") == (True, "bf16")
    assert [c["id"] for c in p.checks][:2] == ["gpu.present", "gpu.count"]


def test_checks_merge_by_id_later_wins_order_of_first_appearance():
    merged = merge_checks([{"id": "a"}, {"id": "b", "params": {"x": 1, "y": 2}}],
                          [{"id": "c"}, {"id": "b", "params": {"y": 3}, "severity": "warn"}])
    assert [c["id"] for c in merged] == ["a", "b", "c"]
    assert merged[1] == {"id": "b", "params": {"x": 1, "y": 3}, "severity": "warn"}


def test_extends_both_and_overrides(tmp_path, registry):
    f = tmp_path / "mine.yaml"
    f.write_text("kind: machine\nextends: [autodl-a800, qwen3-vl-32b-qlora]\n"
                 "machine: {gpu: {count: 2}}\nchecks:\n  - {id: gpu.model, severity: warn}\n"
                 "  - {id: gpu.arch, enabled: false}\n")
    p = load([str(f)], registry)
    assert p.value("machine.gpu.count") == (True, 2) and p.value("machine.gpu.models") == (True, ["A800 SXM4 80GB", "A800 PCIe 80GB"])
    assert p.value("job.workload.method") == (True, "qlora")
    ids = [c["id"] for c in p.checks]
    assert "gpu.arch" not in ids and ids.index("gpu.model") == 2


def test_severity_override_lowers_a_fail(tmp_path, registry):
    from factsbuilder import gpu_box

    from doctor.model import Status
    from doctor.runner import evaluate

    f = tmp_path / "lenient.yaml"
    f.write_text("extends: [autodl-a800]\nchecks:\n  - {id: gpu.model, severity: warn}\n")
    report = evaluate(gpu_box(name="NVIDIA A100-SXM4-80GB"), load([str(f)], registry), registry)
    r = next(r for r in report.results if r.check_id == "gpu.model")
    assert r.status is Status.WARN and "severity lowered" in r.summary


def test_extends_cycle_is_bad_input(tmp_path, registry):
    (tmp_path / "a.yaml").write_text(f"extends: [{tmp_path / 'b.yaml'}]\n")
    (tmp_path / "b.yaml").write_text(f"extends: [{tmp_path / 'a.yaml'}]\n")
    with pytest.raises(InputError, match="extends: cycle"):
        load([str(tmp_path / "a.yaml")], registry)


def test_auto_pick_machine_profile_never_a_job():
    assert pick_machine_profile(["NVIDIA A800-SXM4-80GB"]) == "a800-80g"  # generic, not the AutoDL box
    assert pick_machine_profile(["NVIDIA H100 80GB HBM3"]) == "h100-80g"
    assert pick_machine_profile(["NVIDIA GeForce RTX 4090 D"]) == "rtx4090-24g"
    assert pick_machine_profile(["Some Future GPU"]) is None
    assert pick_machine_profile([]) is None


@pytest.mark.parametrize("text,key,expected", [
    ("machine:\n  gpu:\n    cout: 2\n", "machine.gpu.cout", "did you mean 'count'"),
    ("machine: {gpu: {count: two}}\n", "machine.gpu.count", "expected a whole number"),
    ("machine: {gpu: {count: true}}\n", "machine.gpu.count", "expected a whole number"),
    ("job: {workload: {dtype: bf17}}\n", "job.workload.dtype", "expected one of fp32, fp16, bf16"),
    ("checks: [{id: gpu.modle}]\n", "checks[0].id", "did you mean 'gpu.model'"),
    ("checks: [{id: gpu.model, params: {modls: x}}]\n", "checks[0].params.modls", "did you mean 'models'"),
    ("machine: {gpu: {models: [H200]}}\n", "machine.gpu.models[0]", "is not a GPU in doctor's table"),
    ("checks: [{id: gpu.memory, params: {memory_gib: lots}}]\n", "checks[0].params.memory_gib", "expected a number"),
    ("checks: [{params: {}}]\n", "checks[0]", "missing 'id'"),
    ("extends: base\n", "extends", "expected a list"),
    ("- just\n- a list\n", "(top level)", "expected a mapping"),
])
def test_bad_profile_is_one_line_naming_file_and_key(tmp_path, cli, recorded, facts_file, text, key, expected):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    code, out, err = cli("check", "--profile", str(f), "--facts", facts_file(recorded))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"doctor: {f}: {key}: ")
    assert expected in err


# --- property-based: malformed YAML and malformed structures never give a traceback ---------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8))
trees = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=8), kids, max_size=3)), max_leaves=12)
profile_like = st.fixed_dictionaries({}, optional={
    "kind": trees, "extends": trees, "description": trees,
    "machine": st.one_of(trees, st.fixed_dictionaries({"gpu": st.dictionaries(
        st.sampled_from(["count", "model", "memory_gib", "arch", "cout", "required"]), trees, max_size=3)})),
    "job": trees,
    "checks": st.one_of(trees, st.lists(st.dictionaries(
        st.sampled_from(["id", "params", "severity", "enabled", "iid"]),
        st.one_of(trees, st.sampled_from(["gpu.model", "gpu.nope", "warn"])), max_size=3), max_size=3)),
    "bogus": trees})


def _judge_file(tmp_path, text, recorded_path):
    from doctor.cli import main
    import contextlib
    import io

    f = tmp_path / "fuzz.yaml"
    f.write_text(text)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["check", "--profile", str(f), "--facts", recorded_path])
    return f, code, err.getvalue()


RECORDED_PATH = str(Path(__file__).parent / "facts" / "cpu-container-no-gpu.json")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(profile_like)
def test_fuzzed_profile_structures(tmp_path, data):
    f, code, err = _judge_file(tmp_path, yaml.safe_dump(data), RECORDED_PATH)
    assert "Traceback" not in err
    if code == 2:
        assert err.count("\n") == 1 and err.startswith(f"doctor: {f}")
        assert re.match(rf"doctor: {re.escape(str(f))}: [^:]+: ", err), err  # names a key path
    else:
        assert code in (0, 1, 3) and err == ""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from(list("{}[]:-,'\"\t\n &*!|>%@`#abc12")), max_size=40))
def test_fuzzed_yaml_text(tmp_path, text):
    f, code, err = _judge_file(tmp_path, text, RECORDED_PATH)
    assert "Traceback" not in err
    assert code in (0, 1, 2, 3)
    if code == 2:
        assert err.count("\n") == 1 and err.startswith(f"doctor: {f}")


def test_a_profile_that_runs_no_check_is_refused_not_called_ready(tmp_path, capsys):
    from doctor.cli import main

    path = tmp_path / "job.yaml"
    path.write_text("kind: job\njob:\n  storage:\n    model: {path: /tmp, gib: 1000000}\n")
    assert main(["check", "--profile", str(path), "--offline", "--no-bench"]) == 2
    err = capsys.readouterr().err.strip()
    assert "checks: the profile runs no check" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("value", [-50, 100, 1000])
def test_a_percentage_parameter_outside_0_to_100_is_bad_input(tmp_path, registry, value):
    path = tmp_path / "p.yaml"
    path.write_text(f"kind: job\nextends: [base]\nchecks:\n  - id: vram.budget\n"
                    f"    params: {{headroom_pct: {value}}}\n")
    with pytest.raises(InputError) as exc:
        load([str(path)], registry)
    assert exc.value.key == "checks[0].params.headroom_pct"


def test_a_key_given_twice_in_a_profile_is_bad_input(tmp_path, registry):
    path = tmp_path / "p.yaml"
    path.write_text("kind: job\nextends: [base]\njob:\n  workload: {model: opt-125m}\n  workload: {model: opt-1.3b}\n")
    with pytest.raises(InputError) as exc:
        load([str(path)], registry)
    assert exc.value.key == "workload" and "lines 4 and 5" in exc.value.expected


def test_yaml_merge_keys_and_unhashable_keys_read_as_before(tmp_path, registry):
    """The duplicate-key check leaves YAML's merge key (<<) to the merge, and an unhashable key to SafeLoader's own
    one-line refusal (never an internal error)."""
    path = tmp_path / "p.yaml"
    path.write_text("kind: job\nextends: [base]\nx-common: &w {model: opt-125m, method: full}\n"
                    "job:\n  workload:\n    <<: *w\n    batch: 2\n")
    with pytest.raises(InputError) as exc:   # x-common is no profile key: the schema names it, after parsing
        load([str(path)], registry)
    assert "x-common" in str(exc.value) and "invalid YAML" not in str(exc.value)
    path.write_text("kind: job\n? [a, b]\n: 1\n")
    with pytest.raises(InputError) as exc:
        load([str(path)], registry)
    assert "unhashable" in str(exc.value)
