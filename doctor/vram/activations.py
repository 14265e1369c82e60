"""Bytes that autograd saves for backward, per token and layer, following the Hugging Face implementations.

Each function lists the tensors one layer keeps alive from its forward until its backward. Autograd saves an
op's input only when a gradient needs it: a frozen linear (LoRA/QLoRA base) keeps its weight, not its input.
Under autocast (AMP) matmuls run in half precision on casted copies while norms and softmax stay fp32.
"""
from __future__ import annotations

from dataclasses import dataclass

from .arch import Block


@dataclass(frozen=True)
class Ctx:
    """What decides which tensors exist and which are saved."""

    p: int                    # bytes of the compute dtype (2 for fp16/bf16 and AMP matmuls, 4 for fp32)
    amp: bool                 # autocast with fp32 weights: residual stream, norms and softmax in fp32
    trainable: frozenset[str]  # names of block linears whose weights train ("*" = all)
    lora: frozenset[str]      # names of block linears carrying LoRA adapters
    lora_rank: int
    adapter_bytes: int        # bytes of the adapter weights (PEFT upcasts adapters to fp32 by default)
    attention: str            # eager | sdpa | flash
    seq: int                  # attention span (tokens per sequence)
    dropout: bool             # dropout layers active (training with p > 0)
    full: bool                # norms and biases train too
    # what a frozen (quantized) linear keeps for backward: "" nothing, "input" the input tensor itself (bitsandbytes
    # < 0.43.2 MatMul4Bit), "half" its own fp16 copy of the input (AutoAWQ WQLinear_GEMM: x.half(), then saved)
    frozen_keep: str = ""
    # LoRA dropout p > 0 (PEFT lora_dropout, torchtune's LoRALinear): each adapter's lora_A reads dropout(x), a new
    # tensor it saves, and the dropout saves its mask (1 byte per element)
    lora_dropout: bool = False

    def trains(self, name: str) -> bool:
        return "*" in self.trainable or name in self.trainable


def _linear_input(ctx: Ctx, names: tuple[str, ...], width: int, source_bytes: int) -> float:
    """Bytes per token saved for the input shared by `names` (e.g. q, k and v read the same tensor)."""
    saved = 0.0
    shared = False
    for name in names:
        if ctx.trains(name):
            if ctx.amp:
                saved += width * 2          # autocast casts the fp32 input to half for each linear
            else:
                shared = True
        elif ctx.frozen_keep == "input":
            shared = True                   # the frozen linear keeps a reference to its input
        elif ctx.frozen_keep == "half":
            saved += width * 2              # each frozen linear saves its own fp16 copy
        if name in ctx.lora:
            if ctx.lora_dropout:
                saved += width                      # the dropout's mask (bool)
            if ctx.amp:
                # autocast runs lora_A and lora_B in half: each saves the half cast of its input, a new tensor
                saved += width * 2 + ctx.lora_rank * 2
                continue
            if ctx.lora_dropout:                    # lora_A saves the dropped copy, in the adapter dtype
                saved += width * ctx.adapter_bytes
            elif ctx.adapter_bytes != source_bytes:
                saved += width * ctx.adapter_bytes   # PEFT casts the input to the adapter dtype
            else:
                shared = True
            saved += ctx.lora_rank * ctx.adapter_bytes   # lora_A output, saved by lora_B
    return saved + (width * source_bytes if shared else 0)


def _attention(ctx: Ctx, b: Block) -> float:
    """q, k, v as the kernel sees them, plus the score matrices of eager attention (per token)."""
    a, g, d, p = b.heads, b.kv_heads, b.head_dim, ctx.p
    if ctx.attention == "eager":
        # matmul(q, k^T) saves q and the head-repeated k; softmax (fp32) saves its output; matmul(probs, v)
        # saves the probabilities cast back to the compute dtype and the repeated v
        probs = a * ctx.seq * (4 + (p if p != 4 else 0) + (1 + p if ctx.dropout else 0))
        return 3 * a * d * p + probs
    # SDPA (flash / memory-efficient) and FlashAttention-2 keep q, k, v, the output and the log-sum-exp
    return (a + 2 * g) * d * p + a * d * p + a * 4


