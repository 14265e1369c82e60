"""Transformer shapes read from a Hugging Face `config.json`, with exact parameter counts (no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

FAMILIES = ("opt", "llama", "mistral", "qwen2", "qwen3", "qwen3_vl", "bert", "nanochat", "mamba", "mamba2", "bamba",
            "nemotron_h", "granitemoehybrid")
HYBRIDS = ("bamba", "nemotron_h", "granitemoehybrid (dense)")
# hybrid families transformers builds that doctor does not model yet, and what they add that it cannot count
REFUSED_HYBRIDS = {
    "jamba": "Jamba (Mamba-1 mixers with dt/B/C norms outside the fused kernel, mixture-of-experts MLPs)",
    "zamba": "Zamba (one attention block shared by several layers, with per-layer adapters)",
    "zamba2": "Zamba2 (shared attention blocks with LoRA adapters, hybrid_layer_ids)",
    "falcon_h1": "Falcon-H1 (attention and Mamba-2 side by side in every layer, muP multipliers)",
}


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
    norm: str                      # "rms" (HF RMSNorm, fp32 upcast), "layer", "rms_noparam", "rms_fp32" (an RMSNorm
                                   # that applies its weight in fp32 too: NemotronHRMSNorm)
    qk_norm: bool = False
    dropout: bool = False          # hidden / attention-probability dropout active in training
    ssm: SSM | None = None         # kind "mamba": the mixer's sizes (heads, kv_heads, head_dim are 0: no attention)
    # kinds of hybrid models' layers: "attention" (a norm and attention alone), "mlp" (a norm and an MLP alone),
    # "attention_mlp" / "mamba_mlp" (attention / a Mamba-2 mixer, then a norm and a gated MLP of width `ffn`)
    attn_out_copy: bool = False    # q built by torch.cat (partial rotary): the attention output is copied for o_proj

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
    mix: tuple[tuple[Block, int], ...] = ()    # hybrid layouts: (block, how many layers) per kind of layer

    @property
    def kinds(self) -> tuple[tuple[Block, int], ...]:
        """(block, how many layers) for every kind of layer: `layers` x `block`, or a hybrid model's mix."""
        return self.mix or ((self.block, self.layers),)

    @property
    def attention_layers(self) -> int:
        """Layers that hold a KV cache in generation."""
        return sum(n for b, n in self.kinds if b.heads)

    @property
    def params(self) -> int:
        total = self.embed_params + sum(n * b.params for b, n in self.kinds) + self.final_params
        total += self.head.params if self.head else 0
        return total + (self.vision.params if self.vision else 0)

    @property
    def linear_params(self) -> int:
        """Parameters inside the repeated blocks' linears (what 4-bit loaders quantize)."""
        total = sum(n * sum(lin.params for lin in b.linears) for b, n in self.kinds)
        if self.vision:
            total += self.vision.depth * sum(lin.params for lin in self.vision.block.linears)
            total += sum(lin.params for lin in self.vision.merger_linears)
        return total


def _get(cfg: dict[str, Any], source: str, key: str, *alts: str, default: Any = None, prefix: str = "") -> Any:
    for k in (key, *alts):
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    if default is not None:
        return default
    raise InputError(source, prefix + key, "missing from the model config; expected an integer")


def _present(cfg: dict[str, Any], key: str, *alts: str) -> str:
    """The spelling of a key the config holds (the first of key, *alts it sets), else key: what a message names."""
    return next((k for k in (key, *alts) if cfg.get(k) is not None), key)


# Counts a real model config can hold: no layer is 10 million wide, no vocabulary holds 10**12 tokens.
LIMIT = 10**10
POSITIVE = {"hidden_size", "intermediate_size", "ffn_dim", "num_attention_heads", "num_key_value_heads",
            "num_hidden_layers", "vocab_size", "head_dim", "n_layer", "n_embd", "n_head", "n_kv_head",
            "patch_size", "spatial_merge_size", "temporal_patch_size", "num_heads", "depth", "out_hidden_size",
            "word_embed_proj_dim", "max_position_embeddings", "mamba_n_heads",
            # SSM sizes: a zero expand, state, conv kernel, dt rank, head or group count is no mixer (a conv1d of
            # kernel 0 fails, dt_proj's init divides by the rank, the B/C groups divide the heads)
            "expand", "state_size", "conv_kernel", "time_step_rank", "n_groups", "mamba_expand", "mamba_d_state",
            "mamba_d_conv", "mamba_n_groups", "mamba_d_head", "mamba_num_heads", "mamba_head_dim", "ssm_state_size",
            # mamba_ssm's MambaConfig and its ssm_cfg
            "d_model", "pad_vocab_size_multiple", "d_state", "d_conv", "dt_rank", "headdim", "ngroups"}


