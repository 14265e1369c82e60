"""What-ifs: single changes to a workload, each re-estimated by the model, cheapest first."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..args import MAX_COUNT
from ..errors import InputError
from .arch import Arch
from .estimator import Estimate, Workload, distributed_memory, estimate, lora_matches_nothing
from .workload import contradictions


@dataclass(frozen=True)
class WhatIf:
    change: str          # what to change, in the user's terms
    flag: str            # the `doctor estimate` flags that express it
    cost: str            # what it costs (speed, quality)
    estimate: Estimate


def _candidates(wl: Workload, family: str | None = None) -> list[tuple[str, str, str, Workload]]:
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
    half = wl.batch // 2
    accum = wl.grad_accum * wl.batch // half if half else 0
    if training and half and accum <= MAX_COUNT:   # --grad-accum takes at most MAX_COUNT
        out.append((f"micro-batch {half} with gradient accumulation x{accum}", f"--batch {half} --grad-accum {accum}",
                    "same effective batch, slower steps", replace(wl, batch=half, grad_accum=accum)))
    if training and wl.method in ("full", "lora", "qlora") and wl.optimizer in ("adamw", "adamw_loop", "adamw_fused"):
        out.append(("8-bit AdamW (bitsandbytes)", "--optimizer adamw_8bit", "quantized optimizer state",
                    replace(wl, optimizer="adamw_8bit")))
    if training and wl.method == "full" and wl.optimizer == "adamw":
        out.append(("fused AdamW (no step temporaries)", "--optimizer adamw_fused", "none",
                    replace(wl, optimizer="adamw_fused")))
    if wl.method == "full":
        flag = "--method lora --lora-rank 16" + (" --no-amp" if wl.amp else "")
        out.append(("LoRA instead of full fine-tuning", flag, "adapter quality vs full",
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
    out += _upgrades(wl, family)
    if training and wl.zero is not None and wl.zero < 3:
        out.append(("ZeRO-3 (parameters partitioned too)", "--zero 3", ("an all-gather per layer in forward and "
                    "backward"), replace(wl, zero=3)))
    if training and wl.zero is not None and wl.zero >= 1 and wl.offload_optimizer == "none":
        out.append(("optimizer offload to CPU", "--offload-optimizer cpu", ("the optimizer step runs on the CPU "
                    "(slower); CPU RAM per node grows"), replace(wl, offload_optimizer="cpu")))
    if training and wl.zero == 3 and wl.offload_params == "none":
        out.append(("parameter offload to CPU (ZeRO-3)", "--offload-params cpu", ("parameters cross PCIe every "
                    "step; CPU RAM per node grows"), replace(wl, offload_params="cpu")))
    if training and wl.fsdp in ("shard-grad-op", "hybrid-zero2", "no-shard"):
        out.append(("FSDP full shard", "--fsdp full", "an all-gather per unit in backward too",
                    replace(wl, fsdp="full")))
    return out


def _upgrades(wl: Workload, family: str | None) -> list[tuple[str, str, str, Workload]]:
    """Library upgrades that drop a version's extra memory (doctor/data/vram.yaml `versions`)."""
    from .versions import older, rows

    out = []
    since = rows()["bnb_4bit_input_kept"]["since"]
    nf4 = wl.method == "qlora" or (wl.method == "lora" and wl.quant == "nf4")
    if nf4 and wl.implementation != "torchtune" and older(wl.bitsandbytes_version, since):
        out.append((f"bitsandbytes >= {since} (frozen 4-bit linears keep no input)",
                    f"--bitsandbytes-version {since}", "an upgrade", replace(wl, bitsandbytes_version=since)))
    if wl.implementation == "torchtune" and nf4 and older(wl.torchao_version, chunked()):
        # torchtune 0.2.0's wheel: "Requires-Dist: torchao ==0.3.1"
        out.append((f"torchtune >= 0.2 (torchao >= {chunked()}: NF4 quantized in chunks of 1024**2 elements)",
                    f"--torchao-version {chunked()}", "an upgrade; the chunked build is not replayed: the figure is "
                    "the step's", replace(wl, torchao_version=chunked())))
    if wl.method == "inference":
        since = rows()["generate_dynamic_cache"]["since"].get(family or "")   # this model family's threshold
        if since is not None and older(wl.transformers_version, since):
            out.append((f"transformers >= {since} (generate keeps a DynamicCache)", f"--transformers-version {since}",
                        "an upgrade", replace(wl, transformers_version=since)))
    return out


