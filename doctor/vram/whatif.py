"""What-ifs: single changes to a workload, each re-estimated by the model, cheapest first."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .arch import Arch
from .estimator import Estimate, Workload, estimate


@dataclass(frozen=True)
class WhatIf:
    change: str          # what to change, in the user's terms
    flag: str            # the `doctor estimate` flags that express it
    cost: str            # what it costs (speed, quality)
    estimate: Estimate


def _candidates(wl: Workload) -> list[tuple[str, str, str, Workload]]:
    training = wl.method != "inference"
    out: list[tuple[str, str, str, Workload]] = []
    if training and wl.attention == "eager":
        out.append(("use SDPA attention instead of eager", "--attention sdpa", "none (same math, fused kernel)",
                    replace(wl, attention="sdpa")))
    if not training and wl.attention == "eager":
        out.append(("use SDPA attention instead of eager", "--attention sdpa", "none", replace(wl, attention="sdpa")))
    if training and wl.method != "hessian" and not wl.checkpointing:
        out.append(("enable gradient checkpointing", "--grad-checkpointing", "~20-30% slower steps (recompute)",
                    replace(wl, checkpointing=True)))
    if training and wl.batch > 1:
        half = wl.batch // 2
        out.append((f"micro-batch {half} with gradient accumulation x{wl.grad_accum * wl.batch // half}",
                    f"--batch {half} --grad-accum {wl.grad_accum * wl.batch // half}",
                    "same effective batch, slower steps", replace(wl, batch=half, grad_accum=wl.grad_accum * wl.batch // half)))
    if training and wl.method in ("full", "lora", "qlora") and wl.optimizer in ("adamw", "adamw_loop", "adamw_fused"):
        out.append(("8-bit AdamW (bitsandbytes)", "--optimizer adamw_8bit", "quantized optimizer state",
                    replace(wl, optimizer="adamw_8bit")))
    if training and wl.method == "full" and wl.optimizer == "adamw":
        out.append(("fused AdamW (no step temporaries)", "--optimizer adamw_fused", "none",
                    replace(wl, optimizer="adamw_fused")))
    if wl.method == "full":
        out.append(("LoRA instead of full fine-tuning", "--method lora --lora-rank 16", "adapter quality vs full",
                    replace(wl, method="lora", lora_rank=16, amp=False)))
    if wl.method == "lora":
        out.append(("4-bit base (QLoRA, NF4 + double quantization)", "--method qlora --double-quant",
                    "4-bit base weights, slower matmuls", replace(wl, method="qlora", double_quant=True)))
    if wl.method == "qlora" and not wl.double_quant:
        out.append(("double quantization of the 4-bit scales", "--double-quant", "none measurable (QLoRA paper)",
                    replace(wl, double_quant=True)))
    if wl.method == "inference" and wl.quant == "none":
        out.append(("4-bit weights (AWQ)", "--quant awq", "4-bit quality loss", replace(wl, quant="awq")))
    if wl.seq > 256:
        out.append((f"sequence {wl.seq // 2}", f"--seq {wl.seq // 2}", "truncates longer samples",
                    replace(wl, seq=wl.seq // 2, context=(wl.context // 2 if wl.context else None))))
    if wl.images > 1:
        out.append((f"{wl.images // 2} images per sample", f"--images {wl.images // 2}", "fewer images per sample",
                    replace(wl, images=wl.images // 2)))
    return out


def what_ifs(arch: Arch, wl: Workload, capacity: int | None, base: Estimate) -> list[WhatIf]:
    """Changes that lower the peak. Those that fit `capacity` come first, cheapest change first (the
    candidates are listed from free to costly); the rest follow, smallest resulting peak first."""
    found = []
    for change, flag, cost, new in _candidates(wl):
        est = estimate(arch, new)
        if est.peak_bytes < base.peak_bytes:
            found.append(WhatIf(change, flag, cost, est))
    if capacity is None:
        return sorted(found, key=lambda w: w.estimate.peak_bytes)
    fit = [w for w in found if w.estimate.peak_bytes <= capacity]
    rest = sorted((w for w in found if w.estimate.peak_bytes > capacity), key=lambda w: w.estimate.peak_bytes)
    return fit + rest