def _o_input(ctx: Ctx, name: str, width: int) -> float:
    """The attention output projection's input. SDPA and FlashAttention return their output in the
    (batch, seq, heads, dim) layout, so the reshape is a view of the tensor the kernel already keeps."""
    if not (ctx.trains(name) or name in ctx.lora or ctx.frozen_keep):
        return 0
    view = ctx.attention != "eager" and not ctx.amp
    # a reference to the input itself (not a cast copy) costs nothing more where the kernel keeps that tensor
    shares = not ctx.amp and (ctx.trains(name) or ctx.frozen_keep == "input"
                              or (name in ctx.lora and ctx.adapter_bytes == ctx.p and not ctx.lora_dropout))
    return _linear_input(ctx, (name,), width, ctx.p) - (width * ctx.p if view and shares else 0)


def decoder(ctx: Ctx, b: Block) -> float:
    """Llama / Qwen / Mistral / nanochat pre-norm block: RMSNorm, attention, (gated) MLP."""
    h, f, p, a, d, g = b.hidden, b.ffn, ctx.p, b.heads, b.head_dim, b.kv_heads
    r = 4 if ctx.amp else p
    norm_in = 4 * h if b.norm == "rms" else h * r      # HF RMSNorm upcasts its input to fp32 and keeps it
    norm_out = p if not ctx.amp else 4
    total = 2 * norm_in + (2 * 4 if b.norm == "rms" else 0)   # + the per-row rsqrt
    if ctx.full and b.norm == "rms":
        total += 2 * h * norm_out                      # weight * normalized: kept for the weight's gradient
    if b.gated:
        q, k, v, o, gate, up, down = (lin.name for lin in b.linears)
    else:
        q, k, v, o, up, down = (lin.name for lin in b.linears)
    total += _linear_input(ctx, (q, k, v), h, norm_out)
    if b.qk_norm and b.norm == "rms":
        total += (a + g) * (4 * d + 4 + (d * p if ctx.full else 0))   # fp32 copy, rsqrt, normalized (if trained)
    elif b.qk_norm:
        total += (a + g) * d * p
    total += _attention(ctx, b)
    total += _o_input(ctx, o, a * d)
    if ctx.dropout:
        total += 2 * h                                 # residual dropout masks (1 byte per element)
    total += _linear_input(ctx, (gate, up) if b.gated else (up,), h, norm_out)
    if b.gated:
        total += 3 * f * p                             # silu(gate) keeps gate; act * up keeps act and up
    else:
        total += f * p                                 # relu keeps its output (relu^2 squares that same tensor)
    total += _linear_input(ctx, (down,), f, p) if ctx.trains(down) or down in ctx.lora or ctx.frozen_keep else 0
    return total


