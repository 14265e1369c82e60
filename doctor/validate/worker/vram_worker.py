"""doctor validate's memory worker: build set-ups from model configs (random weights, no download), run
one training or generation step each, and print what the device's memory really peaked at.

Standalone (imports nothing of doctor), run by the job's interpreter. Reads a JSON list of set-ups; prints one
JSON line per set-up (`{"event": "setup", ...}`) as it finishes, so a crash or a hang keeps the earlier ones.
On a GPU the caller starts one process per set-up: the CUDA context and the allocator's peak are then the
set-up's own. Measuring only reads NVML and torch's allocator statistics; no GPU setting is changed.
"""
import argparse
import contextlib
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import traceback

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def emit(event, **data):
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


class Nvml:
    """Device-level and per-process used memory from NVML, when nvidia-ml-py is importable here."""

    def __init__(self, index):
        self.handle, self.nvml, self.reason = None, None, None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = self._handle(pynvml, index)
        except Exception as exc:  # no NVML: the NVML columns stay unknown
            self.reason = "%s: %s" % (type(exc).__name__, exc)

    @staticmethod
    def _handle(pynvml, index):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        if visible.startswith(("GPU-", "MIG-")):
            return pynvml.nvmlDeviceGetHandleByUUID(visible.split(",")[0])
        return pynvml.nvmlDeviceGetHandleByIndex(index)

    def used(self):
        if self.handle is None:
            return None
        try:
            return int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)
        except Exception:
            return None

    def own_process(self):
        """This process's used memory as NVML lists it (None where the PID namespace hides it)."""
        if self.handle is None:
            return None
        try:
            for proc in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
                if proc.pid == os.getpid() and isinstance(proc.usedGpuMemory, int):
                    return int(proc.usedGpuMemory)
        except Exception:
            return None
        return None


def load_config(spec):
    from transformers import AutoConfig

    cfg = {k: v for k, v in spec["config"].items()
           if k not in ("_name_or_path", "architectures", "torch_dtype", "dtype", "transformers_version")}
    model_type = cfg.pop("model_type")
    return AutoConfig.for_model(model_type, **cfg)


def from_config(config, torch_dtype, attention):
    """AutoModelForCausalLM.from_config across transformers versions (`dtype` from 4.56, `torch_dtype` before)."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_config(config, dtype=torch_dtype, attn_implementation=attention)
    except TypeError:
        return AutoModelForCausalLM.from_config(config, torch_dtype=torch_dtype, attn_implementation=attention)


def attention_name(spec):
    return {"flash": "flash_attention_2"}.get(spec.get("attention", "sdpa"), spec.get("attention", "sdpa"))


def build(spec, torch, device):
    """The model of a set-up on `device`: random weights, in the set-up's dtype (fp32 with AMP), quantized
    through transformers' bitsandbytes integration for QLoRA, wrapped by PEFT for LoRA."""
    config = load_config(spec)
    dtype = getattr(torch, DTYPES["fp32" if spec.get("amp") else spec["dtype"]])
    torch.manual_seed(0)
    if spec.get("quant") == "nf4":
        model = quantized(spec, config, torch, device)
    else:
        with torch.device(device):
            model = from_config(config, dtype, attention_name(spec))
    if spec.get("checkpointing"):
        checkpointing(model)
    if spec["method"] in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=spec["lora_rank"], lora_alpha=2 * spec["lora_rank"],
                                                 target_modules=list(spec["lora_modules"]), task_type="CAUSAL_LM"))
    return model