def chunked() -> str:
    """The first torchao release that quantizes NF4 in chunks (doctor/data/nf4_init.yaml)."""
    from .nf4_build import data

    return str(data()["chunked_since"])


def what_ifs(arch: Arch, wl: Workload, capacity: int | None, base: Estimate) -> list[WhatIf]:
    """Changes that lower the peak. Those that fit `capacity` come first, cheapest change first (the
    candidates are listed from free to costly); the rest follow, smallest resulting peak first."""
    found = []
    ssm = any(k.ssm for k, _ in arch.kinds)
    for change, flag, cost, new in _candidates(wl, arch.family):
        if contradictions(new):   # the command would refuse the change as printed
            continue
        if ssm and new.quant in ("awq", "gptq") and new.quant != wl.quant:   # AWQ / GPTQ tools quantize
            continue   # transformer families' linears; none lists Mamba's selective-scan blocks
        try:
            est = estimate(arch, new)
        except InputError:   # a change this model cannot take as proposed (LoRA's default targets on a Mamba)
            continue
        if lora_matches_nothing(new, est):   # --lora-targets given for full training names no module of this model
            continue
        if est.peak_bytes < 0.99 * base.peak_bytes:   # a change worth making: at least 1% off the peak
            if est.cpu and (not base.cpu or est.cpu["per_node_bytes"] != base.cpu["per_node_bytes"]):
                cost += f" (CPU RAM {est.cpu['per_node_bytes'] / 2**30:.1f} GiB per node)"
            found.append(WhatIf(change, flag, cost, est))
    if capacity is None:
        return sorted(found, key=lambda w: w.estimate.peak_bytes)
    fit = [w for w in found if w.estimate.peak_bytes <= capacity]
    rest = sorted((w for w in found if w.estimate.peak_bytes > capacity), key=lambda w: w.estimate.peak_bytes)
    return fit + rest


@dataclass(frozen=True)
class CpuWhatIf:
    """A change that lowers a sharded job's CPU RAM per node, with its computed figures."""

    change: str
    flag: str            # `doctor estimate` flags ("" where the change is a machine, not a flag)
    cost: str
    cpu_bytes: float     # CPU RAM per node, the process allowance included
    gpu_bytes: float | None   # GPU per rank: the estimate's peak with a model config, else model states + buffers
    nvme_bytes: float = 0.0
    deepspeed: str = ""  # the DeepSpeed config change, as JSON
    fits: bool = False


def _node(arch: Arch | None, wl: Workload, params: int | None, allowance: float) -> tuple[float, float | None, float]:
    """(CPU per node with the allowance, GPU per rank, NVMe per node) of `wl`."""
    mem = distributed_memory(arch, wl, params)
    if mem is None:
        return math.inf, None, 0.0
    ranks = mem.sharding.per_node
    gpu: float | None = sum(t.bytes for t in mem.gpu.values()) + sum(t.bytes for t in mem.step.values())
    if arch is not None:
        gpu = float(estimate(arch, wl).peak_bytes)
    return mem.cpu_bytes + allowance * ranks, gpu, mem.nvme_bytes


BF = {"bf16": "bfloat16", "fp16": "float16"}


