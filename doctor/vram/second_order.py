"""Second-order quantities: memory of a Hessian-vector product, Hutchinson's diagonal estimator, GPTQ's
layer-wise Hessians and the full Hessian (pure arithmetic from the Arch and the Workload; no torch).

HVP by double backward (`g = autograd.grad(loss, params, create_graph=True)`; `Hv = autograd.grad(g, params, v)`):
- the forward keeps what a training step keeps for backward (activations.py), eager attention: the fused SDPA and
  FlashAttention backward kernels have no derivative, so double backward needs the materialised scores;
- with create_graph=True the first backward records its own ops, and each keeps what its derivative reads: the
  gradient flowing into it (a Linear's backward `gy @ W` / `gy^T x` keeps gy; softmax's backward keeps gy and
  reads its output; LayerNorm's keeps gy): one gradient the size of each tensor the forward saved, plus one more
  score matrix per layer (the score gradient is kept both before softmax's backward, by softmax's backward, and
  after it, by the q.k^T matmul's backward, where the forward kept one score matrix: the probabilities);
  Llama-style blocks keep more: their SiLU backward under create_graph is torch's composite
  infinitely_differentiable_silu_backward and transformers' RMSNorm is composite (pow, mean, rsqrt, mul), so the
  graph keeps their intermediates too - 4 ffn-sized (compute dtype) and 4 hidden-sized (fp32) tensors and 2 floats
  per token and layer, counted on the measured graph (tests/test_vram_second_order.py);
  the loss keeps nll_loss's and log_softmax's gradients (fp32 logits size each); the parameter gradients
  themselves stay alive as the graph's outputs;
- the second backward runs that recorded graph backwards. Its peak is the larger of two moments: early, one
  layer's softmax double backward while the whole first-backward graph is still held - torch's
  `softmax_double_backward` (FunctionsManual.cpp) is one C++ expression `gO * grad - (output * gO).sum(dim, true)
  * grad - gO * (output * grad).sum(dim, true)` whose score-sized temporaries (5 products, 2 differences) all live
  until it returns, next to `_softmax_backward_data`'s output for the other input: 8 fp32 score matrices; or last,
  the loss's log_softmax double backward (5 fp32 logits-sized temporaries, less the logits gradient freed by then),
  when the first-backward graph is gone but the gradients it sent towards the forward's saved tensors wait in the
  engine's input buffers (the forward's nodes have the lowest sequence numbers, so they run last);
- plus the vector v and the result Hv, each the size of the parameters.
Validated against live storage bytes measured on CPU (tests/test_vram_second_order.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from . import activations as act
from .arch import Arch, Linear

KINDS = ("hvp", "hutchinson", "gptq", "full")
HESSIAN_BYTES = 4            # fp32: GPTQ's H (torch.zeros, default dtype) and a Hessian anyone would accumulate
SOFTMAX_DOUBLE_BACKWARD = 8  # fp32 score matrices alive in one layer's softmax double backward (see above)
LOG_SOFTMAX_DOUBLE_BACKWARD = 5  # fp32 logits-sized temporaries of the loss's double backward
HOST_RAM = 2**40             # "even a 1 TiB host"
GPTQ_NSAMPLES = 128          # IST-DASLab/gptq opt.py: --nsamples default 128
GPTQ_BLOCKSIZE = 128         # gptq.py fasterquant(blocksize=128)


@dataclass(frozen=True)
class Term:
    """One named figure: bytes, how it was computed and where the rule comes from."""

    bytes: float
    formula: str
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"bytes": round(self.bytes), "formula": self.formula, "source": self.source}


def hvp_terms(arch: Arch, wl: Any, tokens: int, p: int, r: int) -> dict[str, Term]:
    """Bytes a double-backward HVP keeps at its peak, beside the weights and the process overheads: the larger of
    two moments of the second backward. `p`: the compute dtype's bytes, `r`: the residual stream's (4 under
    autocast)."""
    b, h = arch.block, arch.block.hidden
    span = tokens // max(1, wl.batch)
    ctx = act.Ctx(p=p, amp=wl.amp, trainable=frozenset({"*"}), lora=frozenset(), lora_rank=0, adapter_bytes=4,
                  attention="eager", seq=span, dropout=wl.dropout and b.dropout, full=True)
    layer = act.per_token(ctx, b) * tokens
    edges = tokens * (h * r + 4 * h + 8 + h * p)    # embedding output, final norm input and stats, head input
    scores = wl.batch * b.heads * span * span       # one layer's attention scores (elements)
    composite = (4 * b.ffn * p if b.gated else 0) + (4 * h * 4 + 8 if b.norm == "rms" else 0)
    n, v, half = arch.params, arch.head_outputs, (p if p != 4 else 0)
    saved = arch.layers * layer + edges
    terms = {
        "activations": Term(saved, f"{arch.layers} layers x {layer / tokens:,.0f} B/token x {tokens:,} tokens + "
                            "embeddings, final norm and head input (saved by the forward)",
                            "doctor/vram/activations.py with eager attention"),
        "logits": Term(tokens * v * (4 + 8 + 2 * half), f"{tokens:,} tokens x {v:,} logits x (4 B log_softmax output "
                       "+ 8 B nll_loss and log_softmax gradients" + (f" + 2 x {p} B half copies)" if half else ")"),
                       "cross-entropy in fp32; the first backward's outputs are kept for the second"),
        "gradients": Term(n * p, f"{n:,} params x {p} B, kept as the graph's outputs", "create_graph=True"),
        "hvp_vector": Term(n * p, f"v: {n:,} params x {p} B", ""),
        "hvp_result": Term(n * p, f"Hv: {n:,} params x {p} B", ""),
    }
    graph = Term(arch.layers * (layer + scores * p + composite * tokens) + edges,
                 f"one gradient per saved forward tensor + one score matrix ({scores:,} x {p} B) per layer"
                 + (f" + {composite:,} B/token per layer of composite SiLU / RMSNorm backward intermediates"
                    if composite else ""),
                 "autograd with create_graph=True records the backward; each backward op keeps what its own "
                 "derivative reads (torch tools/autograd/derivatives.yaml)")
    attn = Term(SOFTMAX_DOUBLE_BACKWARD * scores * 4, f"{SOFTMAX_DOUBLE_BACKWARD} fp32 score matrices of one layer "
                f"({scores:,} elements each)", "torch FunctionsManual.cpp softmax_double_backward: one C++ "
                "expression whose temporaries live until it returns, + _softmax_backward_data's output")
    pending = Term(saved, "one gradient per tensor the forward saved, waiting in the engine's input buffers",
                   "the forward's nodes have the lowest sequence numbers: the engine runs them last")
    loss = Term((LOG_SOFTMAX_DOUBLE_BACKWARD - 1) * tokens * v * 4,
                f"{LOG_SOFTMAX_DOUBLE_BACKWARD} fp32 logits-sized temporaries ({tokens * v:,} elements) less the "
                "logits gradient freed by then", "torch FunctionsManual.cpp log_softmax_double_backward: "
                "z = output.exp(); z * gO.sum(dim, true) * ((grad * z).sum(dim, true) - grad)")
    # Hv is counted whole at both moments: early it is only partly accumulated (an upper bound there)
    if graph.bytes + attn.bytes >= pending.bytes + loss.bytes:
        return {**terms, "first_backward_graph": graph, "transient": attn}
    return {**terms, "pending_gradients": pending, "transient": loss}




def hutchinson_terms(arch: Arch, p: int, probes: int) -> dict[str, Term]:
    """diag(H) ~ mean over Rademacher z of z * (H z) (doctor/bench/worker/bench_hvp.py hutchinson_diagonal):
    probes run one after another, so memory is one HVP (z is its v) plus the running sum; time is `probes` HVPs."""
    n = arch.params
    return {"diagonal_accumulator": Term(n * p, f"sum of z * Hz: {n:,} params x {p} B (zeros_like each parameter); "
                                         f"{probes:,} probe(s) run one after another",
                                         "doctor/bench/worker/bench_hvp.py hutchinson_diagonal")}


def _gptq_moments(arch: Arch, nsamples: int, seq: int, p: int, attention: str) -> tuple[dict[str, Term], str]:
    """GPU bytes of GPTQ's largest moment (IST-DASLab/gptq opt.py opt_sequential and gptq.py): one block on the
    GPU, its calibration inputs and outputs, one fp32 H = 2 X X^T (d_in x d_in) per Linear of the block, and
    fasterquant's temporaries for the Linear being quantized."""
    b = arch.block
    hs = [lin.fan_in ** 2 * HESSIAN_BYTES for lin in b.linears]
    calib = 2 * nsamples * seq * b.hidden * p          # inps and outs = torch.zeros_like(inps)
    quant_peak, worst = 0.0, b.linears[0]
    for i, lin in enumerate(b.linears):                 # the Hessians of the layers not yet quantized stay allocated
        extra = _fasterquant(lin)
        if sum(hs[i:]) + extra > quant_peak:
            quant_peak, worst = sum(hs[i:]) + extra, lin
    attn = b.heads * seq * seq * (4 + p) if b.heads and attention == "eager" else 0
    forward = max(attn, seq * b.ffn * p * (3 if b.gated else 2)) + 2 * seq * max(lin.fan_in for lin in b.linears) * 4
    weights = Term(b.params * p, f"one block's {b.params:,} params x {p} B (the rest of the model stays on the CPU)",
                   "opt.py opt_sequential: layer = layers[i].to(dev)")
    calib_t = Term(calib, f"inps + outs: 2 x {nsamples} samples x {seq} tokens x {b.hidden} x {p} B",
                   "opt.py: inps = torch.zeros((nsamples, seqlen, hidden_size)); outs = torch.zeros_like(inps)")
    hess = Term(sum(hs), " + ".join(f"{lin.name} {lin.fan_in}^2" for lin in b.linears) + f" x {HESSIAN_BYTES} B",
                "gptq.py: self.H = torch.zeros((self.columns, self.columns)), one GPTQ object per Linear of the block")
    if forward >= quant_peak - sum(hs):   # the calibration forward (all Hessians allocated) is the larger moment
        return {"weights": weights, "calibration_activations": calib_t, "layer_hessians": hess,
                "transient": Term(forward, f"one sample's forward through the block + add_batch's fp32 copy of "
                                  f"the widest input ({seq} tokens)", "opt.py: layer(inps[j].unsqueeze(0))")}, ""
    return {"weights": weights, "calibration_activations": calib_t,
            "layer_hessians": Term(quant_peak - _fasterquant(worst), hess.formula + f"; those not yet quantized when "
                                   f"{worst.name} is", hess.source),
            "transient": Term(_fasterquant(worst), f"fasterquant({worst.name}): Cholesky copy {worst.fan_in}^2 x 4 B + "
                              f"W, Q, Losses in fp32 ({worst.fan_out} x {worst.fan_in}) + 4 blocks of {GPTQ_BLOCKSIZE} "
                              "columns", "gptq.py fasterquant: W.float(), zeros_like(W) twice, torch.linalg.cholesky")
            }, worst.name