def _int(cfg: dict[str, Any], source: str, key: str, *alts: str, default: int | None = None,
         prefix: str = "") -> int:
    """An integer field of the config: present (or defaulted), a whole number, positive where a zero would
    divide (heads) or mean no model, and of a size real models have. A bad value is named by the spelling the
    config uses (an alternative key, a nested mapping's `prefix` such as "ssm_cfg.")."""
    value = _get(cfg, source, key, *alts, default=default, prefix=prefix)
    low = 1 if key in POSITIVE else 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= LIMIT:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise InputError(source, prefix + _present(cfg, key, *alts),
                         f"is {shown}; expected a whole number from {low} to {LIMIT:.0e}")
    return value


def _head_dim(cfg: dict[str, Any], source: str, h: int, a: int, h_key: str = "hidden_size",
              a_key: str = "num_attention_heads") -> int:
    """The head width a config leaves implicit, hidden_size // num_attention_heads (LlamaConfig, OPTAttention,
    BertSelfAttention, nanochat's CausalSelfAttention): more heads than hidden units makes it 0, a model no library
    builds. Named by the heads key the config holds, not the head_dim it does not."""
    if a > h:
        raise InputError(source, _present(cfg, a_key), f"is {a}, more than {h_key} {h}: each head would be "
                                                       f"{h_key} // {a_key} = 0 wide; expected at most {h} heads")
    return h // a


def _kv_heads(cfg: dict[str, Any], source: str, a: int, g: int, a_key: str = "num_attention_heads",
              g_key: str = "num_key_value_heads") -> None:
    """Grouped-query attention: each key/value head serves a // g query heads (transformers' repeat_kv with
    num_key_value_groups = num_attention_heads // num_key_value_heads; nanochat asserts n_head % n_kv_head == 0).
    More key/value heads than query heads, or a count that does not divide them, fails in the attention."""
    if g > a or a % g:
        raise InputError(source, _present(cfg, g_key), f"is {g} with {a_key} {a}; expected a divisor of {a_key} "
                                                       f"(each key/value head serves {a_key} / {g_key} query heads)")


def _rate(cfg: dict[str, Any], source: str, key: str) -> float:
    """A probability field (dropout rates): absent is 0; anything but a number in [0, 1] is bad input."""
    value = cfg.get(key, 0) or 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InputError(source, key, f"is {value!r}"[:60] + "; expected a probability from 0 to 1")
    return float(value)


