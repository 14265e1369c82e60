"""Run by `doctor estimate --simulate` in a child process: one training or generation step of a Hugging Face
model under FakeTensorMode on fake CPU tensors, its peak live bytes measured by PyTorch's MemTracker.

Standalone (imports nothing of doctor). Reads one JSON request from the file argv[1] names; prints one JSON line
({"ok": true, ...} or {"ok": false, "stage": ..., "error": ...}) and leaves with os._exit, so no torch
teardown can hang after the answer.
"""
import json
import os
import sys
import time

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
CATEGORIES = {"Parameter": "params", "Buffer": "buffers", "Gradient": "grads", "Activation": "activations",
              "Temp": "backward_temporaries", "Optstate": "optimizer_states", "Other": "other"}


class Refusal(Exception):
    """The request cannot be simulated; the message says why."""


def emit(data):
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def first_line(exc):
    text = str(exc).strip().splitlines()
    return ("{}: {}".format(type(exc).__name__, text[0] if text else "")).strip()[:400]


def build_config(req, notes=None):
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    cfg = dict(req["config"])
    kind = cfg.get("model_type")
    if cfg.get("auto_map") and kind not in CONFIG_MAPPING_NAMES:
        raise Refusal("the config names custom code (auto_map) and --simulate runs no remote code "
                      "(trust_remote_code)")
    if kind not in CONFIG_MAPPING_NAMES:
        raise Refusal(f"model_type {kind!r} is not an architecture of transformers {transformers.__version__}")
    if cfg.get("auto_map") and notes is not None:
        notes.append(f"the config names custom code (auto_map); --simulate never sets trust_remote_code, so it ran "
                     f"transformers' built-in class for model_type {kind!r}, as from_pretrained does without "
                     "trust_remote_code, not the remote code")
    cfg.pop("model_type", None)
    return transformers.AutoConfig.for_model(kind, **cfg)


LM_SUFFIXES = ("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")


def model_class(config):
    """(the class to build, whether it is an Auto class): the first class the config's architectures names that has
    an LM head, else the model type's causal-LM class (AutoModelForCausalLM's, or AutoModelForImageTextToText's for
    a vision-language model): a training or generation step runs through the LM head, as the analytic estimate
    counts it. A Refusal naming `architectures` when there is none."""
    import transformers
    from transformers.models.auto import modeling_auto

    heads = {*modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values(),
             *modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.values()}
    named = [n for n in config.architectures or () if isinstance(n, str)]
    for name in named:
        cls = getattr(transformers, name, None)
        if cls is not None and (name in heads or name.endswith(LM_SUFFIXES)):
            return cls, False
    for auto in (transformers.AutoModelForCausalLM, transformers.AutoModelForImageTextToText):
        if type(config) in auto._model_mapping:
            return auto, True
    raise Refusal(f"the config's architectures ({', '.join(named) or 'none'}) names no class with an LM head and "
                  f"model_type {config.model_type!r} has no causal-LM or image-text-to-text class in transformers "
                  f"{transformers.__version__}: --simulate runs a training or generation step through the LM head")


def attention(req, notes):
    attn = req["attention"]
    if attn == "flash":
        notes.append("FlashAttention-2 does not run on the CPU: simulated with sdpa (CPU flash kernel: the same "
                     "saved tensors, output and logsumexp)")
        return "sdpa"
    return attn


def build_model(req, torch, notes):
    """The model built on the meta device (LoRA added there), then each parameter and buffer made a fake CPU tensor:
    PEFT's module moves cannot swap fake parameters in place."""
    config = build_config(req, notes)
    dtype = getattr(torch, DTYPES["fp32" if req["amp"] else req["dtype"]])
    cls, auto = model_class(config)

    def make(config, **kwargs):   # an Auto class through its public from_config, which picks the concrete class
        return cls.from_config(config, trust_remote_code=False, **kwargs) if auto else cls._from_config(config,
                                                                                                        **kwargs)

    kwargs = {"dtype": dtype, "attn_implementation": attention(req, notes)}
    with torch.device("meta"):
        try:
            model = make(config, **kwargs)
        except (ValueError, ImportError) as exc:   # an attention implementation this class does not offer
            if "attn" not in str(exc).lower() and "attention" not in str(exc).lower():
                raise
            kwargs.pop("attn_implementation")
            config = build_config(req)   # the refused attempt may have set an implementation on the config
            name = cls.__name__ if not auto else f"the {cls.__name__} class of model_type {config.model_type!r}"
            notes.append(f"{name} takes no attn_implementation={req['attention']}: simulated with its default")
            model = make(config, **kwargs)
        built_class = type(model).__name__
        named = [n for n in config.architectures or () if isinstance(n, str)]
        if auto and named:
            notes.append(f"the config's architectures ({', '.join(named)}) names no transformers class with an LM "
                         f"head: simulated {built_class}, the {cls.__name__} class of model_type "
                         f"{config.model_type!r} (the analytic estimate counts the head too)")
        if req["method"] == "lora":
            model = add_lora(model, req, torch)
    if any(hasattr(config, k) for k in ("state_size", "ssm_state_size", "mamba_d_state")):
        notes.append("state-space layers run transformers' reference PyTorch scan on the CPU (mamba_ssm and "
                     "causal_conv1d are CUDA kernels), which holds per-token state tensors the fused kernels do not: "
                     "activations are larger here than on a GPU with those kernels")
    return model, built_class