def _fasterquant(lin: Linear) -> float:
    """fasterquant's own allocations beside its H: the Cholesky factor (H is replaced, but both live during the
    call), W as fp32 plus Q and Losses (zeros_like(W)), and W1, Q1, Err1, Losses1 of one column block."""
    return (lin.fan_in ** 2 * HESSIAN_BYTES + 3 * lin.fan_out * lin.fan_in * 4
            + 4 * lin.fan_out * min(GPTQ_BLOCKSIZE, lin.fan_in) * 4)


def gptq_terms(arch: Arch, nsamples: int, seq: int, p: int, attention: str = "sdpa") -> dict[str, Term]:
    return _gptq_moments(arch, nsamples, seq, p, attention)[0]


def all_layer_hessians(arch: Arch) -> int:
    """Every Linear's d_in x d_in fp32 Hessian at once (what GPTQ never holds: it goes one block at a time)."""
    return sum(n * sum(lin.fan_in ** 2 for lin in block.linears) for block, n in arch.kinds) * HESSIAN_BYTES


def full_hessian_bytes(params: int) -> int:
    """n x n entries in fp32."""
    return params * params * HESSIAN_BYTES


def largest_gpu() -> tuple[str, int]:
    """The GPU of doctor's table with the most memory (doctor/data/gpus.yaml), as `doctor estimate --gpu` reads it."""
    from .. import refdata

    best = ("", 0)
    for row in refdata.load("gpus")["gpus"]:
        mib = row.get("nvml_total_mib") or (row["memory_gb"] * 1024 if row.get("memory_gb") else 0)
        if mib * 2**20 > best[1]:
            best = (row["name"], int(mib * 2**20))
    return best