def from_config(cfg: dict[str, Any], name: str = "", source: str = "config.json") -> Arch:
    """Build an Arch from a config.json mapping; unknown families are bad input (exit 2)."""
    if "model_type" not in cfg and cfg.get("ssm_cfg") is not None:
        # a mamba_ssm MambaLMHeadModel config (state-spaces/mamba-*): MambaConfig.ssm_cfg is a dict of mixer kwargs
        if not isinstance(cfg["ssm_cfg"], dict):
            raise InputError(source, "ssm_cfg", f"is {cfg['ssm_cfg']!r}"[:60] + "; expected a mapping of the "
                                                "Mamba mixer's settings (layer, d_state, d_conv, expand, ...)")
        try:
            cfg = _from_mamba_ssm(cfg, source)
        except (TypeError, AttributeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            raise InputError(source, None, f"is not a mamba_ssm config doctor can read ({type(exc).__name__}: "
                                           f"{str(exc)[:120]})") from None
    family = cfg.get("model_type")
    if isinstance(family, str) and family in REFUSED_HYBRIDS:
        raise InputError(source, "model_type", f"is {family!r}: {REFUSED_HYBRIDS[family]} is not modelled yet; "
                                               f"the hybrid attention + Mamba layouts doctor models are "
                                               f"{', '.join(HYBRIDS)}")
    if family not in FAMILIES:
        raise InputError(source, "model_type", f"is {family!r}; doctor estimate models {', '.join(FAMILIES)}")
    builder = {"opt": _opt, "bert": _bert, "nanochat": _nanochat, "qwen3_vl": _qwen3_vl, "mamba": _mamba,
               "mamba2": _mamba, "bamba": _bamba, "nemotron_h": _nemotron_h,
               "granitemoehybrid": _granite_hybrid}.get(family, _llama)
    try:
        arch = builder(cfg, name or str(cfg.get("_name_or_path") or family), source)
    except (TypeError, AttributeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        # a field of the wrong shape ("text_config": 1, a list where a number goes): bad input, named
        raise InputError(source, None, f"is not a {family} config doctor can read ({type(exc).__name__}: "
                                       f"{str(exc)[:120]})") from None
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    positions = text.get("max_position_embeddings")
    if isinstance(positions, int) and not isinstance(positions, bool) and positions > 0:
        arch.extra["max_positions"] = positions   # the length the model's positions were built for
    return arch


def _opt(cfg: dict[str, Any], name: str, source: str) -> Arch:
    h, f = _int(cfg, source, "hidden_size"), _int(cfg, source, "ffn_dim")
    a, L, V = _int(cfg, source, "num_attention_heads"), _int(cfg, source, "num_hidden_layers"), _int(cfg, source, "vocab_size")
    wd = _int(cfg, source, "word_embed_proj_dim", default=h)
    _head_dim(cfg, source, h, a)
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
    _kv_heads(cfg, source, a, g)
    d = _int(cfg, source, "head_dim") if cfg.get("head_dim") is not None else _head_dim(cfg, source, h, a)
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
    _head_dim(cfg, source, h, a)
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
    # nanochat/gpt.py CausalSelfAttention: assert n_embd % n_head == 0; assert n_kv_head <= n_head and
    # n_head % n_kv_head == 0
    d = _head_dim(cfg, source, n, a, "n_embd", "n_head")
    if cfg.get("n_head") is not None and n % a:
        raise InputError(source, "n_head", f"is {a}, which does not divide n_embd {n}; expected a divisor of n_embd "
                                           "(nanochat's heads split n_embd evenly)")
    _kv_heads(cfg, source, a, g, "n_head", "n_kv_head")
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
    lm = _llama(text, name, f"{source}: text_config", family="qwen3_vl")   # bad keys named inside text_config
    vs = f"{source}: vision_config"
    h, f = _int(vis, vs, "hidden_size"), _int(vis, vs, "intermediate_size")
    heads, depth = _int(vis, vs, "num_heads"), _int(vis, vs, "depth")
    patch, tp, merge = _int(vis, vs, "patch_size"), _int(vis, vs, "temporal_patch_size"), _int(vis, vs, "spatial_merge_size")
    out = _int(vis, vs, "out_hidden_size")
    _head_dim(vis, vs, h, heads, "hidden_size", "num_heads")
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
        raise InputError(source, "attn_layer_idx", "lists attention layers: mamba_ssm's hybrid layouts (its MHA "
                                                   "mixer) are not modelled yet; expected a pure Mamba config (the "
                                                   f"hybrids doctor models are transformers' {', '.join(HYBRIDS)})")
    if cfg.get("d_intermediate"):
        raise InputError(source, "d_intermediate", "adds an MLP to each Mamba block, which doctor does not model "
                                                   "yet; expected 0")
    layer = ssm.get("layer", "Mamba1")
    if layer not in ("Mamba1", "Mamba2"):
        raise InputError(source, "ssm_cfg.layer", f"is {layer!r}; expected Mamba1 or Mamba2")
    # every size is checked here, under the name the file uses (ssm_cfg.expand, not the derived intermediate_size)
    d = _int(cfg, source, "d_model")
    vocab = _int(cfg, source, "vocab_size")
    pad = _int(cfg, source, "pad_vocab_size_multiple", default=8)
    vocab += (pad - vocab % pad) % pad     # MambaLMHeadModel pads the vocabulary to the multiple
    s = "ssm_cfg."
    expand = _int(ssm, source, "expand", default=2, prefix=s)
    out = {"model_type": "mamba" if layer == "Mamba1" else "mamba2", "hidden_size": d,
           "num_hidden_layers": _int(cfg, source, "n_layer"), "vocab_size": vocab,
           "expand": expand, "conv_kernel": _int(ssm, source, "d_conv", default=4, prefix=s),
           "state_size": _int(ssm, source, "d_state", default=16 if layer == "Mamba1" else 128, prefix=s),
           "use_bias": bool(ssm.get("bias", False)), "use_conv_bias": bool(ssm.get("conv_bias", True)),
           "tie_word_embeddings": bool(cfg.get("tie_embeddings", True)),
           "layer_norm_bias": not cfg.get("rms_norm", True)}
    if layer == "Mamba1":
        # mamba_simple.Mamba: dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        rank = ssm.get("dt_rank", "auto")
        out["time_step_rank"] = -(-d // 16) if rank == "auto" else _int(ssm, source, "dt_rank", prefix=s)
    else:
        # mamba2.Mamba2: d_inner = expand * d_model; assert d_ssm % headdim == 0; nheads = d_ssm // headdim; the SSD
        # kernels assert nheads % ngroups == 0
        head = _int(ssm, source, "headdim", default=64, prefix=s)
        groups = _int(ssm, source, "ngroups", default=1, prefix=s)
        d_inner = expand * d
        if d_inner % head:
            raise InputError(source, "ssm_cfg.headdim", f"is {head}, which does not divide the mixer's width "
                                                        f"expand x d_model = {d_inner}; expected a divisor of it")
        if (d_inner // head) % groups:
            raise InputError(source, "ssm_cfg.ngroups", f"is {groups}, which does not divide the mixer's "
                                                        f"{d_inner // head} heads (expand x d_model / headdim); "
                                                        "expected a divisor of the head count")
        out.update(head_dim=head, n_groups=groups, num_heads=d_inner // head,
                   mamba2_norm=bool(ssm.get("rmsnorm", True)))
    return out


def _mamba(cfg: dict[str, Any], name: str, source: str) -> Arch:
    """transformers' MambaForCausalLM / Mamba2ForCausalLM (and mamba_ssm's MambaLMHeadModel): embeddings, n_layer
    pre-norm blocks of one mixer each, a final norm, an LM head tied by default (Mamba-1) or not (Mamba-2)."""
    family = cfg["model_type"]
    h, L, V = _int(cfg, source, "hidden_size", "d_model"), _int(cfg, source, "num_hidden_layers", "n_layer"), \
        _int(cfg, source, "vocab_size")
    # MambaMixer: config.intermediate_size (MambaConfig sets expand x hidden_size unless the file gives it);
    # Mamba2Mixer: int(config.expand * hidden_size)
    if family == "mamba" and cfg.get("intermediate_size") is not None:
        d_inner = _int(cfg, source, "intermediate_size")
    else:
        d_inner = _int(cfg, source, "expand", default=2) * h
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
        # Mamba2Config: num_heads 128, head_dim 64, n_groups 8 unless given; validate_architecture: hidden_size x
        # expand == num_heads x head_dim
        heads, head_dim = _int(cfg, source, "num_heads", default=128), _int(cfg, source, "head_dim", default=64)
        groups = _int(cfg, source, "n_groups", "ngroups", default=8)
        _mamba2_shape(cfg, source, d_inner, heads, head_dim, groups, MAMBA2_KEYS)
        ssm = SSM(2, d_inner, d_state, d_conv, heads=heads, head_dim=head_dim, groups=groups)
        lin = (Linear("in_proj", h, ssm.in_proj_out, bias), Linear("out_proj", d_inner, h, bias))
        gated_norm = d_inner if cfg.get("mamba2_norm", True) else 0
        # conv1d over x, B and C; dt_bias, A_log and D per head; the gated RMSNorm; the block's norm
        other = ssm.conv_dim * d_conv + (ssm.conv_dim if conv_bias else 0) + 3 * heads + gated_norm + norm
        tied = bool(cfg.get("tie_word_embeddings", False))
    block = Block("mamba", lin, other, h, 0, 0, 0, d_inner, False, "rms", ssm=ssm)
    head = None if tied else Linear("lm_head", h, V)
    return Arch(name, family, L, block, V, V * h, head, norm, tied, head_outputs=V, source=source)


# ---------------------------------------------------------------------------------------------------------------
# Hybrid attention + Mamba-2 models, as transformers builds them (huggingface/transformers src/transformers/models/
# bamba/modeling_bamba.py, nemotron_h/modeling_nemotron_h.py, granitemoehybrid/modeling_granitemoehybrid.py and their
# configuration_*.py, read at v5.24): the config's layer list becomes (block, count) per kind of layer; tests build the
# same configs with transformers and compare sum(p.numel()), the cache it fills and what autograd saves.


# the keys each family spells the Mamba-2 sizes with: heads, head width, expand, the B/C groups (and alternatives)
BAMBA_KEYS = ("mamba_n_heads", "mamba_d_head", "mamba_expand", ("mamba_n_groups",))
NEMOTRON_H_KEYS = ("mamba_num_heads", "mamba_head_dim", "expand", ("mamba_n_groups", "n_groups"))
MAMBA2_KEYS = ("num_heads", "head_dim", "expand", ("n_groups", "ngroups"))


def _mamba2_shape(cfg: dict[str, Any], source: str, d_inner: int, heads: int, head_dim: int, groups: int,
                  keys: tuple[str, str, str, tuple[str, ...]]) -> None:
    """What every Mamba2Mixer needs (Mamba2Config / BambaConfig / GraniteMoeHybridConfig.validate_architecture:
    heads x head_dim = expand x hidden_size; the scan's repeat_interleave(num_heads // n_groups) and the gated
    RMSNorm's group_size = d_inner // n_groups: the groups divide the heads). Named by a key the config sets."""
    n, dim, expand, group_keys = keys
    if heads * head_dim != d_inner:
        # the head width when the file gives one as a number, else the head count (BambaConfig's "auto" head width
        # is d_inner // mamba_n_heads: wrong only when the heads do not divide), else expand
        key = dim if isinstance(cfg.get(dim), int) else _present(cfg, n, dim, expand, "hidden_size", "d_model")
        given = {k: "" if cfg.get(k) is not None else ", not set" for k in (n, dim)}
        raise InputError(source, key, f"{heads} heads ({n}{given[n]}) x {head_dim} ({dim}{given[dim]}) = "
                                      f"{heads * head_dim} is not the mixer's width {d_inner}; expected "
                                      f"{n} x {dim} = {expand} x hidden_size")
    if heads % groups:
        raise InputError(source, _present(cfg, *group_keys), f"is {groups}, which does not divide the {heads} heads "
                                                             f"({n}); expected a divisor of {n}")


def _mamba2_mixer(cfg: dict[str, Any], source: str, h: int, d_inner: int, heads: int, head_dim: int, groups: int,
                  d_state: int, d_conv: int, bias: bool, conv_bias: bool,
                  keys: tuple[str, str, str, tuple[str, ...]] = BAMBA_KEYS) -> tuple[SSM, tuple[Linear, ...], int]:
    """BambaMixer / NemotronHMamba2Mixer (the Mamba2Mixer modules): in_proj to z, xBC and dt; a depthwise conv1d
    over xBC; dt_bias, A_log and D per head; a gated RMSNorm over d_inner; out_proj. (sizes, linears, other params)"""
    _mamba2_shape(cfg, source, d_inner, heads, head_dim, groups, keys)
    ssm = SSM(2, d_inner, d_state, d_conv, heads=heads, head_dim=head_dim, groups=groups)
    lin = (Linear("in_proj", h, ssm.in_proj_out, bias), Linear("out_proj", d_inner, h, bias))
    other = ssm.conv_dim * d_conv + (ssm.conv_dim if conv_bias else 0) + 3 * heads + d_inner
    return ssm, lin, other


def _attention_linears(h: int, a: int, g: int, d: int, bias: bool) -> tuple[Linear, ...]:
    return (Linear("q_proj", h, a * d, bias), Linear("k_proj", h, g * d, bias), Linear("v_proj", h, g * d, bias),
            Linear("o_proj", a * d, h, bias))


def _hybrid_arch(cfg: dict[str, Any], name: str, source: str, family: str, mix: dict[str, tuple[Block, int]],
                 h: int, V: int) -> Arch:
    """Embeddings, the layers in `mix`, a final RMSNorm and an LM head (untied unless the config ties it).
    `block` is the most common kind (what a per-model figure such as FSDP's unit size reads first)."""
    kinds = tuple((b, n) for b, n in mix.values() if n)
    tied = bool(cfg.get("tie_word_embeddings", False))
    head = None if tied else Linear("lm_head", h, V)
    block = max(kinds, key=lambda x: x[1])[0]
    layers = sum(n for _, n in kinds)
    return Arch(name, family, layers, block, V, V * h, head, h, tied, head_outputs=V, source=source, mix=kinds,
                extra={"layer_kinds": {k: n for k, (_, n) in mix.items() if n}})


def _bamba(cfg: dict[str, Any], name: str, source: str) -> Arch:
    """BambaForCausalLM: every layer is input_layernorm, a mixer - BambaAttention on the layers listed in
    attn_layer_indices, a BambaMixer (Mamba-2) on the others - then pre_ff_layernorm and a gated MLP."""
    h, f = _int(cfg, source, "hidden_size"), _int(cfg, source, "intermediate_size")
    a, L, V = _int(cfg, source, "num_attention_heads"), _int(cfg, source, "num_hidden_layers"), _int(cfg, source, "vocab_size")
    g = _int(cfg, source, "num_key_value_heads", default=a)
    _kv_heads(cfg, source, a, g)
    d = _int(cfg, source, "head_dim") if cfg.get("head_dim") is not None else _head_dim(cfg, source, h, a)
    indices = cfg.get("attn_layer_indices") or []
    if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise InputError(source, "attn_layer_indices", f"is {indices!r}"[:60] + "; expected a list of layer numbers")
    attn = len({i for i in indices if 0 <= i < L})    # BambaConfig.layers_block_type: "i in attn_layer_indices"
    expand = _int(cfg, source, "mamba_expand", default=2)
    heads = _int(cfg, source, "mamba_n_heads", default=128)
    head_dim = (expand * h // heads if cfg.get("mamba_d_head", "auto") == "auto"
                else _int(cfg, source, "mamba_d_head"))
    mlp_bias = bool(cfg.get("mlp_bias", False))
    mlp = (Linear("gate_proj", h, f, mlp_bias), Linear("up_proj", h, f, mlp_bias), Linear("down_proj", f, h, mlp_bias))
    dropout = _rate(cfg, source, "attention_dropout") > 0
    # BambaAttention's partial rotary (partial_rotary_factor 0.5) concatenates q and k: attn_out_copy
    att = Block("attention_mlp", _attention_linears(h, a, g, d, bool(cfg.get("attention_bias", False))) + mlp, 2 * h,
                h, a, g, d, f, True, "rms", dropout=dropout, attn_out_copy=True)
    ssm, lin, other = _mamba2_mixer(cfg, source, h, expand * h, heads, head_dim,
                                    _int(cfg, source, "mamba_n_groups", default=1),
                                    _int(cfg, source, "mamba_d_state", default=256),
                                    _int(cfg, source, "mamba_d_conv", default=4),
                                    bool(cfg.get("mamba_proj_bias", False)), bool(cfg.get("mamba_conv_bias", True)))
    mam = Block("mamba_mlp", lin + mlp, other + 2 * h, h, 0, 0, 0, f, True, "rms", ssm=ssm)
    return _hybrid_arch(cfg, name, source, "bamba", {"attention": (att, attn), "mamba": (mam, L - attn)}, h, V)


NEMOTRON_H_PATTERN = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"}   # NemotronHConfig._pattern_to_list
NEMOTRON_H_TYPES = {"mamba": "mamba", "linear_attention": "mamba", "attention": "attention",
                    "full_attention": "attention", "mlp": "mlp", "moe": "moe"}   # and remap_legacy_layer_types


def _nemotron_h_layers(cfg: dict[str, Any], source: str) -> list[str]:
    """The layer types of a NemotronH config: layers_block_type (or layer_types), else hybrid_override_pattern."""
    types = cfg.get("layers_block_type") or cfg.get("layer_types")
    if types is not None:
        key = "layers_block_type" if cfg.get("layers_block_type") else "layer_types"
        if not isinstance(types, list) or not all(isinstance(t, str) and t in NEMOTRON_H_TYPES for t in types):
            raise InputError(source, key, f"is {types!r}"[:60] + f"; expected a list of {', '.join(NEMOTRON_H_TYPES)}")
        out = [NEMOTRON_H_TYPES[t] for t in types]
        if not out:
            raise InputError(source, key, f"is empty; expected a list of {', '.join(NEMOTRON_H_TYPES)}, one per layer")
    else:
        pattern = cfg.get("hybrid_override_pattern")
        if not isinstance(pattern, str) or not pattern or set(pattern) - set(NEMOTRON_H_PATTERN):
            raise InputError(source, "hybrid_override_pattern", f"is {pattern!r}"[:60] + "; expected a string of "
                             "M (Mamba-2), * (attention), - (MLP), E (mixture of experts), one letter per layer")
        out = [NEMOTRON_H_PATTERN[c] for c in pattern]
    key = ("layers_block_type" if cfg.get("layers_block_type") else "layer_types") if types is not None \
        else "hybrid_override_pattern"
    if "moe" in out:
        raise InputError(source, key, "has mixture-of-experts layers (moe / E), which doctor does not model yet; "
                                      "expected Mamba-2 (M), attention (*) and MLP (-) layers only")
    if _int(cfg, source, "num_nextn_predict_layers", default=0):
        raise InputError(source, "num_nextn_predict_layers", "adds multi-token-prediction layers, which doctor does "
                                                             "not model yet; expected 0")
    if cfg.get("num_hidden_layers") is not None and _int(cfg, source, "num_hidden_layers") != len(out):
        # NVIDIA's NemotronHConfig (and vLLM's copy): assert len(hybrid_override_pattern) == num_hidden_layers;
        # transformers 5 warns and builds the list's length. A file that says both cannot say which it means.
        raise InputError(source, key, f"has {len(out)} layers but num_hidden_layers is {cfg['num_hidden_layers']}; "
                                      "expected one entry per layer")
    return out


def _nemotron_h(cfg: dict[str, Any], name: str, source: str) -> Arch:
    """NemotronHForCausalLM: every layer is one RMSNorm and one mixer - a Mamba-2 mixer (M), attention without bias
    or rotary embedding (*), or a ReLU^2 MLP of up_proj and down_proj (-)."""
    types = _nemotron_h_layers(cfg, source)
    h, V = _int(cfg, source, "hidden_size"), _int(cfg, source, "vocab_size")
    a = _int(cfg, source, "num_attention_heads")
    g = _int(cfg, source, "num_key_value_heads", default=a)
    _kv_heads(cfg, source, a, g)
    d = _int(cfg, source, "head_dim", default=128)            # NemotronHConfig.head_dim = 128
    f = _int(cfg, source, "intermediate_size", default=21504)
    heads, head_dim = _int(cfg, source, "mamba_num_heads", default=128), _int(cfg, source, "mamba_head_dim", default=64)
    bias = bool(cfg.get("use_bias", False))
    # NemotronHConfig.__post_init__: the mamba_* spellings of older configs win over n_groups, conv_kernel, ...
    ssm, lin, other = _mamba2_mixer(cfg, source, h, heads * head_dim, heads, head_dim,
                                    _int(cfg, source, "mamba_n_groups", "n_groups", default=8),
                                    _int(cfg, source, "ssm_state_size", default=128),
                                    _int(cfg, source, "mamba_d_conv", "conv_kernel", default=4), bias,
                                    bool(cfg.get("mamba_conv_bias", cfg.get("use_conv_bias", True))), NEMOTRON_H_KEYS)
    # NemotronHRMSNorm returns (weight.to(float32) * normalized).to(input_dtype): it keeps the fp32 normalized input
    mam = Block("mamba", lin, other + h, h, 0, 0, 0, heads * head_dim, False, "rms_fp32", ssm=ssm)
    att = Block("attention", _attention_linears(h, a, g, d, False), h, h, a, g, d, 0, False, "rms_fp32",
                dropout=_rate(cfg, source, "attention_dropout") > 0)
    mlp_bias = bool(cfg.get("mlp_bias", False))
    mlp = Block("mlp", (Linear("up_proj", h, f, mlp_bias), Linear("down_proj", f, h, mlp_bias)), h, h, 0, 0, 0, f,
                False, "rms_fp32")
    mix = {kind: (block, types.count(kind)) for kind, block in (("mamba", mam), ("attention", att), ("mlp", mlp))}
    return _hybrid_arch(cfg, name, source, "nemotron_h", mix, h, V)


def _granite_hybrid(cfg: dict[str, Any], name: str, source: str) -> Arch:
    """GraniteMoeHybridForCausalLM without experts (num_local_experts 0, the dense Granite 4.0 H models): every layer
    is input_layernorm, a mixer (GraniteMoeHybridMambaLayer - Mamba-2 - or attention, by layer_types), then
    post_attention_layernorm and the shared MLP (input_linear to 2 x shared_intermediate_size, SiLU gate,
    output_linear). The muP multipliers scale activations in place of new tensors."""
    experts = _int(cfg, source, "num_local_experts", default=8)      # GraniteMoeHybridConfig.num_local_experts = 8
    if experts:
        raise InputError(source, "num_local_experts", f"is {experts}: GraniteMoeHybrid's mixture-of-experts MLPs are "
                                                      "not modelled yet; expected 0 (a dense Granite 4.0 H model)")
    h, f = _int(cfg, source, "hidden_size"), _int(cfg, source, "shared_intermediate_size", default=1024)
    a, L, V = _int(cfg, source, "num_attention_heads"), _int(cfg, source, "num_hidden_layers"), _int(cfg, source, "vocab_size")
    g = _int(cfg, source, "num_key_value_heads", default=a)
    _kv_heads(cfg, source, a, g)
    d = _int(cfg, source, "head_dim") if cfg.get("head_dim") is not None else _head_dim(cfg, source, h, a)
    key = "layer_types" if cfg.get("layer_types") is not None else "layers_block_type"
    types = cfg.get(key)
    if types is None:                              # GraniteMoeHybridConfig: all linear_attention when not given
        types = []
    elif (not isinstance(types, list) or len(types) != L
            or not all(t in ("mamba", "linear_attention", "attention", "full_attention") for t in types)):
        raise InputError(source, key, f"is {types!r}"[:60] + f"; expected {L} of mamba (linear_attention), "
                                      "attention (full_attention)")
    attn = sum(1 for t in types if t in ("attention", "full_attention"))
    expand = _int(cfg, source, "mamba_expand", default=2)
    heads = _int(cfg, source, "mamba_n_heads", default=128)
    head_dim = (expand * h // heads if cfg.get("mamba_d_head", "auto") == "auto"
                else _int(cfg, source, "mamba_d_head"))
    # input_linear's output holds gate and up (chunked views): the same bytes as a gate_proj + up_proj pair
    mlp = (Linear("input_linear", h, 2 * f), Linear("output_linear", f, h))
    att = Block("attention_mlp", _attention_linears(h, a, g, d, bool(cfg.get("attention_bias", False))) + mlp, 2 * h,
                h, a, g, d, f, True, "rms", dropout=_rate(cfg, source, "attention_dropout") > 0)
    ssm, lin, other = _mamba2_mixer(cfg, source, h, expand * h, heads, head_dim,
                                    _int(cfg, source, "mamba_n_groups", default=1),
                                    _int(cfg, source, "mamba_d_state", default=256),
                                    _int(cfg, source, "mamba_d_conv", default=4),
                                    bool(cfg.get("mamba_proj_bias", False)), bool(cfg.get("mamba_conv_bias", True)))
    mam = Block("mamba_mlp", lin + mlp, other + 2 * h, h, 0, 0, 0, f, True, "rms", ssm=ssm)
    return _hybrid_arch(cfg, name, source, "granitemoehybrid", {"attention": (att, attn), "mamba": (mam, L - attn)},
                        h, V)
