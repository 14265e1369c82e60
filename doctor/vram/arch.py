"""Transformer shapes read from a Hugging Face `config.json`, with exact parameter counts (no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

FAMILIES = ("opt", "llama", "mistral", "qwen2", "qwen3", "qwen3_vl", "bert", "nanochat", "mamba", "mamba2")


@dataclass(frozen=True)
class Linear:
    """One nn.Linear: `name` is the module's attribute name (what LoRA target lists match)."""

    name: str
    fan_in: int
    fan_out: int
    bias: bool = False

    @property
    def params(self) -> int:
        return self.fan_in * self.fan_out + (self.fan_out if self.bias else 0)


@dataclass(frozen=True)
class SSM:
    """A selective state-space mixer (Mamba-1 or Mamba-2): the sizes its kernels and its inference state need."""

    version: int                   # 1: selective scan (MambaInnerFn); 2: SSD (mamba_split_conv1d_scan_combined)
    d_inner: int                   # expand * hidden
    d_state: int
    d_conv: int
    dt_rank: int = 0               # Mamba-1: rank of the delta projection
    heads: int = 0                 # Mamba-2: SSM heads (one dt, A, D each)
    head_dim: int = 0              # Mamba-2
    groups: int = 1                # Mamba-2: B / C groups

    @property
    def conv_dim(self) -> int:
        """Channels of the depthwise causal conv1d."""
        return self.d_inner if self.version == 1 else self.d_inner + 2 * self.groups * self.d_state

    @property
    def in_proj_out(self) -> int:
        """Width of in_proj's output (x and z for Mamba-1; z, xBC and dt for Mamba-2)."""
        return 2 * self.d_inner if self.version == 1 else self.d_inner + self.conv_dim + self.heads


@dataclass(frozen=True)
class Block:
    """A repeated layer: its linears plus the other (norm, bias-free) parameters."""

    kind: str                      # "decoder" (pre-norm), "opt", "bert" (post-norm), "vit"
    linears: tuple[Linear, ...]
    other_params: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    gated: bool                    # SwiGLU (gate, up, down) vs fc1/act/fc2
    norm: str                      # "rms" (HF RMSNorm, fp32 upcast), "layer", "rms_noparam"
    qk_norm: bool = False
    dropout: bool = False          # hidden / attention-probability dropout active in training
    ssm: SSM | None = None         # kind "mamba": the mixer's sizes (heads, kv_heads, head_dim are 0: no attention)

    @property
    def params(self) -> int:
        return sum(lin.params for lin in self.linears) + self.other_params

    def linear(self, name: str) -> Linear:
        return next(lin for lin in self.linears if lin.name == name)


@dataclass(frozen=True)
class Vision:
    """A ViT tower (Qwen3-VL): patch embedding, blocks, patch mergers into the language model."""

    block: Block
    depth: int
    patch: int
    temporal_patch: int
    merge: int
    embed_params: int
    merger_linears: tuple[Linear, ...]
    merger_other: int

    @property
    def params(self) -> int:
        return (self.embed_params + self.depth * self.block.params
                + sum(lin.params for lin in self.merger_linears) + self.merger_other)


@dataclass(frozen=True)
class Arch:
    """A model's shapes. Counts are exact: tests compare them with transformers' meta-device build."""

    name: str
    family: str
    layers: int
    block: Block
    vocab: int
    embed_params: int              # token (+ position / token-type) embeddings and projections
    head: Linear | None            # lm_head when not tied; None when tied or absent
    final_params: int              # final norm, pooler, ...
    tied: bool
    vision: Vision | None = None
    head_outputs: int = 0          # logits per token (vocab, or labels for a classifier)
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> int:
        total = self.embed_params + self.layers * self.block.params + self.final_params
        total += self.head.params if self.head else 0
        return total + (self.vision.params if self.vision else 0)

    @property
    def linear_params(self) -> int:
        """Parameters inside the repeated blocks' linears (what 4-bit loaders quantize)."""
        total = self.layers * sum(lin.params for lin in self.block.linears)
        if self.vision:
            total += self.vision.depth * sum(lin.params for lin in self.vision.block.linears)
            total += sum(lin.params for lin in self.vision.merger_linears)
        return total