def materialize(model, torch):
    """Replace every meta parameter and buffer by a fake CPU tensor of its shape and dtype (call under
    FakeTensorMode); a tensor shared by two modules (tied embeddings) stays shared."""
    made = {}
    for mod in model.modules():
        for table, wrap in ((mod._parameters, True), (mod._buffers, False)):
            for name, t in list(table.items()):
                if t is None:
                    continue
                if id(t) not in made:
                    new = torch.empty(t.shape, dtype=t.dtype, device="cpu")
                    made[id(t)] = (t, torch.nn.Parameter(new, requires_grad=t.requires_grad) if wrap else new)
                table[name] = made[id(t)][1]


def add_lora(model, req, torch):
    from peft import LoraConfig, get_peft_model

    # no names: PEFT's default targets for the model type (an architecture doctor has no formula for)
    targets = "all-linear" if req["lora_targets"] == "all-linear" else list(req["lora_target_names"]) or None
    model = get_peft_model(model, LoraConfig(r=req["lora_rank"], lora_alpha=2 * req["lora_rank"],
                                             target_modules=targets, lora_dropout=0.0))
    adapter = getattr(torch, DTYPES[req["adapter_dtype"]])
    for name, p in model.named_parameters():
        if "lora_" in name and p.dtype != adapter:
            p.data = p.data.to(adapter)
    return model


def optimizer(req, params, torch):
    name = req["optimizer"]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-5, foreach=True)
    if name == "adamw_loop":
        return torch.optim.AdamW(params, lr=1e-5, foreach=False)
    if name == "adamw_fused":
        return torch.optim.AdamW(params, lr=1e-5, fused=True)
    if name == "sgd":   # doctor's sgd: with momentum (one buffer)
        return torch.optim.SGD(params, lr=1e-5, momentum=0.9)
    if name == "adafactor":
        # transformers' Adafactor (HF Trainer optim="adafactor") with a fixed lr: its relative step and parameter
        # scale branch on tensor values, which fake tensors do not have; the state is the same
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=1e-3, scale_parameter=False, relative_step=False, warmup_init=False)
    raise Refusal(f"optimizer {name} is not simulated")


def tracker_class(MemTracker):
    """MemTracker keeping the whole-process peak only: its per-module peaks walk every module after every op (half
    the step's time on a 125M model), and the simulation reports none of them. Falls back to MemTracker itself
    where this torch keeps the peak elsewhere."""
    probe = MemTracker()
    if not all(hasattr(probe, a) for a in ("_curr_mem_snap", "_peak_mem", "_peak_mem_snap")):
        return MemTracker

    class PeakTracker(MemTracker):
        def _update_peak_stats(self, peak_state):
            for dev, snap in self._curr_mem_snap.items():
                total = snap.get("Total", 0)
                if self._peak_mem.get(dev, 0) < total:
                    self._peak_mem[dev] = total
                    self._peak_mem_snap[dev] = dict(snap)

    return PeakTracker


class Phases:
    """The tracker's peak after each phase: the phase in which the peak last rose is the peak phase."""

    def __init__(self, tracker):
        self.tracker, self.best, self.phase = tracker, 0, None

    def call(self, model, **kwargs):
        self.tracker.reset_mod_stats()   # MemTracker's module stats allow one call per module; its peak stays
        return model(**kwargs)

    def mark(self, phase):
        peak = max([dev.get("Total", 0) for dev in self.tracker.get_tracker_snapshot("peak").values()] or [0])
        if peak > self.best:
            self.best, self.phase = peak, phase


def train_step(req, torch, model, opt, ids, phases):
    for _ in range(min(2, req["grad_accum"])):
        ctx = torch.autocast("cpu", dtype=getattr(torch, DTYPES[req["dtype"]])) if req["amp"] else _null()
        with ctx:
            loss = phases.call(model, input_ids=ids, labels=ids).loss
        phases.mark("forward")
        loss.backward()
        del loss
        phases.mark("backward")
    opt.step()
    phases.mark("optimizer step")
    opt.zero_grad(set_to_none=True)


def generate(req, torch, model, ids, phases, notes):
    """Prefill, then decode: the cache is grown by the model's own Cache.update to context - decode_steps tokens,
    and the last decode_steps tokens run through the model."""
    import inspect

    accepted = inspect.signature(model.forward).parameters
    keep = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
    arg = next((a for a in ("cache", "past_key_values", "cache_params") if a in accepted), "past_key_values")
    with torch.no_grad():
        out = phases.call(model, input_ids=ids, use_cache=True, **keep)
        phases.mark("prefill")
        cache, nxt = _cache(out), out.logits[:, -1:].argmax(-1)
        del out
        steps = min(req["decode_steps"], req["context"] - req["seq"])
        grow = req["context"] - req["seq"] - steps
        if grow > 0 and cache is not None:
            grow_cache(torch, cache, grow, notes)
        pos = req["context"] - steps
        for _ in range(steps):
            where = {"position_ids": torch.full((ids.shape[0], 1), pos, dtype=torch.long)} \
                if "position_ids" in accepted else {}
            out = phases.call(model, input_ids=nxt, use_cache=True, **{arg: cache}, **keep, **where)
            cache, nxt = _cache(out), out.logits[:, -1:].argmax(-1)
            del out
            pos += 1
            phases.mark("decode")


