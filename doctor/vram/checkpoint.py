"""Bytes of one training checkpoint on disk, computed from the workload (pure arithmetic; no torch).

A checkpoint is the weights in the dtype they are saved in, plus, where the optimizer is saved, its state as
the optimizer's `state_dict()` holds it. What each writer puts in a checkpoint folder:

- Hugging Face Trainer (`Trainer._save_checkpoint`): `model.safetensors` (the model's state_dict in the dtype its
  parameters have), `optimizer.pt` (`optimizer.state_dict()`: AdamW's exp_avg and exp_avg_sq in the parameters'
  dtype) unless `save_only_model=True`, plus scheduler / RNG / trainer-state files of a few KiB. A PEFT model
  saves only `adapter_model.safetensors`, and the optimizer holds state for the adapter only.
  https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments
  (`save_total_limit`, `save_only_model`); transformers/trainer.py `_save_checkpoint`.
- DeepSpeed (`engine.save_checkpoint`): `mp_rank_00_model_states.pt` (the module's state_dict in its training
  dtype; under ZeRO-3 the parameters are partitioned and it holds no weights unless
  `stage3_gather_16bit_weights_on_model_save`) and one `zero_pp_rank_<r>_mp_rank_00_optim_states.pt` per rank
  with that rank's partition of the fp32 master weights (`single_partition_of_fp32_groups`, 4 B per parameter)
  and of the optimizer state (Adam: 8 B) - 12 B per parameter summed over the ranks.
  https://deepspeed.readthedocs.io/en/latest/model-checkpointing.html; deepspeed/runtime/zero/stage_1_and_2.py
  `state_dict` (BASE_OPTIMIZER_STATE, SINGLE_PARTITION_OF_FP32_GROUPS); deepspeed/utils/zero_to_fp32.py rebuilds
  the fp32 weights from those partitions.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .arch import Arch
from .estimator import DTYPES, FIXED_STATE_BYTES, STATE_BYTES, Workload, _optimizer, _trainable, lora_targets

CONTENTS = ("model", "model+optimizer")
TRAINER_DOC = ("https://huggingface.co/docs/transformers/main_classes/trainer (TrainingArguments save_total_limit, "
               "save_only_model); transformers/trainer.py Trainer._save_checkpoint")
DS_DOC = ("https://deepspeed.readthedocs.io/en/latest/model-checkpointing.html; deepspeed/runtime/zero/"
          "stage_1_and_2.py state_dict (SINGLE_PARTITION_OF_FP32_GROUPS + BASE_OPTIMIZER_STATE)")
TRAINER_SRC = ("transformers/trainer.py (5.24) Trainer._save_checkpoint: save_model, then, unless save_only_model, "
               "_save_optimizer_and_scheduler")
PEFT_DOC = "peft PeftModel.save_pretrained (adapter_model.safetensors: the adapter's tensors only)"


class Undecided(Exception):
    """The checkpoint size cannot be computed from what the profile gives; the message says what is missing."""


@dataclass
class CheckpointSize:
    """Bytes of one checkpoint, by file kind, each with its formula and source."""

    bytes: float
    terms: dict[str, tuple[float, str, str]] = field(default_factory=dict)   # name -> (bytes, formula, source)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{name}: {b / 2**30:.2f} GiB = {formula} [{source}]" for name, (b, formula, source)
                in self.terms.items()]


def checkpoint_size(arch: Arch | None, wl: Workload, contents: str, params: int | None = None,
                    trainer: bool = False) -> CheckpointSize:
    """One checkpoint of `wl` saving `contents` (model | model+optimizer), written by DeepSpeed's engine or, with
    `trainer`, by the HF Trainer (which saves model.safetensors and then, for the optimizer, DeepSpeed's own
    checkpoint beside it). Without an Arch, `params` (a full fine-tune's parameter count) gives the weights and,
    for the optimizers STATE_BYTES knows, their state."""
    if contents not in CONTENTS:
        raise Undecided(f"contents {contents!r}; expected one of {', '.join(CONTENTS)}")
    if wl.method in ("inference", "hessian"):
        raise Undecided(f"the workload is {wl.method} (method: {wl.method}): it writes no training checkpoint")
    p = DTYPES[wl.dtype]
    deepspeed = wl.zero is not None
    frozen = wl.method in ("lora", "qlora")
    # the parameters' own dtype: autocast keeps fp32 weights (HF Trainer fp16/bf16=True, FSDP MixedPrecision);
    # DeepSpeed's bf16 / fp16 sections make the module itself half precision
    wbytes = 4 if wl.amp and not deepspeed else p
    abytes = DTYPES.get(wl.adapter_dtype, 4)
    if arch is not None:
        trainable, sizes = _trainable(arch, wl, lora_targets(arch, wl))
        total = arch.params
    elif params and not frozen:
        trainable, sizes, total = params, [], params
    else:
        why = "a LoRA adapter's size needs the model's shapes" if frozen else "job.workload.params is unset"
        raise Undecided("the parameter count is unknown: job.workload.model names no config doctor can read and "
                        + why)
    out = CheckpointSize(0.0)
    # weights
    if frozen:
        out.terms["adapter"] = (trainable * abytes, f"{trainable:,} adapter params x {abytes} B", PEFT_DOC)
    elif deepspeed and wl.zero == 3:
        gather = bool(wl.ds_knobs.get("stage3_gather_16bit_weights_on_model_save"))
        if gather:
            out.terms["model_16bit"] = (total * p, f"{total:,} params x {p} B (gathered on save)", DS_DOC)
        elif trainer:   # save_model's ValueError branch: "Saving the full checkpoint instead"
            out.notes.append("ZeRO-3 without stage3_gather_16bit_weights_on_model_save: Trainer.save_model writes "
                             "DeepSpeed's full checkpoint instead (fp32 master partitions and optimizer state, "
                             "zero_to_fp32.py recovers the weights), whatever save_only_model says")
            contents = "model+optimizer"
        elif contents == "model":
            raise Undecided("ZeRO-3 without stage3_gather_16bit_weights_on_model_save writes no 16-bit model "
                            "(engine.save_16bit_model needs it): set it, or save model+optimizer")
        else:
            out.notes.append("ZeRO-3 partitions the parameters: mp_rank_00_model_states.pt holds no weights; the "
                             "fp32 master partitions in the optimizer files are the weights (zero_to_fp32.py)")
    else:
        out.terms["model"] = (total * wbytes, f"{total:,} params x {wbytes} B",
                              DS_DOC if deepspeed and not trainer else TRAINER_DOC)
        if trainer and deepspeed and contents == "model+optimizer":   # and again in mp_rank_00_model_states.pt
            out.terms["model_in_deepspeed_checkpoint"] = (
                total * wbytes, f"{total:,} params x {wbytes} B: the module's state_dict again in "
                "mp_rank_00_model_states.pt (Trainer._save_optimizer_and_scheduler calls engine.save_checkpoint "
                "after save_model wrote model.safetensors)", f"{TRAINER_SRC}; {DS_DOC}")
        elif trainer and wl.fsdp is not None and contents == "model+optimizer":
            out.notes.append("under FSDP with FULL_STATE_DICT the Trainer writes the weights twice (model.safetensors, "
                             "then save_fsdp_model's copy with the optimizer); the state dict type is not in the "
                             "profile, so one copy is counted")
    # optimizer
    if contents == "model+optimizer":
        master = 4 if deepspeed and not (wl.zero == 0 and p == 4) else 0
        sbytes = 4 if deepspeed else (abytes if frozen else wbytes)
        if arch is not None:
            states = _optimizer(replace(wl, quant="none"), arch, trainable, sizes, sbytes)[0]
        elif wl.optimizer in STATE_BYTES:
            per = STATE_BYTES[wl.optimizer] * (1 if wl.optimizer in FIXED_STATE_BYTES else sbytes / 4)
            states = trainable * per
        else:
            raise Undecided(f"the state of optimizer {wl.optimizer} needs the model's shapes (job.workload.model)")
        where = "per-rank zero_pp_rank_*_optim_states.pt, summed" if deepspeed else "optimizer.pt"
        out.terms["optimizer_states"] = (states, f"{wl.optimizer} state over {trainable:,} trainable params "
                                         f"({states / max(trainable, 1):.3g} B each), {where}",
                                         DS_DOC if deepspeed else TRAINER_DOC)
        if master:
            out.terms["fp32_master"] = (master * trainable, f"{trainable:,} x 4 B fp32 master partitions, {where}",
                                        DS_DOC)
    out.bytes = sum(b for b, _, _ in out.terms.values())
    return out


def peak_count(entry: dict[str, Any]) -> tuple[int, str]:
    """(checkpoints on disk at the peak, why) of a storage entry: `count` as given, or `save_total_limit` + 1 -
    HF Trainer writes the new checkpoint before it deletes the oldest (trainer.py: rotate_checkpoints runs after
    _save_checkpoint has written everything)."""
    if entry.get("save_total_limit") is not None:
        limit = int(entry["save_total_limit"])
        return limit + 1, (f"save_total_limit {limit} + 1 being written (Trainer rotates after saving) "
                           f"[{TRAINER_DOC}]")
    count = int(entry.get("count", 1))
    return count, f"{count} kept (profile count)"


def from_job(entry: dict[str, Any], workload: dict[str, Any] | None, deepspeed: dict[str, Any] | None
             ) -> CheckpointSize:
    """One checkpoint of a storage entry that says `contents`, from the job's workload and attached model config."""
    from ..errors import InputError
    from .workload import attached_model, unknown_optimizer, workload_from_job

    if not isinstance(workload, dict) or not workload:
        raise Undecided("the profile's job has no workload (job.workload) to size the checkpoint from")
    model, fields = workload_from_job({"workload": workload, "deepspeed": deepspeed if isinstance(deepspeed, dict)
                                       else {}})
    odd = unknown_optimizer(workload)
    if odd and entry.get("contents") == "model+optimizer":   # never sized as AdamW's
        raise Undecided(f"the state of optimizer {odd!r} (job.workload.optimizer) is not one doctor models")
    try:
        wl = Workload(**fields)
    except (TypeError, ValueError) as exc:
        raise Undecided(f"the workload is not one doctor can read ({exc})") from None
    try:
        arch, params = attached_model(workload, model)
    except InputError as exc:
        raise Undecided(f"cannot read {model}'s config: {exc}") from None
    resolved = workload.get("resolved_config") or {}
    if arch is None and model and isinstance(resolved, dict) and resolved.get("error") and not params:
        raise Undecided(f"no config.json for {model}: {resolved['error']}")
    # save_total_limit is a TrainingArguments knob: the Trainer writes these checkpoints
    return checkpoint_size(arch, wl, str(entry.get("contents")), params,
                           trainer=entry.get("save_total_limit") is not None)