def litgpt_decoder(ctx: Ctx, b: Block) -> float:
    """LitGPT's Llama block (Lightning-AI/litgpt commit 8641822, lit_gpt/model.py and lit_gpt/lora.py), LoRA on the
    fused qkv linear only, multi-head attention (kv heads = heads). Per token:
    - RMSNorm in the model dtype ("x_normed = x * torch.rsqrt(norm_x + self.eps)"): its input and the rsqrt;
    - LoRAQKVLinear: "after_A = F.linear(self.lora_dropout(x), self.lora_A)" (one dropout for the fused input: its
      mask and the dropped copy), after_A (saved by the conv1d of lora_B), and zero_pad's index_copy source (the
      adapted q/k/v widths) when not all of q, k, v are adapted;
    - attention: the fused qkv output (v is a view of it), q and k after RoPE (torch.cat copies), the SDPA output
      and its log-sum-exp;
    - LLaMAMLP: fc_1 and fc_2 outputs and silu's output;
    - a frozen linear keeps nothing, or its input where ctx.frozen_keep is "input" (bitsandbytes < 0.43.2)."""
    h, f, p, a, d, g, r = b.hidden, b.ffn, ctx.p, b.heads, b.head_dim, b.kv_heads, ctx.lora_rank
    q, k, v = (lin.name for lin in b.linears[:3])
    keep = ctx.frozen_keep == "input"
    total = 2 * (h * p + p)                                        # norm_1 and norm_2: input and rsqrt
    adapted = [w for name, w in ((q, a * d), (k, g * d), (v, g * d)) if name in ctx.lora]
    if adapted:
        total += (h * (1 + ctx.adapter_bytes) if ctx.lora_dropout else (0 if keep else h * p))
        total += r * ctx.adapter_bytes + (sum(adapted) * ctx.adapter_bytes if len(adapted) < 3 else 0)
    total += h * p if keep else 0                                  # qkv's input (norm_1's output)
    total += (a + 2 * g) * d * p + 2 * a * d * p + a * d * p + a * 4
    total += a * d * p if keep else 0                              # proj's input (the reshaped SDPA output)
    total += 3 * f * p
    total += (h * p + f * p) if keep else 0                        # fc_1 / fc_2's input, the MLP proj's input
    return total


def opt(ctx: Ctx, b: Block) -> float:
    """OPT block (pre-LayerNorm, ReLU MLP, dropout 0.1 on the residual branches)."""
    h, f, p = b.hidden, b.ffn, ctx.p
    r = 4 if ctx.amp else p
    ln_out = 4 if ctx.amp else p
    q, k, v, o, fc1, fc2 = (lin.name for lin in b.linears)
    total = 2 * (h * r + 8)                            # LayerNorm keeps its input and per-row mean/rstd
    total += _linear_input(ctx, (q, k, v), h, ln_out)
    total += _attention(ctx, b)
    total += _o_input(ctx, o, h)
    total += _linear_input(ctx, (fc1,), h, ln_out)
    total += f * p                                     # relu output, also fc2's input
    if ctx.amp and (ctx.trains(fc2) or fc2 in ctx.lora):
        total += _linear_input(ctx, (fc2,), f, p)
    elif ctx.frozen_keep == "half":
        total += f * 2                                 # fc2's own fp16 copy of the relu output
    if ctx.dropout:
        total += 2 * h
    return total


def bert(ctx: Ctx, b: Block) -> float:
    """BERT post-LayerNorm block: attention, dropout, LayerNorm, GELU MLP, dropout, LayerNorm."""
    h, f, p, a = b.hidden, b.ffn, ctx.p, b.heads
    r = 4 if ctx.amp else p
    q, k, v, o, fc1, fc2 = (lin.name for lin in b.linears)
    total = _linear_input(ctx, (q, k, v), h, r)        # the previous LayerNorm's output
    total += 2 * h * p                                 # q and k for the score matmul
    scores = a * ctx.seq
    if ctx.attention == "eager":
        # softmax keeps its output (fp32 under autocast), dropout keeps a mask, matmul keeps the dropped probs
        total += scores * (4 if ctx.amp else p) + (scores * (1 + (2 if ctx.amp else p)) if ctx.dropout else 0)
        total += h * p                                 # v
    else:
        total += 2 * h * p + a * 4
    total += _linear_input(ctx, (o,), h, p)
    total += h * r + 8                                 # LayerNorm input (residual sum), mean and rstd
    total += _linear_input(ctx, (fc1,), h, r)
    total += f * (4 if ctx.amp else p)                 # GELU keeps its input (fp32 under autocast)
    total += _linear_input(ctx, (fc2,), f, 4 if ctx.amp else p)
    total += h * r + 8                                 # second LayerNorm input, mean and rstd
    if ctx.dropout:
        total += 2 * h
    return total


