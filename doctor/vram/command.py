"""`doctor estimate`: the VRAM breakdown, a verdict against a GPU, and computed what-ifs."""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import replace
from typing import Any

from ..args import whole
from ..errors import InputError
from ..units import parse_size
from .distributed import FSDP_STRATEGIES, OFFLOAD
from .estimator import (
    ATTENTION,
    DTYPES,
    METHODS,
    OPTIMIZERS,
    QUANT,
    Workload,
    estimate,
    fits,
)
from .second_order import GPTQ_NSAMPLES, KINDS
from .workload import (
    ATTN_ALIASES,
    contradictions,
    deepspeed_fields,
    model_problems,
    workload_from_job,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("estimate", help="estimate a job's peak GPU memory; does it fit, and what would make it fit")
    p.add_argument("--model", "-m", metavar="NAME|PATH|ORG/NAME",
                   help="built-in name (opt-1.3b, llama-2-7b, qwen3-vl-32b-instruct, nanochat-d20, ...), "
                        "a config.json (or its folder), or a Hub id read from the Hugging Face cache")
    p.add_argument("--profile", "-p", action="append", default=[], metavar="NAME|FILE",
                   help="take the workload (and GPU) from profiles; flags override")
    p.add_argument("--method", choices=METHODS)
    p.add_argument("--dtype", choices=sorted(DTYPES))
    p.add_argument("--amp", action="store_true", default=None,
                   help="mixed precision: fp32 master weights + autocast to --dtype (HF Trainer fp16/bf16=True)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="weights in --dtype itself (no fp32 master copy)")
    p.add_argument("--batch", type=whole(1), metavar="N", help="micro-batch size per GPU")
    p.add_argument("--seq", type=whole(1), metavar="N", help="text tokens per sample")
    p.add_argument("--grad-accum", type=whole(1), metavar="N")
    p.add_argument("--grad-checkpointing", action="store_true", default=None)
    p.add_argument("--attention", choices=ATTENTION + tuple(ATTN_ALIASES))
    p.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="adamw = PyTorch's default foreach AdamW; adamw_loop = per-parameter (HF adamw_hf); "
                        "adamw_8bit / paged_* / lion* = bitsandbytes; muon = Muon + AdamW for embeddings, head, gains")
    p.add_argument("--lora-rank", type=whole(1, 1 << 16), metavar="R")
    p.add_argument("--lora-targets", metavar="default|all-linear|a,b,c")
    p.add_argument("--adapter-dtype", choices=sorted(DTYPES), help="LoRA adapter dtype (PEFT default fp32)")
    p.add_argument("--quant", choices=QUANT, help="weight quantization (qlora implies nf4)")
    p.add_argument("--double-quant", action="store_true", default=None, help="NF4 double quantization")
    p.add_argument("--images", type=whole(0, 10_000), metavar="N", help="images per sample (vision-language models)")
    p.add_argument("--image-size", type=whole(1, 100_000), metavar="PX", help="image side in pixels after resizing")
    p.add_argument("--context", type=whole(1), metavar="N", help="inference: KV-cache length (prompt + new tokens)")
    p.add_argument("--lora-dropout", type=float, metavar="P", help="LoRA dropout probability (PEFT default 0)")
    p.add_argument("--implementation", choices=("hf", "litgpt", "torchtune"),
                   help="whose model code trains: hf (transformers / peft, default), litgpt (LitGPT's own GPT) or "
                        "torchtune (its single-device recipes; QLoRA's model build is replayed on torchao < 0.2)")
    p.add_argument("--kv-cache-heads", choices=("kv", "query"),
                   help="inference: the heads the KV cache is sized by - kv (default: grouped-query, as transformers "
                        "caches) or query (k/v expanded to the query heads before caching, as older torchtune did)")
    p.add_argument("--half-ce", action="store_true", default=None,
                   help="the loss's cross-entropy runs on the half-precision logits without an fp32 upcast (LitGPT's "
                        "chunked_cross_entropy); default: the fp32 upcast transformers' loss makes")
    p.add_argument("--chunked-ce", action="store_true", default=None,
                   help="fused linear cross-entropy (Liger-Kernel): the logits are computed in chunks, never whole")
    v = p.add_argument_group("installed libraries, where their version changes memory (default: from --facts, else "
                             "the current behaviour; the notes say which was applied)")
    for lib in ("transformers", "peft", "bitsandbytes", "torchao", "deepspeed"):
        v.add_argument(f"--{lib}-version", type=_version(f"--{lib}-version"), metavar="X.Y.Z",
                       help=f"the installed {lib} version")
    h = p.add_argument_group("second order (--method hessian): which Hessian quantity, and its knobs")
    h.add_argument("--hessian", choices=KINDS,
                   help="hvp: one Hessian-vector product (default); hutchinson: diagonal estimate from --probes HVPs; "
                        "gptq: GPTQ's layer-wise d_in x d_in Hessians, one block at a time; full: the n x n Hessian")
    h.add_argument("--probes", type=whole(1, 10**9), metavar="N", help="Hutchinson probes (default 1; run one after "
                                                                        "another: time, not memory, grows with N)")
    h.add_argument("--calibration-samples", type=whole(1, 10**7), metavar="N",
                   help="GPTQ calibration samples of --seq tokens (default 128, GPTQ's reference)")
    d = p.add_argument_group("distributed training (GPU bytes per rank, CPU RAM per node)")
    d.add_argument("--zero", "--zero-stage", dest="zero", type=int, choices=(0, 1, 2, 3), help="DeepSpeed ZeRO stage")
    d.add_argument("--fsdp", choices=FSDP_STRATEGIES, help="PyTorch FSDP sharding strategy (hybrid: shard within a "
                                                           "node, replicate across nodes)")
    d.add_argument("--world-size", type=whole(1, 1_000_000), metavar="N", help="GPUs in all")
    d.add_argument("--gpus-per-node", type=whole(1, 4096), metavar="N", help="GPUs per node (default: all on one)")
    d.add_argument("--offload-optimizer", choices=OFFLOAD, help="DeepSpeed offload_optimizer.device")
    d.add_argument("--offload-params", choices=OFFLOAD, help="DeepSpeed ZeRO-3 offload_param.device; FSDP: cpu = "
                                                             "CPUOffload(offload_params=True)")
    d.add_argument("--no-zero-init", dest="zero_init", action="store_false", default=None,
                   help="ZeRO-3 without deepspeed.zero.Init: every rank builds the whole model on the CPU first")
    d.add_argument("--fsdp-no-sync", action="store_true", default=None,
                   help="FSDP: gradient accumulation inside no_sync() (Lightning Fabric's no_backward_sync): every "
                        "rank keeps the unsharded gradients until the synchronizing micro-batch")
    d.add_argument("--fsdp-frozen-grads", action="store_true", default=None,
                   help="FSDP LoRA: the frozen base shares flat parameters with the adapters (use_orig_params=True, "
                        "one unit per block, as LitGPT wraps): gradients cover the frozen weights too")
    d.add_argument("--ram-efficient-loading", action="store_true", default=None,
                   help="FSDP: accelerate's fsdp_cpu_ram_efficient_loading - local rank 0 loads the checkpoint on the "
                        "CPU, the other ranks build on the meta device (default: every rank loads it)")
    d.add_argument("--load-dtype", choices=("fp32", "fp16", "bf16"),
                   help="the dtype from_pretrained builds the model in on the CPU (default: fp32, transformers' "
                        "default before 5.0)")
    d.add_argument("--deepspeed-config", metavar="FILE", help="a DeepSpeed JSON: stage, offload, pin_memory, "
                                                              "bucket sizes (flags override it)")
    p.add_argument("--gpu", metavar="NAME", help="judge against this GPU of doctor's table (`doctor gpus`), e.g. "
                                                  "'A800 80GB' or 'NVIDIA H100 80GB HBM3'")
    p.add_argument("--gpu-memory", metavar="SIZE", help="judge against this capacity, e.g. 80GiB or 24GB")
    p.add_argument("--facts", metavar="FILE", help="judge against GPU 0 of a `doctor facts` snapshot")
    p.add_argument("--offline", action="store_true", help="read Hub configs from the cache only")
    p.add_argument("--format", choices=("console", "json"), default="console")
    p.add_argument("--simulate", action="store_true",
                   help="also run the model's own code for one step on fake CPU tensors (a child process; no GPU, "
                        "no download) and show its peak live bytes beside the estimate")
    p.add_argument("--simulate-timeout", type=whole(1, 86_400), default=300, metavar="S",
                   help="seconds the --simulate child may run (default 300)")


ARG_FIELDS = (("method", "method"), ("dtype", "dtype"), ("amp", "amp"), ("batch", "batch"), ("seq", "seq"),
              ("grad_accum", "grad_accum"), ("grad_checkpointing", "checkpointing"),
              ("attention", "attention"), ("optimizer", "optimizer"), ("lora_rank", "lora_rank"),
              ("lora_targets", "lora_targets"), ("adapter_dtype", "adapter_dtype"), ("quant", "quant"),
              ("double_quant", "double_quant"), ("images", "images"), ("image_size", "image_size"),
              ("context", "context"), ("zero", "zero"), ("fsdp", "fsdp"), ("world_size", "world_size"),
              ("gpus_per_node", "gpus_per_node"), ("offload_optimizer", "offload_optimizer"),
              ("offload_params", "offload_params"), ("zero_init", "zero_init"), ("chunked_ce", "chunked_ce"),
              ("half_ce", "half_ce"), ("fsdp_no_sync", "fsdp_no_sync"), ("fsdp_frozen_grads", "fsdp_frozen_grads"),
              ("transformers_version", "transformers_version"), ("peft_version", "peft_version"),
              ("bitsandbytes_version", "bitsandbytes_version"), ("kv_cache_heads", "kv_cache_heads"),
              ("lora_dropout", "lora_dropout"), ("implementation", "implementation"),
              ("torchao_version", "torchao_version"),
              ("ram_efficient_loading", "ram_efficient_loading"), ("load_dtype", "load_dtype"))


def _version(flag: str) -> Any:
    """An argparse type: a PEP 440 version string (bad ones: one line, exit 2)."""
    def parse(text: str) -> str:
        from ..errors import InputError as Bad
        from .versions import check

        try:
            return check(flag, text)
        except Bad:
            shown = text if len(text) <= 60 else text[:60] + "..."
            raise argparse.ArgumentTypeError(f"{shown!r} is not a version; expected a PEP 440 version such as "
                                             "4.57.1") from None

    parse.__name__ = "version"
    return parse


def _deepspeed_file(path: str, fields: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The Workload fields `--deepspeed-config FILE` gives (the flags given beside it still win)."""
    from pathlib import Path

    from ..loading import CONFIG_BYTES, load_json, read_text

    expected = "expected a readable DeepSpeed JSON config file"
    try:
        file = Path(path).expanduser()
        is_file = file.is_file()
    except (OSError, RuntimeError, ValueError) as exc:   # ENAMETOOLONG, ~unknown-user, an embedded NUL
        why = getattr(exc, "strerror", None) or str(exc)
        raise InputError("--deepspeed-config", path, f"cannot be opened ({why}); {expected}") from None
    if not is_file:
        raise InputError("--deepspeed-config", path, f"is not a file; {expected}")
    text = read_text(file, CONFIG_BYTES, "DeepSpeed JSON config")
    if not isinstance(load_json(text, str(file)), dict):   # not JSON: bad input, naming the file
        raise InputError(str(file), None, "expected a JSON object (a DeepSpeed config)")
    given = {f for a, f in ARG_FIELDS if getattr(args, a) is not None}
    # a --dtype flag outranks even the file's own precision section (_workload applies the flags after this)
    return deepspeed_fields(text, path, fields | {f: True for f in given})


def _workload(args: argparse.Namespace, base: dict[str, Any]) -> Workload:
    from .versions import resolve, with_deepspeed, with_facts

    fields = dict(base)
    if args.deepspeed_config:
        fields.update(_deepspeed_file(args.deepspeed_config, fields, args))
    if getattr(args, "facts", None):   # the snapshot's installed transformers / peft / bitsandbytes
        from .. import facts as facts_mod

        fields = with_facts(fields, facts_mod.load(args.facts))
    for arg, field in ARG_FIELDS:
        value = getattr(args, arg)
        if value is not None:
            fields[field] = ATTN_ALIASES.get(value, value) if arg == "attention" else value
    if args.deepspeed_config and getattr(args, "offload_params", None) is None and (fields.get("zero") or 0) < 3:
        fields.pop("offload_params", None)   # a --zero below 3 over the file's ZeRO-3: DeepSpeed reads offload_param
        # in ZeRO-3 only (config-json.md: "Valid only with stage 3"); deepspeed_fields does so for a file's stage
    fields = with_deepspeed(fields, getattr(args, "deepspeed_version", None))   # ZeRO-1/2 offload staging
    wl = Workload(**resolve(fields))
    for flag, value, problem in contradictions(wl):
        raise InputError(flag, value, problem)
    return wl


def unused_flags(args: argparse.Namespace, wl: Workload) -> list[str]:
    """A note for each flag given that changes nothing in this workload (said, so a mistyped set-up is seen)."""
    unused: list[tuple[str, str]] = []
    if wl.method not in ("lora", "qlora"):
        unused += [(flag, f"the method is {wl.method}, not LoRA") for flag, value in (
            ("--lora-rank", args.lora_rank), ("--lora-targets", args.lora_targets),
            ("--adapter-dtype", args.adapter_dtype), ("--lora-dropout", args.lora_dropout)) if value is not None]
    if getattr(args, "zero_init", None) is False and wl.zero != 3:
        unused.append(("--no-zero-init", "zero.Init builds the model partitioned under ZeRO-3 only"))
    if getattr(args, "load_dtype", None) and wl.zero is None and wl.fsdp is None:
        unused.append(("--load-dtype", "the CPU model load is counted for DeepSpeed / FSDP jobs only"))
    if args.gpu and (args.gpu_memory or args.facts):
        unused.append(("--gpu", "--gpu-memory, else --facts, sets the GPU"))
    return [f"{flag} changes nothing here: {why}" for flag, why in unused]


def gpu_capacity(args: argparse.Namespace, profile_gpu: dict[str, Any] | None) -> tuple[int | None, str, float | None]:
    """(usable bytes, label, compute capability) from --gpu-memory, --facts, --gpu or the profile's machine."""
    if args.gpu_memory:
        size = parse_size(args.gpu_memory)
        if size <= 0:
            raise InputError("--gpu-memory", args.gpu_memory, "expected a capacity above zero, e.g. 24GB")
        return size, f"{size / 2**30:.2f} GiB (--gpu-memory {args.gpu_memory})", None
    if args.facts:
        from .. import facts as facts_mod

        data = facts_mod.load(args.facts)
        devs = (data.get("gpu") or {}).get("devices") or []
        if not devs or not (devs[0].get("memory") or {}).get("total_bytes"):
            raise InputError(args.facts, "gpu.devices[0].memory", "no GPU memory recorded; expected a snapshot from a GPU machine")
        dev = devs[0]
        used = (dev["memory"].get("used_mib") or 0) * 2**20
        cc = dev.get("compute_capability")
        name = dev.get("name") or "GPU 0 (unnamed)"
        return dev["memory"]["total_bytes"] - used, f"{name} ({args.facts}, {used / 2**30:.2f} GiB in use)", \
            float(cc) if cc else None
    name = args.gpu or (profile_gpu or {}).get("name") or (profile_gpu or {}).get("model")
    if not name:
        return None, "", None
    row = spec_for(name)
    # the flag, or the profile key the name came from
    source, key = ("--gpu", name) if args.gpu else (" + ".join(args.profile or []), f"machine.gpu.name: {name}")
    if row is None:
        raise InputError(source, key, "names no single GPU of doctor's table; expected a name `doctor gpus` "
                         "lists, or give --gpu-memory SIZE")
    if not (row.get("nvml_total_mib") or row.get("memory_gb")):
        raise InputError(source, key, f"doctor's table has no memory figure for {row['name']}; give --gpu-memory SIZE")
    if row.get("nvml_total_mib"):
        total = row["nvml_total_mib"] * 2**20
        return total, f"{row['name']} ({total / 2**30:.1f} GiB, as NVML reports it)", float(row["cc"])
    # GPU memory is sold in binary units written GB (an "80GB" A100 reports 81920 MiB); NVML's total can be a
    # little lower than the nominal figure, and the table has no NVML figure for this card: the label says so
    total = row["memory_gb"] * 2**30
    return total, f"{row['name']} (nominal {row['memory_gb']:g} GB taken as GiB; NVML's total for it is not in " \
                  "doctor's table and may be slightly lower)", float(row["cc"])


def spec_for(name: str) -> dict[str, Any] | None:
    """The GPU a user names: an exact NVML name, a display name of doctor's table (case and punctuation aside),
    or words that pick rows agreeing on memory and compute capability ("A800 80GB": the SXM4 and PCIe rows)."""
    from .. import refdata

    exact = refdata.gpu_spec(name)
    if exact:
        return exact
    rows = refdata.load("gpus")["gpus"]
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for row in rows:
        if re.sub(r"[^a-z0-9]", "", row["name"].lower()) == key:
            return row
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    picked = [r for r in rows if words and all(w in re.split(r"[^a-z0-9]+", r["name"].lower()) for w in words)]
    if picked and len({(r.get("memory_gb"), r.get("nvml_total_mib"), r["cc"]) for r in picked}) == 1:
        return picked[0]
    return None


def run(args: argparse.Namespace) -> int:
    from .arch import from_config
    from .catalogue import resolve
    from .whatif import what_ifs

    if args.simulate and args.model and not args.profile:   # an architecture doctor has no formula for
        from .simulate import alone

        code = alone(args.model, args.offline, lambda: _workload(args, {}), args.simulate_timeout,
                     args.format == "json")
        if code is not None:
            return code
    model, base, profile_gpu, resolved, headroom = None, {}, None, {}, 10.0
    if args.profile:
        from ..profile import load
        from ..registry import discover

        prof = load(list(args.profile), discover(), offline=args.offline)
        found, job = prof.value("job")
        if found:
            model, base = workload_from_job(job)
            resolved = (job.get("workload") or {}).get("resolved_config") or {}
        profile_gpu = prof.value("machine.gpu")[1]
        headroom = next((float(c["params"]["headroom_pct"]) for c in prof.checks if c["id"] == "vram.budget"
                         and "headroom_pct" in (c.get("params") or {})), headroom)
    if args.model or not model:
        model = args.model
        if not model:
            raise InputError("--model", None, "missing; give --model NAME|PATH|ORG/NAME or a job --profile naming one")
        arch = resolve(model, offline=args.offline)
    elif resolved.get("error") or "config" not in resolved:   # the profile's model, read when it was loaded
        raise InputError(" + ".join(args.profile), "job.workload.model", f"{model!r}: {resolved.get('error')}")
    else:
        arch = from_config(resolved["config"], name=model, source=str(resolved.get("source")))
    wl = _workload(args, base)
    capacity, label, cc = gpu_capacity(args, profile_gpu)
    wl = replace(wl, sm=cc)
    est = estimate(arch, wl)
    est.notes[:0] = unused_flags(args, wl)
    second = None
    if wl.method == "hessian":
        from .second_order import plan as second_order_plan

        est, second = second_order_plan(arch, wl, est, args.hessian or "hvp", args.probes or 1,
                                        args.calibration_samples or GPTQ_NSAMPLES, capacity)
    elif args.hessian or args.probes or args.calibration_samples:
        flag = "--hessian" if args.hessian else "--probes" if args.probes else "--calibration-samples"
        raise InputError(flag, str(args.hessian or args.probes or args.calibration_samples),
                         f"applies to --method hessian only; the method is {wl.method}")
    for flag, value, problem in model_problems(arch, wl, est, model):
        raise InputError(flag, value, problem)
    verdict = fits(est, capacity, headroom) if capacity else None
    options = what_ifs(arch, wl, capacity, est) if verdict in ("does not fit", "tight") or capacity is None else []
    if second is not None and second.kind != "hvp":   # the what-ifs re-estimate an HVP
        options = []
    sim = None
    if args.simulate:
        from .simulate import for_command

        sim = for_command(model, {} if args.model else resolved, arch, wl, est, args.simulate_timeout,
                          args.offline)
    if args.format == "json":
        out = {"schema": "doctor.estimate/1", "model": model, "model_source": arch.source,
               "workload": {k: v for k, v in wl.__dict__.items() if k not in ("cuda_context_mib",)},
               **est.to_dict(), "units": "bytes (GiB = 2**30)",
               "gpu": {"label": label, "capacity_bytes": capacity} if capacity else None, "verdict": verdict,
               # a paged optimizer's state that does not fit the GPU pages out to CPU RAM (slower steps)
               "fits_by_paging_bytes": est.peak_bytes - capacity if capacity and verdict == "does not fit"
               and est.paged_bytes and est.peak_bytes - est.paged_bytes <= capacity else None,
               "what_ifs": [{"change": w.change, "flags": w.flag, "cost": w.cost, "peak_bytes": w.estimate.peak_bytes,
                             "fits": capacity is None or w.estimate.peak_bytes <= capacity} for w in options]}
        if sim is not None:
            out["simulation"] = sim.to_dict()
        if second is not None:
            out["second_order"] = second.to_dict(capacity)
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        from .render import render

        render(model, arch, wl, est, capacity, label, verdict, options)
        if second is not None:
            from rich.console import Console

            Console(highlight=False).print("\n".join(second.lines(capacity)), markup=False)
        if sim is not None:
            from .simulate import render as render_simulation

            render_simulation(sim)
    nowhere = second is not None and second.kind == "full" and second.full_verdict.startswith("cannot fit")
    return 1 if verdict == "does not fit" or nowhere else 0