def si(n: float) -> str:
    """Decimal units (B, kB ... EB): the unit a '62.7 PB' claim is in."""
    for unit, size in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def binary(n: float) -> str:
    for unit, size in (("EiB", 2**60), ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


@dataclass
class Plan:
    """The second-order report: the chosen method's peak (in the Estimate), the full Hessian's figure and where it
    fits, and every method's peak beside it."""

    kind: str
    probes: int
    nsamples: int
    full_bytes: int
    full_verdict: str
    largest_gpu: tuple[str, int]
    methods: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self, capacity: int | None) -> dict[str, Any]:
        name, size = self.largest_gpu
        target = capacity or size
        return {"kind": self.kind, "probes": self.probes, "calibration_samples": self.nsamples,
                "full_hessian": {"bytes": self.full_bytes, "formula": "params^2 x 4 B (fp32)",
                                 "si": si(self.full_bytes), "binary": binary(self.full_bytes),
                                 "verdict": self.full_verdict, "largest_gpu": {"name": name, "bytes": size},
                                 "host_ram_bytes": HOST_RAM},
                "methods": {k: {"peak_bytes": v, "fits": v <= target} for k, v in self.methods.items()},
                "judged_against": {"bytes": target, "label": "the GPU asked for" if capacity else name},
                "notes": list(self.notes)}

    def lines(self, capacity: int | None) -> list[str]:
        name, size = self.largest_gpu
        target, label = (capacity, "this GPU") if capacity else (size, name)
        out = [(f"full Hessian: {self.full_bytes:.4g} B = {si(self.full_bytes)} = {binary(self.full_bytes)} "
               f"(params^2 x 4 B): {self.full_verdict}")]
        for k, v in self.methods.items():
            if k == "full":
                continue
            out.append(f"  {METHOD_NAMES[k]}: {v / 2**30:.2f} GiB, {'fits' if v <= target else 'does not fit'} {label}"
                       f"  [--hessian {k}]")
        return out + self.notes