def _get(cfg: dict[str, Any], source: str, key: str, *alts: str, default: Any = None) -> Any:
    for k in (key, *alts):
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    if default is not None:
        return default
    raise InputError(source, key, "missing from the model config; expected an integer")


# Counts a real model config can hold: no layer is 10 million wide, no vocabulary holds 10**12 tokens.
LIMIT = 10**10
POSITIVE = {"hidden_size", "intermediate_size", "ffn_dim", "num_attention_heads", "num_key_value_heads",
            "num_hidden_layers", "vocab_size", "head_dim", "n_layer", "n_embd", "n_head", "n_kv_head",
            "patch_size", "spatial_merge_size", "temporal_patch_size", "num_heads", "depth", "out_hidden_size",
            "word_embed_proj_dim", "max_position_embeddings"}


def _int(cfg: dict[str, Any], source: str, key: str, *alts: str, default: int | None = None) -> int:
    """An integer field of the config: present (or defaulted), a whole number, positive where a zero would
    divide (heads) or mean no model, and of a size real models have."""
    value = _get(cfg, source, key, *alts, default=default)
    low = 1 if key in POSITIVE else 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= LIMIT:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise InputError(source, key, f"is {shown}; expected a whole number from {low} to {LIMIT:.0e}")
    return value


def _rate(cfg: dict[str, Any], source: str, key: str) -> float:
    """A probability field (dropout rates): absent is 0; anything but a number in [0, 1] is bad input."""
    value = cfg.get(key, 0) or 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InputError(source, key, f"is {value!r}"[:60] + "; expected a probability from 0 to 1")
    return float(value)