def _cache(out):
    found = getattr(out, "cache", None)
    return found if found is not None else getattr(out, "past_key_values", None)


def grow_cache(torch, cache, tokens, notes):
    """Extend each attention layer's keys and values by `tokens`; a layer without keys (a state-space layer's
    constant state) stays as it is."""
    layers = getattr(cache, "layers", None)
    if not layers:
        notes.append(f"the cache ({type(cache).__name__}) has no per-layer keys: not grown to --context (a "
                     "state-space state does not grow)")
        return
    for i, layer in enumerate(layers):
        if getattr(layer, "keys", None) is None or getattr(layer, "values", None) is None:
            continue
        k, v = layer.keys, layer.values
        shape_k, shape_v = list(k.shape), list(v.shape)
        shape_k[-2], shape_v[-2] = tokens, tokens
        cache.update(torch.zeros(shape_k, dtype=k.dtype), torch.zeros(shape_v, dtype=v.dtype), i)


class _NoHook:
    def remove(self):
        pass


def freeze_hooks(tracker, model):
    """MemTracker hooks the gradient of every parameter of a module it enters, which a frozen parameter (LoRA's
    base, inference) refuses: give those a no-op handle so it skips them."""
    handles = getattr(tracker, "_param_to_grad_hook_handles", None)
    if handles is None:
        raise Refusal("this torch's MemTracker keeps no per-parameter hook table; frozen parameters cannot be tracked")
    for p in model.parameters():
        if not p.requires_grad:
            handles[p] = (_NoHook(), _NoHook())


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def simulate(req):
    t0 = time.perf_counter()
    stage = "import"
    notes = []
    try:
        import torch
        import transformers
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.distributed._tools.mem_tracker import MemTracker
    except Exception as exc:  # noqa: BLE001 - not installed, or a broken install: a finding
        return {"ok": False, "stage": stage, "error": first_line(exc)}
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    imported = time.perf_counter()
    torch.manual_seed(0)
    try:
        stage = "build"
        model, cls = build_model(req, torch, notes)
        stage = "fake tensors"
        with FakeTensorMode():
            materialize(model, torch)
            if req["method"] == "lora":
                import peft

                versions["peft"] = peft.__version__
            training = req["method"] != "inference"
            params = sum(p.numel() for p in model.parameters())
            trainable = [p for p in model.parameters() if p.requires_grad] if training else []
            ids = torch.randint(0, int(getattr(model.config, "vocab_size", 0) or 2), (req["batch"], req["seq"]))
            if training:
                model.train()
                if req["checkpointing"]:
                    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                    if req["method"] == "lora":
                        model.enable_input_require_grads()
                opt = optimizer(req, trainable, torch)
            else:
                model.eval()
                model.requires_grad_(False)
                opt = None
            built = time.perf_counter()
            tracker = tracker_class(MemTracker)()
            tracker.track_external(model, *([opt] if opt else []))
            freeze_hooks(tracker, model)
            phases = Phases(tracker)
            with tracker:
                if training:
                    for step in range(2):   # the second step runs with the optimizer state the first one made
                        stage = f"training step {step + 1}"
                        train_step(req, torch, model, opt, ids, phases)
                else:
                    stage = "generation"
                    generate(req, torch, model, ids, phases, notes)
            snap = tracker.get_tracker_snapshot("peak")
    except Refusal as exc:
        return {"ok": False, "stage": stage, "error": str(exc), "refused": True}
    except Exception as exc:  # noqa: BLE001 - an op with no fake kernel, a data-dependent branch: untraceable
        return {"ok": False, "stage": stage, "error": first_line(exc)}
    dev = next(iter(snap.values()), {})
    by = {CATEGORIES.get(getattr(k, "value", k), str(getattr(k, "value", k))): int(v)
          for k, v in dev.items() if getattr(k, "value", k) != "Total"}
    return {"ok": True, "peak_bytes": int(dev.get("Total", 0)), "by_category": by, "peak_phase": phases.phase,
            "model_class": cls, "params": int(params), "trainable_params": int(sum(p.numel() for p in trainable)),
            "versions": versions, "notes": notes, "device": "cpu (FakeTensorMode)",
            "seconds": {"import": round(imported - t0, 2), "build": round(built - imported, 2),
                        "step": round(time.perf_counter() - built, 2)}}


def main():
    try:
        with open(sys.argv[1], encoding="utf-8") as f:
            req = json.load(f)
    except (IndexError, OSError, ValueError) as exc:
        emit({"ok": False, "stage": "request", "error": first_line(exc)})
        return
    emit(simulate(req))


if __name__ == "__main__":
    try:
        main()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
