"""Host memory of FSDP CPU offload, measured beside doctor's model of it (issue 18's open CPU RAM row).

doctor counts FSDP CPUOffload(offload_params=True) as torch allocates it (docs/estimate.md): each flat parameter
pinned, rounded up to a power of two by the CUDA caching host allocator, with a pinned gradient buffer of its size,
and a lazy-init moment when each unpinned flat parameter still sits beside its pinned copy until its unit's first
forward. This runs a one-rank FSDP job (PEFT LoRA on all linears of a Llama-shaped model with random bf16 weights,
PEFT's wrap policy, use_orig_params=False) in a child process under a timeout, reads /proc/self/status (RssAnon,
RssShmem, VmLck, ...) at each moment, and writes them beside doctor's figures for the same model and workload:

- pinned: the rise from "wrapped" to "lazy init" (RssShmem with CUDA; RssAnon with --fake-pin) against doctor's
  pinned bytes (params_shard + grads_shard + pinned_rounding; without the rounding under --fake-pin);
- unpinned released: the fall of RssAnon from "lazy init" to its lowest after steps 1-3 against doctor's
  params_shard (with CUDA the first unshard copies each flat parameter to the GPU and drops the unpinned storage;
  with --fake-pin the module's views keep it until step 2, and the CPU step's own allocations blur the figure);
- the process's own host memory (RssAnon with torch, CUDA and the process group up, before any model) against
  doctor's 4 GiB allowance.

    python benchmarks/fsdp_offload_host.py              # a CUDA machine: Llama-2-7B shapes, 4 blocks (about a minute)
    python benchmarks/fsdp_offload_host.py --fake-pin   # anywhere: pin_memory() is a plain copy, compute on the CPU

One rank runs FSDP as NO_SHARD (torch switches FULL_SHARD to it at world size 1); the host side is the same code
(_flat_param.py init_flat_param_attributes). Writes benchmarks/results/fsdp-offload-host-<date>[-fake-pin].json;
exit 0 when it measured, 1 when the child failed or ran out of --timeout.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from clean_cache_scale import machine  # noqa: E402

# Llama-2-7B's block and vocabulary (doctor/data/models/llama-2-7b.json), fewer blocks; for --fake-pin, one whose
# blocks and root (56 and 49 MB) pass glibc's largest mmap threshold (32 MiB), so a freed one leaves RssAnon
SHAPES = {"cuda": {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
                   "num_key_value_heads": 32, "num_hidden_layers": 4, "vocab_size": 32000},
          "fake-pin": {"hidden_size": 1536, "intermediate_size": 4096, "num_attention_heads": 12,
                       "num_key_value_heads": 12, "num_hidden_layers": 2, "vocab_size": 8000}}
STATUS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmLck", "VmPin")


def status() -> dict[str, int]:
    """This process's /proc/self/status memory lines, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in STATUS:
                out[key] = int(value.split()[0]) * 1024
    return out