def vit(ctx: Ctx, b: Block) -> float:
    """Qwen3-VL vision block (LayerNorm, fused qkv with 2-D RoPE, GELU MLP), attention per image."""
    h, f, p = b.hidden, b.ffn, ctx.p
    qkv, proj, fc1, fc2 = (lin.name for lin in b.linears)
    total = 2 * (h * p + 8)
    total += _linear_input(ctx, (qkv,), h, p)
    total += _attention(ctx, b)
    total += _o_input(ctx, proj, h)
    total += _linear_input(ctx, (fc1,), h, p)
    total += f * p
    total += _linear_input(ctx, (fc2,), f, p) if ctx.trains(fc2) or fc2 in ctx.lora or ctx.frozen_keep else 0
    return total


SCAN_CHUNK = 2048   # selective_scan_fwd (mamba_ssm csrc/selective_scan): one fp32 (dstate x 2) carry per 2048 tokens


def mamba(ctx: Ctx, b: Block) -> float:
    """A Mamba block on mamba_ssm's fused CUDA path (what transformers' MambaMixer / Mamba2Mixer run in training
    when mamba-ssm and causal-conv1d are installed): the pre-norm (HF RMSNorm: fp32 input copy and rsqrt), in_proj's
    input, and what the fused function saves for backward.

    Mamba-1, mamba_ssm/ops/selective_scan_interface.py MambaInnerFn.forward (checkpoint_lvl=1: conv1d_out and delta
    recomputed in backward): save_for_backward(xz, x_dbl, B, C (contiguous copies), scan_intermediates, out, weights)
    - xz 2*d_inner, x_dbl dt_rank + 2*d_state, B and C d_state each, out d_inner, and scan_intermediates
    (batch, d_inner, ceil(L/2048), 2*d_state) in fp32.
    Mamba-2, mamba_ssm/ops/triton/ssd_combined.py MambaSplitConv1dScanCombinedFn.forward: save_for_backward(zxbcdt,
    out_x, rstd, weights) - in_proj's whole output, the scan output (d_inner) and the gated norm's rstd (fp32, one
    per group); the chunk states are recomputed in backward."""
    h, p, ssm = b.hidden, ctx.p, b.ssm
    assert ssm is not None
    in_proj = b.linears[0].name   # x_proj, dt_proj, out_proj run inside the fused function (their .weight)
    total = 4 * h + 4                                            # RMSNorm: fp32 copy of its input, rsqrt
    if ctx.full:   # weight * normalized, for the weight's gradient (NemotronHRMSNorm multiplies in fp32)
        total += h * (4 if ctx.amp or b.norm == "rms_fp32" else p)
    total += _linear_input(ctx, (in_proj,), h, 4 if ctx.amp else p)
    if ssm.version == 1:
        total += 2 * ssm.d_inner * p + (ssm.dt_rank + 2 * ssm.d_state) * p + 2 * ssm.d_state * p + ssm.d_inner * p
        chunks = -(-max(1, ctx.seq) // SCAN_CHUNK)
        total += ssm.d_inner * chunks * 2 * ssm.d_state * 4 / max(1, ctx.seq)
    else:
        total += ssm.in_proj_out * p + ssm.d_inner * p + ssm.groups * 4
    return total


def _norm(ctx: Ctx, b: Block) -> float:
    """One HF RMSNorm before a sublayer: its fp32 input copy and rsqrt, the normalized output if the weight trains
    (fp32 where the norm applies its weight in fp32: norm "rms_fp32", NemotronHRMSNorm)."""
    return 4 * b.hidden + 4 + (b.hidden * (4 if ctx.amp or b.norm == "rms_fp32" else ctx.p) if ctx.full else 0)


def _attention_sublayer(ctx: Ctx, b: Block) -> float:
    """q, k, v's shared input, the attention kernel's tensors and o_proj's input (as in `decoder`, no qk-norm).
    Where q is built by torch.cat (Bamba's partial rotary) it is laid out heads-first, the kernel's output follows it,
    and the reshape before o_proj copies: o_proj keeps that copy."""
    q, k, v, o = (lin.name for lin in b.linears[:4])
    width = b.heads * b.head_dim
    total = _linear_input(ctx, (q, k, v), b.hidden, 4 if ctx.amp else ctx.p) + _attention(ctx, b)
    view = ctx.attention != "eager" and not ctx.amp and ctx.trains(o) and o not in ctx.lora
    total += _o_input(ctx, o, width) + (width * ctx.p if view and b.attn_out_copy else 0)
    return total + (b.hidden if ctx.dropout and b.dropout else 0)


def _mlp_sublayer(ctx: Ctx, b: Block, names: tuple[str, ...]) -> float:
    """A gated (gate, up, down: SiLU) or plain (up, down: ReLU^2) MLP, as in `decoder`."""
    h, f, p = b.hidden, b.ffn, ctx.p
    total = _linear_input(ctx, names[:-1], h, 4 if ctx.amp else p) + (3 if b.gated else 1) * f * p
    down = names[-1]
    return total + (_linear_input(ctx, (down,), f, p) if ctx.trains(down) or down in ctx.lora else 0)


def attention(ctx: Ctx, b: Block) -> float:
    """A hybrid model's attention-only layer (NemotronH "*"): RMSNorm and attention."""
    return _norm(ctx, b) + _attention_sublayer(ctx, b)


def mlp(ctx: Ctx, b: Block) -> float:
    """A hybrid model's MLP-only layer (NemotronH "-"): RMSNorm and an MLP."""
    return _norm(ctx, b) + _mlp_sublayer(ctx, b, tuple(lin.name for lin in b.linears))


def attention_mlp(ctx: Ctx, b: Block) -> float:
    """A hybrid model's attention layer with an MLP after it (Bamba): RMSNorm, attention, RMSNorm, gated MLP."""
    return 2 * _norm(ctx, b) + _attention_sublayer(ctx, b) + _mlp_sublayer(ctx, b, tuple(lin.name for lin in b.linears[4:]))


def mamba_mlp(ctx: Ctx, b: Block) -> float:
    """A Mamba-2 layer with an MLP after it (Bamba): the Mamba block, then RMSNorm and the gated MLP."""
    return mamba(ctx, b) + _norm(ctx, b) + _mlp_sublayer(ctx, b, tuple(lin.name for lin in b.linears[2:]))


LAYER = {"decoder": decoder, "opt": opt, "bert": bert, "vit": vit, "mamba": mamba, "attention": attention, "mlp": mlp,
         "attention_mlp": attention_mlp, "mamba_mlp": mamba_mlp}


def per_token(ctx: Ctx, b: Block) -> float:
    """Saved bytes per token for one block."""
    return LAYER[b.kind](ctx, b)


def working_set(ctx: Ctx, b: Block, tokens: int, span: int) -> float:
    """Largest transient of one block's forward or backward (not saved): the score matrix and its gradient
    for eager attention, else the MLP intermediate and its gradient."""
    p = ctx.p
    if b.ssm is not None:
        # Mamba-1 backward (MambaInnerFn.backward): dxz (2*d_inner), the recomputed conv1d_out and delta, the scan's
        # du and ddelta and the recomputed out_z (d_inner each); Mamba-2: d(zxbcdt), the recomputed conv output and
        # the scan output for out_proj
        # inference (prefill, nothing trains): in_proj's output, the conv output, delta and the scan output (Mamba-1);
        # in_proj's output, the conv output and the scan output (Mamba-2)
        s = b.ssm
        training = bool(ctx.trainable or ctx.lora)
        if s.version == 1:
            width = (7 if training else 5) * s.d_inner
        else:
            width = s.in_proj_out + s.conv_dim + (2 if training else 1) * s.d_inner
        mlp_work = tokens * b.ffn * p * 3 if b.kind == "mamba_mlp" else 0   # a hybrid layer's gated MLP after it
        return max(tokens * width * p, mlp_work) + 2 * tokens * b.hidden * 4
    eager = b.heads * span * tokens * (4 + p) * 2 if ctx.attention == "eager" else 0
    mlp = tokens * b.ffn * p * (3 if b.gated else 2)
    return max(eager, mlp) + 2 * tokens * b.hidden * 4