def from_config(cfg: dict[str, Any], name: str = "", source: str = "config.json") -> Arch:
    """Build an Arch from a config.json mapping; unknown families are bad input (exit 2)."""
    if "model_type" not in cfg and isinstance(cfg.get("ssm_cfg"), dict):
        cfg = _from_mamba_ssm(cfg, source)   # a mamba_ssm MambaLMHeadModel config (state-spaces/mamba-*)
    family = cfg.get("model_type")
    if family not in FAMILIES:
        raise InputError(source, "model_type", f"is {family!r}; doctor estimate models {', '.join(FAMILIES)}")
    builder = {"opt": _opt, "bert": _bert, "nanochat": _nanochat, "qwen3_vl": _qwen3_vl, "mamba": _mamba,
               "mamba2": _mamba}.get(family, _llama)
    try:
        return builder(cfg, name or str(cfg.get("_name_or_path") or family), source)
    except (TypeError, AttributeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        # a field of the wrong shape ("text_config": 1, a list where a number goes): bad input, named
        raise InputError(source, None, f"is not a {family} config doctor can read ({type(exc).__name__}: "
                                       f"{str(exc)[:120]})") from None


def _opt(cfg: dict[str, Any], name: str, source: str) -> Arch:
    h, f = _int(cfg, source, "hidden_size"), _int(cfg, source, "ffn_dim")
    a, L, V = _int(cfg, source, "num_attention_heads"), _int(cfg, source, "num_hidden_layers"), _int(cfg, source, "vocab_size")
    wd = _int(cfg, source, "word_embed_proj_dim", default=h)
    bias = bool(cfg.get("enable_bias", True))
    lin = tuple(Linear(n, h, h, bias) for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
    lin += (Linear("fc1", h, f, bias), Linear("fc2", f, h, bias))
    ln_params = 2 * h if cfg.get("layer_norm_elementwise_affine", True) else 0
    block = Block("opt", lin, 2 * ln_params, h, a, a, h // a, f, False, "layer", dropout=_rate(cfg, source, "dropout") > 0)
    embed = V * wd + (_int(cfg, source, "max_position_embeddings") + 2) * h   # OPT's learned positions are offset by 2
    embed += 2 * wd * h if wd != h else 0                                      # project_in / project_out (opt-350m)
    final = ln_params if cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm") else 0
    return Arch(name, "opt", L, block, V, embed, None, final, True, head_outputs=V, source=source,
                extra={"pre_norm": bool(cfg.get("do_layer_norm_before", True))})


def _llama(cfg: dict[str, Any], name: str, source: str, family: str | None = None) -> Arch:
    h, f = _int(cfg, source, "hidden_size"), _int(cfg, source, "intermediate_size")
    a, L, V = _int(cfg, source, "num_attention_heads"), _int(cfg, source, "num_hidden_layers"), _int(cfg, source, "vocab_size")
    g = _int(cfg, source, "num_key_value_heads", default=a)
    d = _int(cfg, source, "head_dim", default=h // a)
    family = family or cfg["model_type"]
    qkv_bias = bool(cfg.get("attention_bias", family == "qwen2"))
    o_bias = bool(cfg.get("attention_bias", False)) and family != "qwen2"
    mlp_bias = bool(cfg.get("mlp_bias", False))
    lin = (Linear("q_proj", h, a * d, qkv_bias), Linear("k_proj", h, g * d, qkv_bias),
           Linear("v_proj", h, g * d, qkv_bias), Linear("o_proj", a * d, h, o_bias),
           Linear("gate_proj", h, f, mlp_bias), Linear("up_proj", h, f, mlp_bias), Linear("down_proj", f, h, mlp_bias))
    qk_norm = family in ("qwen3", "qwen3_vl")
    block = Block("decoder", lin, 2 * h + (2 * d if qk_norm else 0), h, a, g, d, f, True, "rms", qk_norm=qk_norm,
                  dropout=_rate(cfg, source, "attention_dropout") > 0)
    tied = bool(cfg.get("tie_word_embeddings", False))
    head = None if tied else Linear("lm_head", h, V)
    return Arch(name, family, L, block, V, V * h, head, h, tied, head_outputs=V, source=source)


def _bert(cfg: dict[str, Any], name: str, source: str) -> Arch:
    h, f = _int(cfg, source, "hidden_size"), _int(cfg, source, "intermediate_size")
    a, L, V = _int(cfg, source, "num_attention_heads"), _int(cfg, source, "num_hidden_layers"), _int(cfg, source, "vocab_size")
    lin = (Linear("query", h, h, True), Linear("key", h, h, True), Linear("value", h, h, True),
           Linear("dense", h, h, True), Linear("intermediate", h, f, True), Linear("output", f, h, True))
    dropout = _rate(cfg, source, "hidden_dropout_prob") > 0
    block = Block("bert", lin, 4 * h, h, a, a, h // a, f, False, "layer", dropout=dropout)
    embed = (V + _int(cfg, source, "max_position_embeddings") + _int(cfg, source, "type_vocab_size", default=2)) * h + 2 * h
    labels = _int(cfg, source, "num_labels", default=2)
    pooler = h * h + h
    # BertForSequenceClassification: encoder + pooler + a num_labels classifier (the HF memory-anatomy setup)
    return Arch(name, "bert", L, block, V, embed, Linear("classifier", h, labels, True), pooler, False,
                head_outputs=labels, source=source)


def _nanochat(cfg: dict[str, Any], name: str, source: str) -> Arch:
    """karpathy/nanochat GPT: width 64*depth, 128-wide heads, untied embeddings, relu^2 MLP, parameter-free RMSNorm."""
    L = _int(cfg, source, "n_layer")
    n = _int(cfg, source, "n_embd", default=64 * L)
    a = _int(cfg, source, "n_head", default=max(1, (n + 127) // 128))
    g = _int(cfg, source, "n_kv_head", default=a)
    V = _int(cfg, source, "vocab_size", default=65536)
    d = n // a
    lin = (Linear("c_q", n, a * d), Linear("c_k", n, g * d), Linear("c_v", n, g * d), Linear("c_proj", n, n),
           Linear("c_fc", n, 4 * n), Linear("mlp_c_proj", 4 * n, n))
    block = Block("decoder", lin, 0, n, a, g, d, 4 * n, False, "rms_noparam", qk_norm=True)
    return Arch(name, "nanochat", L, block, V, V * n, Linear("lm_head", n, V), 0, False, head_outputs=V, source=source,
                extra={"sequence_len": cfg.get("sequence_len")})


def _qwen3_vl(cfg: dict[str, Any], name: str, source: str) -> Arch:
    text = cfg.get("text_config") or {}
    vis = cfg.get("vision_config") or {}
    if not isinstance(text, dict) or not isinstance(vis, dict):
        raise InputError(source, "text_config" if not isinstance(text, dict) else "vision_config", "expected a mapping")
    text = dict(text)
    if not text or not vis:
        raise InputError(source, "text_config" if not text else "vision_config", "missing; expected a mapping")
    text.setdefault("tie_word_embeddings", cfg.get("tie_word_embeddings", False))
    lm = _llama(text, name, source, family="qwen3_vl")
    vs = f"{source}: vision_config"
    h, f = _int(vis, vs, "hidden_size"), _int(vis, vs, "intermediate_size")
    heads, depth = _int(vis, vs, "num_heads"), _int(vis, vs, "depth")
    patch, tp, merge = _int(vis, vs, "patch_size"), _int(vis, vs, "temporal_patch_size"), _int(vis, vs, "spatial_merge_size")
    out = _int(vis, vs, "out_hidden_size")
    lin = (Linear("qkv", h, 3 * h, True), Linear("proj", h, h, True),
           Linear("linear_fc1", h, f, True), Linear("linear_fc2", f, h, True))
    block = Block("vit", lin, 4 * h, h, heads, heads, h // heads, f, False, "layer")
    embed = _int(vis, vs, "in_channels", default=3) * tp * patch * patch * h + h + _int(vis, vs, "num_position_embeddings") * h
    wide = h * merge * merge
    mergers = 1 + len(vis.get("deepstack_visual_indexes") or [])
    merger_lin = tuple(x for _ in range(mergers) for x in (Linear("linear_fc1", wide, wide, True), Linear("linear_fc2", wide, out, True)))
    merger_norms = 2 * h + (mergers - 1) * 2 * wide     # the main merger norms before the shuffle, DeepStack mergers after
    vision = Vision(block, depth, patch, tp, merge, embed, merger_lin, merger_norms)
    return Arch(name, "qwen3_vl", lm.layers, lm.block, lm.vocab, lm.embed_params, lm.head, lm.final_params, lm.tied,
                vision=vision, head_outputs=lm.vocab, source=source)


# ---------------------------------------------------------------------------------------------------------------
# Mamba / SSM. Parameters per layer as the reference implementation holds them (mamba_ssm/modules/mamba_simple.py
# Mamba, mamba2.py Mamba2; transformers' MambaMixer / Mamba2Mixer are the same modules): tests build transformers'
# MambaForCausalLM / Mamba2ForCausalLM and compare sum(p.numel()).


def _from_mamba_ssm(cfg: dict[str, Any], source: str) -> dict[str, Any]:
    """A mamba_ssm config (d_model, n_layer, ssm_cfg, pad_vocab_size_multiple; mamba_ssm/models/config_mamba.py)
    as the transformers Mamba / Mamba2 config with the same modules. Hybrid layouts are refused, not guessed."""
    ssm = cfg["ssm_cfg"]
    if cfg.get("attn_layer_idx"):
        raise InputError(source, "attn_layer_idx", "lists attention layers: hybrid Mamba + attention layouts are "
                                                   "not modelled yet; expected a pure Mamba config")
    if cfg.get("d_intermediate"):
        raise InputError(source, "d_intermediate", "adds an MLP to each Mamba block, which doctor does not model "
                                                   "yet; expected 0")
    layer = ssm.get("layer", "Mamba1")
    if layer not in ("Mamba1", "Mamba2"):
        raise InputError(source, "ssm_cfg.layer", f"is {layer!r}; expected Mamba1 or Mamba2")
    d = _int(cfg, source, "d_model")
    vocab = _int(cfg, source, "vocab_size")
    pad = _int(cfg, source, "pad_vocab_size_multiple", default=8)
    vocab += (pad - vocab % pad) % pad     # MambaLMHeadModel pads the vocabulary to the multiple
    expand = _int(ssm, source, "expand", default=2)
    out = {"model_type": "mamba" if layer == "Mamba1" else "mamba2", "hidden_size": d,
           "num_hidden_layers": _int(cfg, source, "n_layer"), "vocab_size": vocab,
           "expand": expand, "conv_kernel": _int(ssm, source, "d_conv", default=4),
           "state_size": _int(ssm, source, "d_state", default=16 if layer == "Mamba1" else 128),
           "use_bias": bool(ssm.get("bias", False)), "use_conv_bias": bool(ssm.get("conv_bias", True)),
           "tie_word_embeddings": bool(cfg.get("tie_embeddings", True)),
           "layer_norm_bias": not cfg.get("rms_norm", True)}
    if layer == "Mamba1":
        rank = ssm.get("dt_rank", "auto")
        out["time_step_rank"] = -(-d // 16) if rank == "auto" else rank
    else:
        head = _int(ssm, source, "headdim", default=64)
        out.update(head_dim=head, n_groups=_int(ssm, source, "ngroups", default=1),
                   num_heads=expand * d // head, mamba2_norm=bool(ssm.get("rmsnorm", True)))
    return out


def _mamba(cfg: dict[str, Any], name: str, source: str) -> Arch:
    """transformers' MambaForCausalLM / Mamba2ForCausalLM (and mamba_ssm's MambaLMHeadModel): embeddings, n_layer
    pre-norm blocks of one mixer each, a final norm, an LM head tied by default (Mamba-1) or not (Mamba-2)."""
    family = cfg["model_type"]
    h, L, V = _int(cfg, source, "hidden_size", "d_model"), _int(cfg, source, "num_hidden_layers", "n_layer"), \
        _int(cfg, source, "vocab_size")
    expand = _int(cfg, source, "expand", default=2)
    d_inner = _int(cfg, source, "intermediate_size", default=expand * h) if family == "mamba" else expand * h
    d_state = _int(cfg, source, "state_size", "d_state", default=16 if family == "mamba" else 128)
    d_conv = _int(cfg, source, "conv_kernel", "d_conv", default=4)
    bias, conv_bias = bool(cfg.get("use_bias", False)), bool(cfg.get("use_conv_bias", True))
    norm = h * (2 if cfg.get("layer_norm_bias") else 1)          # RMSNorm weight (LayerNorm: weight and bias)
    if family == "mamba":
        rank = cfg.get("time_step_rank", "auto")
        rank = -(-h // 16) if rank == "auto" else _int(cfg, source, "time_step_rank")
        ssm = SSM(1, d_inner, d_state, d_conv, dt_rank=rank)
        lin = (Linear("in_proj", h, 2 * d_inner, bias), Linear("x_proj", d_inner, rank + 2 * d_state),
               Linear("dt_proj", rank, d_inner, True), Linear("out_proj", d_inner, h, bias))
        # conv1d (depthwise: d_conv taps per channel, + bias), A_log (d_inner x d_state), D (d_inner), the norm
        other = d_inner * d_conv + (d_inner if conv_bias else 0) + d_inner * d_state + d_inner + norm
        tied = bool(cfg.get("tie_word_embeddings", True))
    else:
        heads = _int(cfg, source, "num_heads", default=d_inner // _int(cfg, source, "head_dim", default=64))
        head_dim = _int(cfg, source, "head_dim", default=64)
        groups = _int(cfg, source, "n_groups", "ngroups", default=1)
        ssm = SSM(2, d_inner, d_state, d_conv, heads=heads, head_dim=head_dim, groups=groups)
        lin = (Linear("in_proj", h, ssm.in_proj_out, bias), Linear("out_proj", d_inner, h, bias))
        gated_norm = d_inner if cfg.get("mamba2_norm", True) else 0
        # conv1d over x, B and C; dt_bias, A_log and D per head; the gated RMSNorm; the block's norm
        other = ssm.conv_dim * d_conv + (ssm.conv_dim if conv_bias else 0) + 3 * heads + gated_norm + norm
        tied = bool(cfg.get("tie_word_embeddings", False))
    block = Block("mamba", lin, other, h, 0, 0, 0, d_inner, False, "rms", ssm=ssm)
    head = None if tied else Linear("lm_head", h, V)
    return Arch(name, family, L, block, V, V * h, head, norm, tied, head_outputs=V, source=source)