METHOD_NAMES = {"hvp": "Hessian-vector product (double backward)", "hutchinson": "Hutchinson diagonal",
                "gptq": "GPTQ layer-wise Hessians (one block at a time)", "full": "full Hessian"}


def full_verdict(full: int, capacity: int | None, gpu: tuple[str, int]) -> str:
    if capacity and full <= capacity:
        return "fits this GPU"
    if full <= gpu[1]:
        return f"fits the largest GPU of doctor's table ({gpu[0]}, {binary(gpu[1])})"
    if full <= HOST_RAM:
        return f"fits only a host with 1 TiB of RAM (the largest GPU, {gpu[0]}, holds {binary(gpu[1])})"
    return (f"cannot fit anywhere: {full / gpu[1]:,.0f}x the largest GPU of doctor's table ({gpu[0]}, "
            f"{binary(gpu[1])}) and {full / HOST_RAM:,.0f}x a 1 TiB host")


def hvp_notes(arch: Arch, wl: Any) -> list[str]:
    """What the HVP figure assumes, and where doctor has no formula (bad input, exit 2)."""
    from ..errors import InputError

    kinds = getattr(arch, "kinds", None) or [(arch.block, arch.layers)]
    if any(k.ssm is not None for k, _ in kinds):
        raise InputError("--method", "hessian", f"{arch.family} has selective-scan (Mamba) layers, whose fused "
                         "kernels have no double backward; doctor's second-order figures (--hessian hvp, hutchinson, "
                         "gptq, full) are modelled for transformer models only; expected one")
    notes = [("Hessian-vector product by double backward (create_graph=True): the forward's saved tensors, the "
             "recorded first backward and the second backward's working set; gradient checkpointing does not "
             "shrink them")]
    if wl.attention != "eager":
        notes.append(f"attention {wl.attention}: the fused SDPA / FlashAttention backward kernels have no double "
                     "backward, so the HVP is estimated with eager attention (attn_implementation='eager', or "
                     "SDPA's math backend)")
    if wl.checkpointing:
        notes.append("gradient checkpointing is ignored: double backward needs the whole graph")
    if arch.vision:
        notes.append("the vision tower's activations are not counted in the HVP figure")
    return notes


