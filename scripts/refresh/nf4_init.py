"""Rebuild doctor/data/nf4_init.yaml: the device allocations of torchtune 0.1's QLoRA model build on torchao 0.1.

    python scripts/refresh_data.py nf4-init --python PY [--out doctor/data/nf4_init.yaml] [--check]
    python scripts/refresh_data.py nf4-init --traces TRACES.json ...    # from a saved trace instead

PY is an interpreter with torch, torchao==0.1 and torchtune==0.1.1 (torchtune 0.1.x pins torchao==0.1):

    python -m venv /tmp/nf4 && /tmp/nf4/bin/pip install torch==2.13.0 torchao==0.1 && \\
        /tmp/nf4/bin/pip install --no-deps torchtune==0.1.1

It runs scripts/refresh/_trace_nf4.py there, which records every allocation and free (torch.profiler,
profile_memory) of each step torchtune takes per LoRA linear: build (nn.Linear's bf16 weight, then to_nf4),
clone (deepcopy re-quantizes through torchtune's NF4 clone override) and load (load_state_dict's copy_ override
re-quantizes the checkpoint tensor), and of the dequantization torchao's linear_nf4 runs in forward and backward
(weight.to(bfloat16)), for three weight shapes. The steps are the same sequence of allocations at
every shape, each size a fixed multiple of the weight's element count n or a constant, and are written that way
("2n", "n/32", 32). On CUDA, copy_'s `.to(dest_tensor.device)` allocates the checkpoint tensor on the device (2
bytes per element in fp16 or bf16); on CPU it is a no-op, so the load steps are written with that copy added
(`h2d`), alive from the step's start until to_nf4 returns, before the module's old storages are released. The
CPU trace also holds the 1-8 byte scalar operands (`>> 4`, `& 0b1111`) that stay on the host on CUDA: they are
kept, each at most one 512-byte small-pool block while it lives.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

NAME = "nf4-init"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "doctor" / "data" / "nf4_init.yaml"
TRACER = Path(__file__).resolve().parent / "_trace_nf4.py"
SHAPES = ((4096, 4096), (4096, 11008), (11008, 4096))   # Llama-2-7B's attention, up/gate and down projections
STEPS = ("build", "clone", "load_fp16", "load_bf16", "dequantize")
LORA_RANK = 8    # the tracer's LoRALinear rank: lora_a is rank x in, lora_b out x rank, both bf16

HEADER = """\
# torchtune 0.1.x QLoRA on torchao 0.1: the device allocations of each LoRA linear's build, clone and load steps,
# and of linear_nf4's dequantization (weight.to(bfloat16)).
# Written by `python scripts/refresh_data.py nf4-init` (scripts/refresh/nf4_init.py) from a torch.profiler trace
# of the real code: do not edit by hand. Sizes: "Kn" / "n/D" / "Kn/D" are multiples of the weight's element count
# n, lora_a / lora_b the adapter matrices (rank x in, out x rank, bf16), integers are bytes. Events: [a, id, size]
# allocates, [f, id] frees, [fo, name] frees the module's storage `name` from before the step.
"""


def symbolic(size_by_shape: list[int], ns: list[int]) -> str | int:
    """One allocation's size over the traced shapes as a constant or a fixed multiple of n."""
    if len(set(size_by_shape)) == 1:
        return size_by_shape[0]
    ratios = {Fraction(s, n) for s, n in zip(size_by_shape, ns)}
    if len(ratios) != 1:
        raise ValueError(f"sizes {size_by_shape} at n={ns} are neither constant nor a fixed multiple of n")
    r = ratios.pop()
    num = "" if r.numerator == 1 else str(r.numerator)
    return f"{num}n" + ("" if r.denominator == 1 else f"/{r.denominator}")


