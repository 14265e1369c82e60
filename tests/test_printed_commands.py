"""Every `doctor ...` command doctor prints runs as printed, and an estimate it proposes keeps the job's workload
(batch, sequence, method, ...) and changes only what the remedy says."""
from __future__ import annotations

import json
import shlex
from typing import Any

import pytest
from factsbuilder import QWEN_QLORA_ENV, autodl_box

from doctor.cli import main
from doctor.profile import load
from doctor.runner import evaluate
from doctor.vram.workload import to_flags, workload_from_job

SEEDS = ["qwen3-vl-32b-qlora", "qwen3-vl-32b-awq-inference", "opt-hessian", "mamba-7b-zero2", "nanochat-d12-32g",
         "nanochat-d20-32g"]


def printed(facts: dict[str, Any], refs: list[str], registry: Any) -> list[tuple[str, str]]:
    out = []
    for r in evaluate(facts, load(refs, registry), registry).results:
        for command in (r.remediation.commands if r.remediation else ()):
            if command.startswith("doctor "):
                out.append((r.check_id, command))
    return out


def small_box() -> dict[str, Any]:
    """A 24 GB GPU, a short system disk and a big HF cache on it: the VRAM and disk remedies both fire."""
    return autodl_box(packages=QWEN_QLORA_ENV, name="NVIDIA GeForce RTX 4090", total_mib=24564, cc="8.9")


@pytest.mark.parametrize("job", SEEDS)
def test_printed_estimates_keep_the_jobs_workload(job, registry, capsys):
    commands = [c for cid, c in printed(small_box(), ["rtx4090-24g", job], registry) if c.startswith("doctor estimate")]
    if not commands:
        pytest.skip(f"{job} fits or has no estimate remedy on this box")
    model, base = workload_from_job(load([job], registry).data["job"])
    prefix = f"doctor estimate {to_flags(model, base)} "
    fields = {"batch": "batch", "seq": "seq", "grad_accum": "grad_accum", "grad_checkpointing": "checkpointing",
              "method": "method", "lora_rank": "lora_rank", "double_quant": "double_quant", "optimizer": "optimizer",
              "quant": "quant", "attention": "attention", "images": "images", "context": "context"}
    for command in commands:
        assert command.startswith(prefix), (command, prefix)          # the job's own workload first, unchanged
        changed = {fields.get(a.lstrip("-").replace("-", "_")) for a in shlex.split(command[len(prefix):])
                   if a.startswith("--")}
        assert changed - {None}, command                                # and then exactly one proposed change
        code = main(shlex.split(command)[1:] + ["--format", "json"])
        out = capsys.readouterr()
        assert code in (0, 1), (command, out.err)
        workload = json.loads(out.out)["workload"]
        for key, value in base.items():
            if key not in changed and not (key == "context" and "seq" in changed):
                assert workload[key] == value, (command, key, workload[key], value)


def test_every_printed_doctor_command_parses_and_runs(registry, tmp_path, capsys, monkeypatch):
    """gpu.model's `doctor check`, the disk checks' `doctor clean-cache ...` (run as a dry run against an empty
    cache), vram.budget's `doctor estimate ...`: none is bad usage (exit 2) or an internal error."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub").mkdir()
    seen = set()
    for refs in (["rtx4090-24g", "qwen3-vl-32b-qlora"], ["h100-80g", "opt-hessian"], ["autodl-a800", "qwen3-vl-32b-qlora"]):
        for check_id, command in printed(small_box(), refs, registry):
            argv = shlex.split(command)[1:]
            if argv[0] == "clean-cache":
                argv += ["--dry-run", "--cache-dir", str(tmp_path / "hub")]
            if argv[0] == "check":
                argv += ["--offline", "--no-bench", "--timeout", "20"]
            code = main(argv)
            err = capsys.readouterr().err
            assert code in (0, 1, 3) and "internal error" not in err, (check_id, command, err)
            seen.add(argv[0])
    assert {"estimate", "check"} <= seen
