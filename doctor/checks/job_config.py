"""The job's own configuration: its DeepSpeed JSON and its batch arithmetic."""
from __future__ import annotations

import json
from typing import Any

from doctor.model import Remediation, Result, failed, passed, warned
from doctor.registry import check

# Training-script arguments that users put into the DeepSpeed JSON, where nothing reads them.
MISPLACED = {"max_seq_length", "max_seq_len", "seq_length", "sequence_length", "batch_size", "learning_rate",
             "num_train_epochs", "model_name_or_path"}
DS_CONFIG_URL = "https://www.deepspeed.ai/docs/config-json/#batch-size-related-parameters"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"duplicate keys {dup}")
    return dict(pairs)


def _number(config: dict[str, Any], key: str) -> int | None:
    value = config.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None  # "auto" -> None


@check("deepspeed.config", binds={"deepspeed": "job.deepspeed", "world_size": "job.workload.world_size"})
def deepspeed_config(facts: dict[str, Any], *, deepspeed: dict[str, Any], world_size: int = 1) -> Result:
    """The job's DeepSpeed config is valid JSON and its batch sizes agree:
    train_batch_size = train_micro_batch_size_per_gpu × gradient_accumulation_steps × world_size.

    Why: DeepSpeed reads the file with json.load (no comments, duplicate keys rejected) and asserts the
    batch identity at `deepspeed.initialize`, after the model is built; keys it does not know (such as
    max_seq_length) are silently ignored.
    Fix: make the three batch numbers agree (or set one to "auto" under the HF Trainer), strip comments,
    and pass sequence length to the training script instead.
    """
    loaded = deepspeed.get("loaded") or {}
    path, text = loaded.get("path", deepspeed.get("config")), loaded.get("text", "")
    try:
        config = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        hint = " (JSON has no comments: remove the `#` / `//` notes)" if "#" in text or "//" in text else ""
        return failed(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}{hint}",
                      Remediation("DeepSpeed loads this file with json.load and stops at deepspeed.initialize; "
                                  "fix the JSON.", (f"python -m json.tool {path}",), DS_CONFIG_URL))
    except ValueError as exc:
        return failed(f"{path}: {exc}; DeepSpeed rejects duplicate keys",
                      Remediation("Keep one entry per key.", (), DS_CONFIG_URL))
    if not isinstance(config, dict):
        return failed(f"{path}: expected a JSON object, got {type(config).__name__}")
    from doctor.vram.distributed import deepspeed_problems

    problems = deepspeed_problems(config)
    if problems:
        return failed(f"{path}: " + "; ".join(f"{key} {problem}" for key, problem in problems),
                      Remediation("Give each value one DeepSpeed accepts; doctor models none of them in its place.",
                                  (), "https://www.deepspeed.ai/docs/config-json/"))
    tb, mb, ga = (_number(config, k) for k in ("train_batch_size", "train_micro_batch_size_per_gpu",
                                                "gradient_accumulation_steps"))
    details = [f"train_batch_size={config.get('train_batch_size')}, micro={config.get('train_micro_batch_size_per_gpu')}, "
               f"grad_accum={config.get('gradient_accumulation_steps')}, world_size={world_size}"]
    bad = [k for k, v in (("train_batch_size", tb), ("train_micro_batch_size_per_gpu", mb),
                          ("gradient_accumulation_steps", ga)) if v is not None and v <= 0]
    if bad:   # DeepSpeed's _batch_assertion: each must be > 0
        return failed(f"{', '.join(bad)} must be a positive integer; DeepSpeed asserts it at initialize",
                      Remediation("Set each batch value to a whole number of at least 1 (or \"auto\" under the HF "
                                  "Trainer).", (), DS_CONFIG_URL), *details)
    zero = config.get("zero_optimization") or {}
    offload = zero.get("offload_optimizer") if isinstance(zero, dict) else None
    if not isinstance(zero, dict) or not isinstance(offload or {}, dict):
        key = "zero_optimization" if not isinstance(zero, dict) else "zero_optimization.offload_optimizer"
        return failed(f"{path}: {key} is a {type(zero if key == 'zero_optimization' else offload).__name__}; "
                      "DeepSpeed expects a JSON object there",
                      Remediation(f"Make {key} an object, e.g. {{\"stage\": 2}}.", (), "https://www.deepspeed.ai/docs/config-json/"),
                      *details)
    if zero:
        off = (offload or {}).get("device")
        details.append(f"ZeRO stage {zero.get('stage')}" + (f", optimizer offload to {off}" if off else ""))
    if tb is not None and mb is not None and ga is not None and tb != mb * ga * world_size:
        fixed = mb * ga * world_size
        return failed(f"train_batch_size {tb} != micro {mb} × grad_accum {ga} × world_size {world_size} = {fixed}; "
                      "DeepSpeed asserts this at initialize",
                      Remediation(f"Set train_batch_size to {fixed}, or gradient_accumulation_steps to "
                                  f"{tb // (mb * world_size) if tb % (mb * world_size) == 0 else 'a value that divides'} "
                                  "(or use \"auto\" under the HF Trainer).", (), DS_CONFIG_URL), *details)
    if tb is not None and mb is not None and ga is None and tb % (mb * world_size):
        return failed(f"train_batch_size {tb} is not divisible by micro {mb} × world_size {world_size}; DeepSpeed "
                      "derives gradient_accumulation_steps from it and the assertion fails",
                      Remediation("Make train_batch_size a multiple of micro × world_size.", (), DS_CONFIG_URL),
                      *details)
    misplaced = sorted(MISPLACED & set(config))
    if misplaced:
        return warned(f"{', '.join(misplaced)} in the DeepSpeed config has no effect: DeepSpeed does not read it",
                      Remediation("Pass these to the training script (e.g. --max_seq_length) instead.", (),
                                  "https://www.deepspeed.ai/docs/config-json/"), *details)
    return passed("valid JSON; batch sizes agree" if None not in (tb, mb, ga) else
                  "valid JSON; DeepSpeed derives the unset batch value", *details)


@check("batch.divisibility", binds={"total": "job.workload.total_batch_size", "batch": "job.workload.batch",
                                    "sequence": "job.workload.sequence", "world_size": "job.workload.world_size"})
def batch_divisibility(facts: dict[str, Any], *, total: int, batch: int, sequence: int, world_size: int = 1) -> Result:
    """total_batch_size (tokens) is a multiple of device_batch_size × max_seq_len × world_size.

    Why: token-budget trainers (nanochat-style) derive gradient-accumulation steps by this division and
    assert it is exact; a mismatch stops the run at start-up, or silently trains on a different batch.
    Fix: pick total_batch_size as a multiple of batch × sequence × world_size (the nearest are given).
    """
    step = batch * sequence * world_size
    if step <= 0:
        return failed(f"batch × sequence × world_size is {step}; expected positive numbers")
    if total % step == 0:
        return passed(f"{total} = {total // step} × ({batch} × {sequence} × {world_size}): "
                      f"{total // step} gradient-accumulation steps")
    lower, upper = (total // step) * step, (total // step + 1) * step
    options = [str(v) for v in (lower, upper) if v > 0]
    return failed(f"total_batch_size {total} is not a multiple of {batch} × {sequence} × {world_size} = {step}",
                  Remediation(f"Use total_batch_size {' or '.join(options)} (or change batch / sequence)."))