def step_of(shapes: list[dict[str, Any]], step: str) -> dict[str, Any]:
    """The step's events, the same at every shape, with sizes made symbolic."""
    runs = [s[step] for s in shapes]
    ns = [s["in"] * s["out"] for s in shapes]
    keeps = runs[0]["keeps"]
    if any(r["keeps"] != keeps or len(r["events"]) != len(runs[0]["events"]) for r in runs):
        raise ValueError(f"{step}: the traced shapes do not take the same steps")
    lora = {int(k): name for k, name in keeps.items() if name in ("lora_a", "lora_b")}
    events: list[list[Any]] = []
    for i, first in enumerate(runs[0]["events"]):
        same = [r["events"][i] for r in runs]
        if any(e[:2] != first[:2] for e in same):
            raise ValueError(f"{step}: event {i} differs between shapes: {[e[:2] for e in same]}")
        if first[0] != "a":
            events.append(list(first))
            continue
        if first[1] in lora:
            want = [LORA_RANK * 2 * (s["in"] if lora[first[1]] == "lora_a" else s["out"]) for s in shapes]
            if [e[2] for e in same] != want:
                raise ValueError(f"{step}: {lora[first[1]]} is {[e[2] for e in same]} B, expected {want}")
            events.append(["a", first[1], lora[first[1]]])
        else:
            events.append(["a", first[1], symbolic([e[2] for e in same], ns)])
    if step.startswith("load"):
        cut = next(i for i, e in enumerate(events) if e[0] == "fo")
        events = [["a", "h2d", "2n"], *events[:cut], ["f", "h2d"], *events[cut:]]
    return {"events": events, "keeps": {int(k): v for k, v in keeps.items()}}


def build(traced: dict[str, Any]) -> dict[str, Any]:
    shapes = traced["shapes"]
    if len(shapes) < 2 or len({s["in"] * s["out"] for s in shapes}) < 2:
        raise ValueError("need traces of at least two weight sizes to tell constants from multiples of n")
    return {
        "source": ("torchtune 0.1.1 (PyPI wheel; torchtune/modules/peft/lora.py LoRALinear._create_weight_and_bias: "
                   "to_nf4(linear.weight); torchtune/utils/_register_nf4_dispatch_ops.py clone and inplace_copy "
                   "overrides; Requires-Dist: torchao ==0.1) on torchao 0.1 (torchao/dtypes/nf4tensor.py "
                   "quantize_tensor_nearest: \"diff = (value - nf4).abs()\", an n x 16 tensor; pytorch/ao 6081796 "
                   "\"perform in chunks (#196)\" quantizes in 1024**2-element chunks from v0.2.0)"),
        "traced_with": {"torch": traced["torch"], "torchao": traced["torchao"], "torchtune": traced["torchtune"],
                        "shapes": [[s["out"], s["in"]] for s in shapes]},
        "chunked_since": "0.2.0",
        "lora_rank_traced": LORA_RANK,
        "steps": {step: step_of(shapes, step) for step in STEPS},
    }


def dump(data: dict[str, Any]) -> str:
    """YAML with one event per flow-style list, so the file reads (and diffs) line by line."""
    lines = [HEADER.rstrip("\n")]
    for key in ("source", "traced_with", "chunked_since", "lora_rank_traced"):
        lines.append(yaml.safe_dump({key: data[key]}, default_flow_style=False, width=116, sort_keys=False).rstrip())
    lines.append("steps:")
    for step, body in data["steps"].items():
        lines.append(f"  {step}:")
        lines.append("    keeps: {" + ", ".join(f"{k}: {v}" for k, v in body["keeps"].items()) + "}")
        lines.append("    events:")
        lines += [f"      - {json.dumps(e)}" for e in body["events"]]
    return "\n".join(lines) + "\n"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(NAME, help="torchtune 0.1 QLoRA build allocations on torchao 0.1 (traced)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--python", help="interpreter with torch, torchao==0.1 and torchtune==0.1.1")
    src.add_argument("--traces", help="a JSON trace _trace_nf4.py wrote")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--check", action="store_true", help="exit 1 when the file would change; write nothing")


def run(args: argparse.Namespace) -> int:
    if args.traces:
        traced = json.loads(Path(args.traces).read_text())
    else:
        dims = [str(d) for shape in SHAPES for d in shape]
        done = subprocess.run([args.python, str(TRACER), *dims], capture_output=True, text=True, check=False)
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        traced = json.loads(done.stdout)
    text = dump(build(traced))
    out = Path(args.out)
    if args.check:
        same = out.exists() and out.read_text() == text
        print(f"{out}: {'up to date' if same else 'would change'}")
        return 0 if same else 1
    out.write_text(text)
    print(f"wrote {out}")
    return 0