def quantized(spec, config, torch, device):
    """NF4 through the path users take: a checkpoint on disk, loaded with a BitsAndBytesConfig."""
    import bitsandbytes  # noqa: F401  (a missing wheel is a skipped set-up, not an error)
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    compute = getattr(torch, DTYPES[spec["dtype"]])
    folder = tempfile.mkdtemp(prefix="doctor-validate-")
    try:
        with torch.device("cpu"):
            from_config(config, compute, attention_name(spec)).save_pretrained(folder)
        gc.collect()
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                                 bnb_4bit_use_double_quant=bool(spec.get("double_quant")))
        kwargs = dict(quantization_config=bnb, attn_implementation=attention_name(spec),
                      device_map={"": device.index if device.type == "cuda" else "cpu"})
        try:
            return AutoModelForCausalLM.from_pretrained(folder, dtype=compute, **kwargs)
        except TypeError:
            return AutoModelForCausalLM.from_pretrained(folder, torch_dtype=compute, **kwargs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def checkpointing(model):
    """Every block keeps only its input and recomputes the rest in backward (non-reentrant torch.utils.checkpoint).
    transformers renamed the switch to activation_checkpointing_enable in 5.x; older releases have only the first."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def optimizer(spec, torch, params):
    name = spec.get("optimizer", "adamw")
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    return torch.optim.AdamW(params, lr=1e-5, fused=True if name == "adamw_fused" else None)


def train(spec, torch, model, ids, device):
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer(spec, torch, params)
    amp = (torch.autocast(device.type, dtype=getattr(torch, DTYPES[spec["dtype"]])) if spec.get("amp")
           else contextlib.nullcontext())
    losses = []
    for _ in range(spec.get("steps", 2)):   # two steps: the optimizer states exist from the first step on
        with amp:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return {"losses": losses, "trainable_params": sum(p.numel() for p in params)}


def generate(spec, torch, model, ids):
    model.eval()
    new = spec["context"] - spec["seq"]
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                             min_new_tokens=new, do_sample=False, pad_token_id=0)
    return {"generated_tokens": int(out.shape[1] - ids.shape[1])}


def hvp(spec, torch, model, ids):
    """One Hessian-vector product by double backward, as `doctor bench` computes it."""
    import bench_hvp

    model.train()
    loss = bench_hvp.CausalLMLoss(model)
    gen = torch.Generator(device=ids.device).manual_seed(2)
    vec = {n: torch.randn(p.shape, dtype=p.dtype, device=p.device, generator=gen) for n, p in loss.named_parameters()}
    hv = bench_hvp.hvp_double_backward(loss, (ids,), vec)
    return {"hv_norm": float(sum(float((t.double() ** 2).sum()) for t in hv.values()) ** 0.5)}


def run_one(spec, torch, device, nvml):
    t0 = time.perf_counter()
    cuda = device.type == "cuda"
    baseline = nvml.used() if cuda else None   # before this process touches the GPU
    if cuda:
        torch.cuda.set_device(device)
        torch.cuda.init()
    model = build(spec, torch, device)
    built_s = time.perf_counter() - t0
    stats = {}
    if cuda:
        torch.cuda.synchronize(device)
        stats["build_reserved_peak_bytes"] = int(torch.cuda.max_memory_reserved(device))
        stats["build_allocated_peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
        torch.cuda.reset_peak_memory_stats(device)
    gen = torch.Generator(device=device).manual_seed(1)
    vocab = spec["config"]["vocab_size"]
    ids = torch.randint(3, vocab, (spec["batch"], spec["seq"]), device=device, generator=gen)
    t1 = time.perf_counter()
    if spec["method"] == "inference":
        info = generate(spec, torch, model, ids)
    elif spec["method"] == "hessian":
        info = hvp(spec, torch, model, ids)
    else:
        info = train(spec, torch, model, ids, device)
    if cuda:
        torch.cuda.synchronize(device)
        steps_reserved = int(torch.cuda.max_memory_reserved(device))
        reserved_now = int(torch.cuda.memory_reserved(device))
        used_now = nvml.used()
        process = nvml.own_process()
        reserved_peak = max(steps_reserved, stats["build_reserved_peak_bytes"])
        stats.update(steps_reserved_peak_bytes=steps_reserved,
                     steps_allocated_peak_bytes=int(torch.cuda.max_memory_allocated(device)),
                     reserved_peak_bytes=reserved_peak, reserved_now_bytes=reserved_now,
                     nvml_baseline_used_bytes=baseline, nvml_used_bytes=used_now, nvml_process_bytes=process)
        # What the process holds outside torch's allocator (the CUDA context, loaded kernels): NVML's
        # figure for the process now, less what the allocator holds now. NVML's peak is that plus the
        # allocator's peak.
        own = process if process is not None else (used_now - baseline if None not in (used_now, baseline) else None)
        if own is not None:
            stats["nvml_own_bytes"] = own
            stats["outside_allocator_bytes"] = own - reserved_now
            stats["nvml_peak_bytes"] = own - reserved_now + reserved_peak
    return {"measured": stats or None, "info": info, "build_s": round(built_s, 3),
            "run_s": round(time.perf_counter() - t1, 3)}


def versions(torch):
    out = {"torch": torch.__version__, "cuda_build": torch.version.cuda,
           "env": {k: os.environ.get(k) for k in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF",
                                                   "CUBLAS_WORKSPACE_CONFIG", "CUDA_MODULE_LOADING")}}
    for name in ("transformers", "peft", "bitsandbytes", "accelerate"):
        try:
            from importlib.metadata import version

            out[name] = version(name)
        except Exception:
            out[name] = None
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--setups", required=True, help="JSON file: a list of set-ups")
    ap.add_argument("--device", choices=("cuda", "cpu"), required=True)
    ap.add_argument("--bench-worker-dir", required=True, help="folder of doctor's bench worker (bench_hvp.py)")
    ap.add_argument("--only", help="run only the set-up with this id")
    args = ap.parse_args(argv)
    sys.path.insert(0, args.bench_worker_dir)   # the bench worker's HVP and error classes, shared
    from bench_main import classify

    with open(args.setups, encoding="utf-8") as fh:
        setups = [s for s in json.load(fh) if args.only in (None, s["id"])]
    nvml = Nvml(0) if args.device == "cuda" else None
    import torch

    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    emit("versions", data=versions(torch), nvml=None if nvml is None else nvml.reason)
    for spec in setups:
        emit("progress", id=spec["id"])
        try:
            emit("setup", id=spec["id"], data=run_one(spec, torch, device, nvml))
        except Exception as exc:
            emit("setup", id=spec["id"], error=("%s: %s" % (type(exc).__name__, exc))[:600], kind=classify(exc),
                 trace=traceback.format_exc(limit=4)[-1200:])
        gc.collect()
    emit("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
