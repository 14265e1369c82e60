"""Hessian-vector products by double backward and by forward-over-reverse (torch.func), checked on a
model whose Hessian is known, compared on a transformer, and timed against a plain gradient."""
import json

import torch
from torch import nn
from torch.func import functional_call, grad, jvp

from bench_timing import calibrate, summary, synchronize, time_calls


class LeastSquares(nn.Module):
    """0.5 * mean((X w - y)^2): a quadratic whose Hessian is exactly X^T X / n."""

    def __init__(self, d, dtype, device):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d, dtype=dtype, device=device))

    def forward(self, x, y):
        return 0.5 * ((x @ self.w - y) ** 2).mean()

    @staticmethod
    def hessian(x):
        return x.T @ x / x.shape[0]


class CausalLMLoss(nn.Module):
    """A Hugging Face causal LM as a scalar function of its parameters: next-token loss on `ids`."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, ids):
        return self.lm(input_ids=ids, labels=ids).loss


def gradient(module, inputs):
    params = [p for p in module.parameters()]
    return torch.autograd.grad(module(*inputs), params)


def hvp_double_backward(module, inputs, vec):
    """H v = d/dp (g(p) . v), reverse mode over reverse mode (create_graph=True)."""
    names, params = zip(*module.named_parameters())
    grads = torch.autograd.grad(module(*inputs), params, create_graph=True)
    hv = torch.autograd.grad(grads, params, grad_outputs=[vec[n] for n in names])
    return dict(zip(names, hv))


def hvp_forward_over_reverse(module, inputs, vec):
    """H v = the directional derivative of the gradient along v: forward mode (jvp) over reverse (grad)."""
    params = {n: p.detach() for n, p in module.named_parameters()}
    return jvp(grad(lambda p: functional_call(module, p, inputs)), (params,), (vec,))[1]


METHODS = {"double_backward": hvp_double_backward, "forward_over_reverse": hvp_forward_over_reverse}


def relative_difference(a, b):
    """||a - b|| / ||a|| over all parameters."""
    num = sum(float(((a[n].double() - b[n].double()) ** 2).sum()) for n in a)
    den = sum(float((a[n].double() ** 2).sum()) for n in a)
    return (num / den) ** 0.5 if den > 0 else float("inf")


def rademacher(module, gen):
    return {n: (torch.randint(0, 2, p.shape, device=p.device, generator=gen) * 2 - 1).to(p.dtype)
            for n, p in module.named_parameters()}


def hutchinson_diagonal(hvp, module, inputs, samples, gen):
    """diag(H) ~ mean over Rademacher z of z * (H z) (Hutchinson / Bekas et al.)."""
    acc = {n: torch.zeros_like(p) for n, p in module.named_parameters()}
    for _ in range(samples):
        z = rademacher(module, gen)
        hz = hvp(module, inputs, z)
        for n in acc:
            acc[n] += z[n] * hz[n]
    return {n: a / samples for n, a in acc.items()}


def known_hessian_check(device, d=48, n=256):
    """Both methods against X^T X v / n in float64; the relative error should be at rounding level."""
    gen = torch.Generator(device=device).manual_seed(1)
    model = LeastSquares(d, torch.float64, device)
    x = torch.randn(n, d, dtype=torch.float64, device=device, generator=gen)
    y = torch.randn(n, dtype=torch.float64, device=device, generator=gen)
    v = {"w": torch.randn(d, dtype=torch.float64, device=device, generator=gen)}
    exact = {"w": LeastSquares.hessian(x) @ v["w"]}
    return {name: relative_difference(exact, fn(model, (x, y), v)) for name, fn in METHODS.items()}


def build_opt(config_path, device, small):
    """OPT from its config.json, random init, no download. Dropout off: with it the loss is a random
    function and two HVP methods cannot agree. Eager attention: the fused SDPA kernels (flash,
    memory-efficient) have no double backward; eager attention supports both methods."""
    from transformers import OPTConfig, OPTForCausalLM

    with open(config_path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    keep = {k: v for k, v in cfg.items() if k not in ("_name_or_path", "architectures", "torch_dtype")}
    keep.update(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0)
    if small:  # the CPU path: the same architecture, scaled down so the whole run takes seconds
        keep.update(hidden_size=64, word_embed_proj_dim=64, ffn_dim=256, num_attention_heads=4,
                    num_hidden_layers=2, vocab_size=512, max_position_embeddings=256)
    config = OPTConfig(**keep)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    with torch.device(device):
        lm = OPTForCausalLM(config)
    return CausalLMLoss(lm.float().train()), keep, cfg.get("_name_or_path") or "OPT"


def peak_bytes(fn, device):
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


def run(device, config_path, small, batch, seq, budget_s, progress):
    progress("hvp", "known-Hessian check")
    out = {"known_hessian_rel_error": known_hessian_check(device)}
    try:
        model, cfg, source = build_opt(config_path, device, small)
    except ImportError as exc:
        out["transformer"] = {"error": "transformers is not importable: %s" % exc, "kind": "missing_dependency"}
        return out
    gen = torch.Generator(device=device).manual_seed(2)
    ids = torch.randint(0, cfg["vocab_size"], (batch, seq), device=device, generator=gen)
    inputs = (ids,)
    vec = {n: torch.randn(p.shape, dtype=p.dtype, device=device, generator=gen) for n, p in model.named_parameters()}
    nparams = sum(p.numel() for p in model.parameters())
    info = {"model": "%s architecture%s, random init" % (source, ", scaled down (CPU path)" if small else ""),
            "parameters": nparams, "layers": cfg["num_hidden_layers"], "hidden": cfg["hidden_size"],
            "batch": batch, "sequence": seq, "dtype": "fp32", "attention": "eager", "dropout": 0.0}
    timed = {}
    calls = {"gradient": lambda _: gradient(model, inputs)}
    calls.update({name: (lambda fn: lambda _: fn(model, inputs, vec))(fn) for name, fn in METHODS.items()})
    for name, call in calls.items():
        progress("hvp", name.replace("_", " "))
        iters = calibrate(call, device, warmup=1, budget_s=budget_s, lo=3, hi=30)
        timed[name] = {**summary(time_calls(call, iters, device)), "peak_bytes": peak_bytes(lambda: call(0), device)}
    grad_s = timed["gradient"]["median_s"]
    for name in METHODS:
        timed[name]["per_s"] = 1.0 / timed[name]["median_s"]
        timed[name]["grad_ratio"] = timed[name]["median_s"] / grad_s
    hv = {name: fn(model, inputs, vec) for name, fn in METHODS.items()}
    info["methods_rel_disagreement"] = relative_difference(hv["double_backward"], hv["forward_over_reverse"])
    fastest = min(METHODS, key=lambda name: timed[name]["median_s"])
    progress("hvp", "Hutchinson diagonal (%s)" % fastest.replace("_", " "))
    hgen = torch.Generator(device=device).manual_seed(3)

    def sample(_):
        hutchinson_diagonal(METHODS[fastest], model, inputs, 1, hgen)

    iters = calibrate(sample, device, warmup=0, budget_s=budget_s, lo=3, hi=30)
    hut = summary(time_calls(sample, iters, device))
    info["hutchinson"] = {"method": fastest, "samples_per_s": 1.0 / hut["median_s"], **hut}
    info.update(timed)
    out["transformer"] = info
    return out