def cpu_what_ifs(arch: Arch | None, wl: Workload, params: int | None, limit: float, allowance: float,
                 others: float = 0.0) -> list[CpuWhatIf]:
    """Alternatives to a sharded job whose CPU RAM per node does not fit `limit` (bytes), each re-computed:
    ZeRO-3 with parameter offload, fewer bytes per optimizer state, bf16, NVMe offload, no offload, and the
    machine it would need beside the `others` bytes the machine's other processes hold. Those that fit come
    first."""
    out: list[CpuWhatIf] = []

    def add(change: str, flag: str, cost: str, new: Workload, ds: str = "") -> None:
        cpu, gpu, nvme = _node(arch, new, params, allowance)
        if math.isfinite(cpu):
            out.append(CpuWhatIf(change, flag, cost, cpu, gpu, nvme, ds, cpu <= limit))

    ds = wl.zero is not None
    if ds and (wl.zero < 3 or wl.offload_params == "none"):
        add("ZeRO-3 with parameter offload to CPU", "--zero 3 --offload-params cpu --offload-optimizer cpu",
            "parameters cross PCIe every step; the 16-bit parameters join the CPU state",
            replace(wl, zero=3, offload_params="cpu", offload_optimizer="cpu"),
            '{"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}, '
            '"offload_optimizer": {"device": "cpu"}}}')
    if wl.optimizer in ("adamw", "adamw_fused", "adamw_loop"):
        add("8-bit optimizer states (1 byte per state instead of 4)", "--optimizer adamw_8bit",
            "DeepSpeed's CPU Adam keeps fp32 states: needs a client 8-bit optimizer and "
            '"zero_force_ds_cpu_optimizer": false', replace(wl, optimizer="adamw_8bit"))
    if wl.dtype == "fp32":
        add("bf16 training (DeepSpeed bf16.enabled)", "--dtype bf16", "bf16 rounding of weights and activations; "
            "the fp32 master copy and Adam states stay fp32", replace(wl, dtype="bf16"), '{"bf16": {"enabled": true}}')
    if ds:
        add("ZeRO-3 with optimizer offload to NVMe (ZeRO-Infinity)", "--zero 3 --offload-optimizer nvme",
            "optimizer state read and written on NVMe every step; needs offload_optimizer.nvme_path on a fast disk",
            replace(wl, zero=3, offload_optimizer="nvme", offload_params="none"),
            '{"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme", "nvme_path": "/local_nvme"}}}')
    if wl.offload_optimizer != "none" or wl.offload_params != "none":
        add("no offload (model states stay on the GPUs)", "--offload-optimizer none --offload-params none",
            "the GPU holds the optimizer state", replace(wl, offload_optimizer="none", offload_params="none"))
    cpu, gpu, nvme = _node(arch, wl, params, allowance)
    if wl.fsdp is not None and not wl.ram_efficient_loading and \
            _node(arch, replace(wl, ram_efficient_loading=True), params, allowance)[0] < cpu:
        add("accelerate's fsdp_cpu_ram_efficient_loading (local rank 0 loads the checkpoint, the other ranks build "
            "on the meta device)", "--ram-efficient-loading", "transformers models only; sync_module_states "
            "broadcasts rank 0's weights (accelerate turns it on)", replace(wl, ram_efficient_loading=True))
    if wl.dtype in ("bf16", "fp16") and wl.load_dtype in (None, "fp32"):
        new = replace(wl, load_dtype=wl.dtype)
        if _node(arch, new, params, allowance)[0] < cpu:
            add(f"load the model in {wl.dtype} (from_pretrained dtype=torch.{BF[wl.dtype]})", f"--load-dtype {wl.dtype}",
                "none where the checkpoint is stored in that dtype", new)
    if math.isfinite(cpu):
        need = math.ceil((cpu + others) / 1e9)
        beside = f", with the {others / 2**30:.1f} GiB other processes hold here" if others >= 2**30 / 10 else ""
        out.append(CpuWhatIf(f"a machine with {need} GB of RAM per node", "", f"a larger instance{beside}", cpu,
                             gpu, nvme, "", True))
    return sorted(out, key=lambda w: (not w.fits, w.flag == "", w.cpu_bytes))
