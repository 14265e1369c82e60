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


def test_a_contradiction_across_extends_is_not_judged(tmp_path, registry, monkeypatch):
    monkeypatch.chdir(tmp_path)   # ./parent.yaml is not in the working directory
    r = _budget(tmp_path, registry, {"fsdp": "full"},
                parent={"model": "opt-1.3b", "method": "full", "zero_stage": 3, "world_size": 8})
    assert r.status is Status.ERROR and r.summary.startswith("could not decide: job.workload.fsdp: full:"), r.summary
    r = _budget(tmp_path, registry, {"method": "inference"},
                parent={"model": "opt-1.3b", "method": "full", "zero_stage": 3, "world_size": 8})
    assert r.status is Status.ERROR and "job.workload.method: inference" in r.summary, r.summary


def test_lora_targets_that_match_nothing_fail_and_images_on_a_text_model_are_not_judged(tmp_path, registry):
    r = _budget(tmp_path, registry, {"model": "opt-1.3b", "method": "lora", "lora_targets": "nonexistent"})
    assert r.status is Status.FAIL and "matches no linear module" in r.summary, r.summary
    r = _budget(tmp_path, registry, {"model": "opt-1.3b", "method": "full", "images_per_sample": 3})
    assert r.status is Status.ERROR and "job.workload.images_per_sample: 3" in r.summary, r.summary
