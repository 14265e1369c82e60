"""Trace, on CPU, every allocation and free of the three per-weight steps of torchtune 0.1's QLoRA model build.

Run by scripts/refresh/nf4_init.py in an interpreter that has torch, torchao==0.1 and torchtune==0.1.1 (the
torchao its pyproject pins). torchtune's package __init__ imports its datasets and tokenizers; only the two modules
measured here are loaded (the packages are registered as bare namespaces, so no other torchtune code runs).

    python _trace_nf4.py IN OUT [IN OUT ...]    -> JSON on stdout

For each (in, out) LoRALinear(in, out, rank=8, quantize_base=True) under the default dtype bf16:
- build: the constructor (nn.Linear's bf16 weight, then torchao's to_nf4);
- clone: copy.deepcopy of the built module (torchtune's NF4 clone override re-quantizes);
- load_fp16 / load_bf16: weight.copy_(a CPU state-dict tensor of that dtype) (torchtune's copy_ override);
- dequantize: weight.to(torch.bfloat16), what torchao's LinearNF4 does in forward and backward (keeps: the output).
Each event is ["a", id, bytes], ["f", id] or ["fo", name] (a storage of the module before the step, by name);
`keeps` maps the ids alive at the end to the module's storages.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
import types

import torch
from torch.profiler import ProfilerActivity, profile

NF4_PARTS = ("quantized_data", "quantized_scalers", "quantization_factor", "scaler_mean", "nf4")


def _torchtune() -> type:
    root = os.path.join(os.path.dirname(os.path.dirname(importlib.util.find_spec("torchao").origin)), "torchtune")
    for name in ("torchtune", "torchtune.modules", "torchtune.modules.peft", "torchtune.utils"):
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(root, *name.split(".")[1:])]
        sys.modules[name] = pkg
    import torchtune.utils._register_nf4_dispatch_ops  # noqa: F401  (clone / copy_ overrides)
    from torchtune.modules.peft.lora import LoRALinear
    return LoRALinear


def _storages(module: torch.nn.Module) -> dict[int, str]:
    out = {getattr(module.weight, part).untyped_storage().data_ptr(): part for part in NF4_PARTS}
    for name in ("lora_a", "lora_b"):
        out[getattr(module, name).weight.untyped_storage().data_ptr()] = name
    return out


def _trace(fn, before: dict[int, str]) -> tuple[list, object]:
    kind = torch._C._profiler._EventType.Allocation
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    raw = []

    def walk(node) -> None:
        if node.tag == kind:
            raw.append((node.start_time_ns, node.extra_fields.ptr, node.extra_fields.alloc_size))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    events, live, count = [], {}, 0
    for _, ptr, size in sorted(raw):
        if size > 0:
            live[ptr], count = count, count + 1
            events.append(["a", live[ptr], size])
        elif ptr in live:
            events.append(["f", live.pop(ptr)])
        elif ptr in before:
            events.append(["fo", before[ptr]])
        else:
            raise SystemExit(f"a free of {ptr:#x} ({-size} B) allocated neither in the step nor by the module")
    return events, (result, live)


def main(argv: list[str]) -> int:
    lora_linear = _torchtune()
    torch.set_default_dtype(torch.bfloat16)
    out = {"torch": torch.__version__, "torchao": _version("torchao"), "torchtune": _version("torchtune"), "shapes": []}
    for fan_in, fan_out in zip(map(int, argv[0::2]), map(int, argv[1::2])):
        shape: dict[str, object] = {"in": fan_in, "out": fan_out}
        events, (built, live) = _trace(lambda: lora_linear(fan_in, fan_out, rank=8, alpha=16, quantize_base=True), {})
        shape["build"] = _step(events, live, _storages(built))
        events, (clone, live) = _trace(lambda: copy.deepcopy(built), _storages(built))
        shape["clone"] = _step(events, live, _storages(clone))
        for dtype in ("fp16", "bf16"):
            # built under the profiler too: it reports the frees of blocks allocated while it ran, only
            _, (target, _) = _trace(lambda: copy.deepcopy(built), {})
            src = torch.randn(fan_out, fan_in, dtype=torch.float32).to(getattr(torch, {"fp16": "float16"}.get(
                dtype, "bfloat16")))

            def load() -> None:
                with torch.no_grad():
                    target.weight.copy_(src)    # what nn.Module._load_from_state_dict does with each tensor
            events, (_, live) = _trace(load, _storages(target))
            shape[f"load_{dtype}"] = _step(events, live, _storages(target), lora=False)
        events, (dense, live) = _trace(lambda: built.weight.to(torch.bfloat16), {})
        ptr = dense.untyped_storage().data_ptr()
        if set(live) != {ptr}:
            raise SystemExit("dequantize: allocations other than its output stay alive")
        shape["dequantize"] = {"events": events, "keeps": {live[ptr]: "output"}}
        out["shapes"].append(shape)
    json.dump(out, sys.stdout)
    return 0


def _step(events: list, live: dict[int, int], storages: dict[int, str], lora: bool = True) -> dict[str, object]:
    keeps = {live[ptr]: name for ptr, name in storages.items() if ptr in live}
    left = set(live.values()) - set(keeps)
    if left:
        raise SystemExit(f"ids {sorted(left)} stay allocated but are none of the module's storages")
    wanted = set(NF4_PARTS) | ({"lora_a", "lora_b"} if lora else set())
    if set(keeps.values()) != wanted:
        raise SystemExit(f"the step kept {sorted(keeps.values())}, expected {sorted(wanted)}")
    return {"events": events, "keeps": keeps}


def _version(dist: str) -> str:
    from importlib.metadata import version
    return version(dist)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
