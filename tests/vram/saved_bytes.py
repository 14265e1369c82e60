"""Measure what autograd really saves per block on CPU (tiny Hugging Face models, real implementations).

Run as a script in a subprocess by the tests: prints JSON {per_layer_bytes_per_token: ...}.
"""
from __future__ import annotations

import json
import sys


def measure(spec: dict) -> dict:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.AutoConfig.for_model(spec["model_type"], **spec["config"])
    if spec.get("attn"):
        cfg._attn_implementation = spec["attn"]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["dtype"]]
    if spec["model_type"] == "bert":
        model = transformers.BertForSequenceClassification(cfg)
        layers = model.bert.encoder.layer
    else:
        model = transformers.AutoModelForCausalLM.from_config(cfg)
        layers = model.model.decoder.layers if spec["model_type"] == "opt" else model.model.layers
    model = model.to(dtype)
    model.train()
    if spec.get("lora"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=spec["lora_rank"], target_modules=spec["lora"], lora_dropout=0.0))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}
    per_layer: list[int] = []

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params and st.data_ptr() not in seen:
            seen[st.data_ptr()] = st.nbytes()
        return t

    state: dict = {}
    before = [0]

    def pre(_m, _a):
        before[:] = [sum(seen.values())]
        state["ctx"] = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        state["ctx"].__enter__()

    def post(_m, _a, _o):
        state["ctx"].__exit__(None, None, None)
        per_layer.append(sum(seen.values()) - before[0])

    for layer in layers:
        layer.register_forward_pre_hook(pre)
        layer.register_forward_hook(post)
    b, s = spec["batch"], spec["seq"]
    ids = torch.randint(0, cfg.vocab_size, (b, s))
    if spec["model_type"] == "bert":
        out = model(input_ids=ids, labels=torch.zeros(b, dtype=torch.long))
    else:
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return {"per_token": [x / (b * s) for x in per_layer], "transformers": transformers.__version__}


if __name__ == "__main__":   # one spec, or a list of specs measured in this one process
    arg = json.loads(sys.argv[1])
    print(json.dumps([measure(spec) for spec in arg] if isinstance(arg, list) else measure(arg)))