def _replace(est: Any, parts: dict[str, float], phase: str) -> Any:
    """`est` with its method terms replaced by `parts` (weights, allocator rounding and the process overheads
    kept unless `parts` names them), the range shifted by as much as the peak."""
    keep = ("allocator_rounding", "cuda_context", "cublas_workspace")
    breakdown = {k: round(v) for k, v in parts.items() if v}
    breakdown.update({k: est.breakdown[k] for k in keep if k in est.breakdown})
    peak = sum(breakdown.values())
    delta = peak - est.peak_bytes
    return replace(est, peak_bytes=peak, breakdown=breakdown, low_bytes=est.low_bytes + delta,
                      high_bytes=est.high_bytes + delta, phase=phase, notes=list(est.notes), terms={})


def plan(arch: Arch, wl: Any, hvp_est: Any, kind: str, probes: int, nsamples: int,
         capacity: int | None) -> tuple[Any, Plan]:
    """The estimate of the chosen second-order method (from the HVP estimate `hvp_est`) and the report beside it."""
    from .estimator import DTYPES, _documented

    p = DTYPES[wl.dtype]
    n = arch.params
    hv = dict(hvp_est.breakdown)
    hutch = hutchinson_terms(arch, p, probes)
    est_h = _replace(hvp_est, {**hv, **{k: t.bytes for k, t in hutch.items()}}, "second backward (HVP), one probe")
    gterms, worst = _gptq_moments(arch, nsamples, wl.seq, p, wl.attention)
    est_g = _replace(hvp_est, {k: t.bytes for k, t in gterms.items()},
                     f"quantizing {worst} (GPTQ)" if worst else "calibration forward (GPTQ)")
    full = full_hessian_bytes(n)
    est_f = _replace(hvp_est, {**hv, "hessian_matrix": full}, "full Hessian, column by column (n HVPs)")
    est_h.terms = {**hvp_est.terms, **{k: t.to_dict() for k, t in hutch.items()}}
    est_g.terms = {k: t.to_dict() for k, t in gterms.items()}
    hvp_only = set(hvp_notes(arch, wl))   # GPTQ runs forward passes only: no double backward to explain
    est_g.notes = [note for note in est_g.notes if note not in hvp_only]
    est_f.terms = {**hvp_est.terms, "hessian_matrix": {"bytes": full, "formula": f"{n:,}^2 params x "
                                                       f"{HESSIAN_BYTES} B (fp32)", "source": "n x n entries"}}
    gpu = largest_gpu()
    report = Plan(kind, probes, nsamples, full, full_verdict(full, capacity, gpu), gpu,
                  {"hvp": hvp_est.peak_bytes, "hutchinson": est_h.peak_bytes, "gptq": est_g.peak_bytes,
                   "full": est_f.peak_bytes})
    if kind == "hutchinson":
        report.notes.append(f"Hutchinson: {probes:,} probe(s), each one HVP (a forward and two backward passes) run "
                            "one after another: memory is one HVP's, time grows with the probes and the estimate's "
                            "variance falls as 1/probes")
    if kind == "gptq":
        report.notes.append(f"GPTQ: {nsamples} calibration samples of {wl.seq} tokens (the reference uses 128 x the "
                            f"model's max positions); all {arch.layers} blocks' layer Hessians at once would be "
                            f"{binary(all_layer_hessians(arch))}")
    if kind == "full":
        report.notes.append(f"full Hessian: {n:,} HVPs, one per column; storing it on disk needs {si(full)} too")
    chosen = {"hvp": hvp_est, "hutchinson": est_h, "gptq": est_g, "full": est_f}[kind]
    chosen.terms = _documented(chosen, arch)   # the overheads kept from the HVP estimate, with their sources
    return chosen, report