def child(cfg: dict[str, Any], seq: int, fake_pin: bool, out: Path, port: int) -> None:
    """The measured job; writes the moments, torch's CUDA peaks and the flat parameters to `out`."""
    moments: dict[str, dict[str, int]] = {"python": status()}
    import torch
    import torch.distributed as dist

    moments["torch imported"] = status()
    cuda = torch.cuda.is_available() and not fake_pin
    if not cuda and not fake_pin:
        raise SystemExit("no CUDA device: FSDP's CPU offload pins memory through CUDA; run with --fake-pin")
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if cuda:
        torch.zeros(1, device=device)
        moments["cuda up"] = status()
    else:   # CPUOffload pins through CUDA: a copy stands in for it, so the moments show without the rounding
        torch.Tensor.pin_memory = lambda self, *a, **k: self.clone()  # type: ignore[method-assign]
        torch.cpu.Stream.synchronize = lambda self: None   # FSDP's post-backward syncs the offload's stream
    import peft
    import transformers
    from peft.utils.other import fsdp_auto_wrap_policy
    from torch.distributed.fsdp import CPUOffload
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp._runtime_utils import _lazy_init

    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    moments["process group"] = status()
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**cfg), torch_dtype=torch.bfloat16)
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules="all-linear"))
    moments["model built"] = status()
    f = FSDP(model, auto_wrap_policy=fsdp_auto_wrap_policy(model), use_orig_params=False, device_id=device,
             cpu_offload=CPUOffload(offload_params=True))
    moments["wrapped"] = status()
    _lazy_init(f, f)
    moments["lazy init"] = status()
    opt = torch.optim.AdamW([p for p in f.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, cfg["vocab_size"], (1, seq), device=device)
    for step in (1, 2, 3):
        f(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        moments[f"step {step}"] = status()
    flat = [u._handle.flat_param for u in f.modules() if isinstance(u, FSDP) and u._handle is not None]
    doc = {"moments": moments, "device": str(device), "torch": torch.__version__,
           "transformers": transformers.__version__, "peft": peft.__version__,
           "flat_parameters": [[p.numel(), p.element_size(), p.requires_grad] for p in flat]}
    if cuda:
        doc["cuda"] = {"name": torch.cuda.get_device_name(0), "max_allocated": torch.cuda.max_memory_allocated(),
                       "max_reserved": torch.cuda.max_memory_reserved()}
    out.write_text(json.dumps(doc))
    dist.destroy_process_group()


def doctor_figures(cfg: dict[str, Any], seq: int) -> dict[str, Any]:
    """doctor's host memory for the same model and workload (distributed.Memory.cpu_block)."""
    sys.path.insert(0, str(ROOT))
    from doctor.vram.arch import from_config
    from doctor.vram.distributed import PROCESS_ALLOWANCE_GIB
    from doctor.vram.estimator import Workload, distributed_memory

    arch = from_config({"model_type": "llama", **cfg, "tie_word_embeddings": False}, name="llama-shaped")
    wl = Workload(method="lora", dtype="bf16", adapter_dtype="fp32", lora_targets="all-linear", lora_rank=8,
                  batch=1, seq=seq, fsdp="full", world_size=1, offload_params="cpu", load_dtype="bf16")
    mem = distributed_memory(arch, wl)
    assert mem is not None
    return {"workload": wl.__dict__, "cpu": mem.cpu_block(), "process_allowance_gib": PROCESS_ALLOWANCE_GIB}


def compare(measured: dict[str, Any], figures: dict[str, Any], fake_pin: bool) -> dict[str, Any]:
    """Measured moments against doctor's terms (bytes, and measured / doctor)."""
    m = measured["moments"]
    terms = {k: v["bytes"] for k, v in figures["cpu"]["terms"].items()}
    kind = "RssAnon" if fake_pin else "RssShmem"
    pinned = m["lazy init"][kind] - m["wrapped"][kind]
    expected = terms["cpu.params_shard"] + terms["cpu.grads_shard"] + (0 if fake_pin else terms["cpu.pinned_rounding"])
    released = m["lazy init"]["RssAnon"] - min(m[f"step {i}"]["RssAnon"] for i in (1, 2, 3))
    base = m["process group"]["RssAnon"]
    out = {"pinned": {"measured": pinned, "doctor": expected, "ratio": round(pinned / expected, 4), "counter": kind},
           "unpinned_released": {"measured": released, "doctor": terms["cpu.params_shard"],
                                 "ratio": round(released / terms["cpu.params_shard"], 4)},
           "process_before_model": {"RssAnon": base, "allowance": int(figures["process_allowance_gib"] * 2**30)}}
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fake-pin", action="store_true", help="pin_memory() as a plain copy, compute on the CPU")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--output", type=Path)
    ap.add_argument("--child", nargs=3, metavar=("CONFIG", "OUT", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child[0]), args.seq, args.fake_pin, Path(args.child[1]), int(args.child[2]))
        return 0
    cfg = SHAPES["fake-pin" if args.fake_pin else "cuda"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.json"
        cmd = [sys.executable, __file__, "--seq", str(args.seq), *(["--fake-pin"] if args.fake_pin else []),
               "--child", json.dumps(cfg), str(out), str(port)]
        doc: dict[str, Any] = {"command": " ".join(["python", "benchmarks/fsdp_offload_host.py", *argv]),
                               "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                               "config": cfg, "seq": args.seq, "fake_pin": args.fake_pin, "machine": machine()}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
            doc["child"] = {"returncode": proc.returncode, "stderr_tail": proc.stderr[-3000:]}
        except subprocess.TimeoutExpired:   # a hang is a finding
            doc["child"] = {"returncode": None, "timed_out_s": args.timeout}
        ok = out.exists()
        if ok:
            doc["measured"] = json.loads(out.read_text())
    doc["doctor"] = doctor_figures(cfg, args.seq)
    if ok:
        doc["comparison"] = compare(doc["measured"], doc["doctor"], args.fake_pin)
    day = _dt.date.today().isoformat()
    name = f"fsdp-offload-host-{day}{'-fake-pin' if args.fake_pin else ''}.json"
    path = args.output or ROOT / "benchmarks" / "results" / name
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{path}: " + (json.dumps(doc["comparison"]) if ok else f"the child failed: {doc['child']}"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
