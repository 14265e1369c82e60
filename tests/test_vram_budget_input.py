"""vram.budget judges only a workload `doctor estimate` would accept: a contradiction the merged profile makes
(parent and child), LoRA targets that match nothing, images for a text model. And `extends` reads a relative
parent from the profile's own folder."""
from __future__ import annotations

import json

from factsbuilder import autodl_box

from doctor.model import Status
from doctor.profile import load
from doctor.runner import evaluate


def _budget(tmp_path, registry, workload: dict, parent: dict | None = None):
    sub = tmp_path / "jobs"
    sub.mkdir(exist_ok=True)
    extends = ["base"]
    if parent is not None:
        (sub / "parent.yaml").write_text(json.dumps({"kind": "job", "job": {"workload": parent}}))
        extends.append("./parent.yaml")   # beside the child, not in the working directory
    (sub / "job.yaml").write_text(json.dumps({"kind": "job", "extends": extends, "job": {"workload": workload}}))
    rep = evaluate(autodl_box(), load(["autodl-a800", str(sub / "job.yaml")], registry), registry)
    return {r.check_id: r for r in rep.results}["vram.budget"]


def test_a_contradiction_across_extends_is_bad_input_and_a_completed_parent_is_not(tmp_path, registry,
                                                                                   monkeypatch):
    """The merged workload is checked (a child's key may complete or contradict its parent's): ZeRO-3 in the parent
    and FSDP in the child is refused naming the key; gpus_per_node 4 under a parent's world_size 8 is valid."""
    import pytest

    from doctor.errors import InputError

    monkeypatch.chdir(tmp_path)   # ./parent.yaml is not in the working directory
    parent = {"model": "opt-1.3b", "method": "full", "zero_stage": 3, "world_size": 8}
    for child, key in (({"fsdp": "full"}, "job.workload.fsdp"), ({"method": "inference"}, "job.workload.method")):
        with pytest.raises(InputError) as exc:
            _budget(tmp_path, registry, child, parent=parent)
        assert exc.value.key == key, exc.value
    r = _budget(tmp_path, registry, {"gpus_per_node": 4}, parent=parent)
    assert r.status is not Status.ERROR or "gpus_per_node" not in r.summary, r.summary


def test_lora_targets_that_match_nothing_fail_and_images_on_a_text_model_are_not_judged(tmp_path, registry):
    r = _budget(tmp_path, registry, {"model": "opt-1.3b", "method": "lora", "lora_targets": "nonexistent"})
    assert r.status is Status.FAIL and "matches no linear module" in r.summary, r.summary
    r = _budget(tmp_path, registry, {"model": "opt-1.3b", "method": "full", "images_per_sample": 3})
    assert r.status is Status.ERROR and "job.workload.images_per_sample: 3" in r.summary, r.summary


def test_printed_commands_name_a_config_beside_the_profile_by_its_absolute_path(tmp_path, registry, monkeypatch,
                                                                               capsys):
    import shlex
    from importlib import resources

    from doctor.cli import main

    sub = tmp_path / "jobs"
    sub.mkdir()
    (sub / "config.json").write_text(resources.files("doctor").joinpath("data", "models", "opt-1.3b.json")
                                     .read_text())
    (sub / "job.yaml").write_text(json.dumps({"kind": "job", "extends": ["base"], "job": {
        "workload": {"model": "./config.json", "method": "full", "batch": 8, "sequence": 2048}}}))
    monkeypatch.chdir(tmp_path)
    facts = autodl_box(name="NVIDIA GeForce RTX 4090", total_mib=24564, cc="8.9")
    rep = evaluate(facts, load(["autodl-a800", "jobs/job.yaml"], registry), registry)
    r = {x.check_id: x for x in rep.results}["vram.budget"]
    commands = [c for c in r.remediation.commands if c.startswith("doctor estimate")]
    assert commands, r.summary
    monkeypatch.chdir("/")   # another folder: the command still finds the config
    for command in commands:
        args = shlex.split(command)
        assert args[args.index("--model") + 1] == str(sub / "config.json")
        assert main(args[1:]) in (0, 1), capsys.readouterr().err


def test_a_token_budget_sets_the_gradient_accumulation():
    """nanochat: grad_accum_steps = total_batch_size // (device_batch_size x max_seq_len x world_size); seed 003's
    d20 run (86016 = 14 x 3072 x 2) accumulates 2 micro-batches, whose gradients then persist."""
    from doctor.vram.workload import workload_from_job

    job = {"workload": {"depth": 20, "batch": 14, "sequence": 3072, "total_batch_size": 86016}}
    assert workload_from_job(job)[1]["grad_accum"] == 2
    assert "grad_accum" not in workload_from_job({"workload": {**job["workload"], "total_batch_size": 86017}})[1]
    assert workload_from_job({"workload": {**job["workload"], "grad_accum": 3}})[1]["grad_accum"] == 3


def test_errors_name_the_profile_key_or_the_file_not_a_flag_nobody_typed(tmp_path, capsys):
    from doctor.cli import main

    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({"kind": "job", "extends": ["base"], "machine": {"gpu": {"name": "NoSuchGPU 9000"}},
                               "job": {"workload": {"model": "opt-125m", "method": "full"}}}))
    assert main(["estimate", "--profile", str(job)]) == 2
    err = capsys.readouterr().err
    assert f"{job}: machine.gpu.name: NoSuchGPU 9000" in err and "--gpu" not in err.split("expected")[0], err
    # a --zero below 3 over a ZeRO-3 file drops the file's offload_param, as DeepSpeed ignores it there
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"},
                                                    "offload_optimizer": {"device": "cpu"}}}))
    assert main(["estimate", "--model", "opt-125m", "--deepspeed-config", str(ds), "--zero", "2"]) in (0, 1)
    assert "ZeRO-2, optimizer offload to cpu" in capsys.readouterr().out.replace("\n", " ")


def test_an_image_side_the_processor_never_gives_is_refused(capsys):
    """Qwen's smart_resize makes both sides multiples of patch x merge (32 for Qwen3-VL): a 20 px side is no
    resized image (it gave '0 tokens each')."""
    from doctor.cli import main

    argv = ["estimate", "--model", "qwen3-vl-32b-instruct", "--method", "qlora", "--images", "1"]
    assert main(argv + ["--image-size", "20"]) == 2
    assert "--image-size: 20:" in capsys.readouterr().err
    assert main(argv + ["--image-size", "640"]) in (0, 1)


def test_a_flag_that_changes_nothing_is_said(capsys):
    from doctor.cli import main

    assert main(["estimate", "--model", "opt-125m", "--method", "full", "--lora-rank", "8", "--no-zero-init",
                 "--gpu", "A100 80GB", "--gpu-memory", "8GiB", "--format", "json"]) in (0, 1)
    notes = json.loads(capsys.readouterr().out)["notes"]
    for flag in ("--lora-rank", "--no-zero-init", "--gpu"):
        assert any(n.startswith(f"{flag} changes nothing here") for n in notes), (flag, notes)
    assert main(["estimate", "--model", "opt-125m", "--method", "lora", "--lora-rank", "8", "--format",
                 "json"]) in (0, 1)
    assert not any("changes nothing" in n for n in json.loads(capsys.readouterr().out)["notes"])
