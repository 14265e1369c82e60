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


def _flags(args: list[str]) -> dict[str, str | None]:
    """{flag: value (None for a switch)} of `doctor estimate` arguments."""
    out: dict[str, str | None] = {}
    for i, a in enumerate(args):
        if a.startswith("--"):
            nxt = args[i + 1] if i + 1 < len(args) else None
            out[a] = nxt if nxt is not None and not nxt.startswith("--") else None
    return out


@pytest.mark.parametrize("job", SEEDS)
def test_printed_estimates_keep_the_jobs_workload(job, registry, capsys):
    commands = [c for cid, c in printed(small_box(), ["rtx4090-24g", job], registry) if c.startswith("doctor estimate")]
    if not commands:
        pytest.skip(f"{job} fits or has no estimate remedy on this box")
    model, base = workload_from_job(load([job], registry).data["job"])
    own = _flags(shlex.split(to_flags(model, base)))
    fields = {"batch": "batch", "seq": "seq", "grad_accum": "grad_accum", "grad_checkpointing": "checkpointing",
              "method": "method", "lora_rank": "lora_rank", "double_quant": "double_quant", "optimizer": "optimizer",
              "quant": "quant", "attention": "attention", "images": "images", "context": "context",
              "amp": "amp", "no_amp": "amp"}
    for command in commands:
        args = shlex.split(command)[2:]
        given = [a for a in args if a.startswith("--")]
        assert len(given) == len(set(given)), command                   # no flag twice
        flags = _flags(args)
        changed = {fields.get(f.lstrip("-").replace("-", "_")) for f, v in flags.items() if own.get(f, "?") != v}
        assert changed - {None}, command                                # the proposed change
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


def test_estimate_command_replaces_the_jobs_flags_instead_of_repeating_them():
    from doctor.vram.workload import estimate_command

    fields = {"method": "full", "zero": 2, "offload_optimizer": "cpu", "amp": False, "optimizer": "adamw",
              "ds_knobs": {"version": "0.16.4"}}
    cmd = estimate_command("llama-2-7b", fields, "--zero 3 --offload-optimizer nvme")
    args = shlex.split(cmd)
    assert args.count("--zero") == 1 and args[args.index("--zero") + 1] == "3"
    assert args.count("--offload-optimizer") == 1 and "--deepspeed-version" in args
    assert "--no-amp" not in shlex.split(estimate_command("llama-2-7b", fields, "--amp"))
    assert estimate_command("m", {"batch": 2}) == "doctor estimate --model m --batch 2"


def test_memory_ram_commands_carry_the_facts_versions_and_reproduce_its_figures(registry, capsys, tmp_path):
    """Llama-2-7B bf16 under ZeRO-2 optimizer offload on the AutoDL box with DeepSpeed 0.16.4 installed: each
    printed estimate gives the CPU RAM (plus the process allowance) and GPU figures the remedy states."""
    import re

    (tmp_path / "ds.json").write_text(json.dumps({
        "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 4, "bf16": {"enabled": True},
        "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}))
    (tmp_path / "job.yaml").write_text(
        "kind: job\nextends: [base]\njob:\n  workload: {model: llama-2-7b, method: full, dtype: bf16, batch: 4, "
        "grad_accum: 4, sequence: 1024, world_size: 1, optimizer: adamw, gradient_checkpointing: true}\n"
        "  deepspeed: {config: ds.json}\n")
    facts = autodl_box(packages={"deepspeed": "0.16.4", "transformers": "4.57.1"})
    rep = evaluate(facts, load(["autodl-a800", str(tmp_path / "job.yaml")], registry), registry)
    ram = {r.check_id: r for r in rep.results}["memory.ram"]
    commands = [c for c in ram.remediation.commands if c.startswith("doctor estimate")]
    assert commands
    for command in commands:
        args = shlex.split(command)
        assert "--deepspeed-version" in args and args[args.index("--deepspeed-version") + 1] == "0.16.4"
        given = [a for a in args if a.startswith("--")]
        assert len(given) == len(set(given)), command
    text = ram.remediation.text
    for command in commands:
        assert main(shlex.split(command)[1:] + ["--format", "json"]) in (0, 1)
        out = json.loads(capsys.readouterr().out)
        cpu = (out["cpu"]["per_node_bytes"] + 4 * 2**30) / 2**30
        assert f"{cpu:.1f} GiB CPU per node" in text, (command, cpu, text)
        if "GPU" in text and re.search(r"GPU \d", text):
            assert f"GPU {out['peak_bytes'] / 2**30:.1f} GiB per rank" in text, (command, text)
