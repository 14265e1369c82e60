"""The model build of torchtune 0.1's QLoRA recipes on torchao 0.1, replayed through the caching-allocator model.

torchtune 0.1.x builds the model on the GPU in bf16 (recipes/lora_finetune_single_device.py `_setup_model`: "with
utils.set_default_dtype(self._dtype), self._device"). lora_llama2 builds one template decoder layer, the token
embedding, the output projection and the final norm; TransformerDecoder deep-copies the template once per layer
(modules/transformer.py `_get_clones`: copy.deepcopy), and the template is dropped when the builder returns; then
load_state_dict copies every checkpoint tensor in. Each LoRA linear quantizes its weight with torchao's to_nf4 when
built, again when deep-copied (torchtune's NF4 clone override) and again when loaded (its copy_ override). Before
torchao 0.2.0 each quantization makes an n x 16 temporary (quantize_tensor_nearest), about 70 bytes per element at
its peak: the build's peak allocated is the quantized model plus one weight's transient, and the segments those
transients leave, fragmented by the NF4 blocks placed in them, stay reserved for the whole run.

The per-linear steps are traced from the real code (doctor/data/nf4_init.yaml, scripts/refresh/nf4_init.py); the
rest of the build (norms, embeddings, RoPE caches, plain linears) is allocated here in torchtune's order.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .. import refdata
from .allocator import CachingAllocator
from .arch import Arch, Linear

BF16 = 2
# doctor's (Hugging Face) linear names in the order torchtune 0.1 builds them: lora_llama2_self_attention's q_proj,
# k_proj, v_proj, output_proj (o_proj), then the RoPE module; lora_llama2_mlp's w1 (gate), w2 (down), w3 (up)
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "down_proj", "up_proj")
# torchtune 0.1.1's builders fix the RoPE cache length (models/*/_model_builders.py "max_seq_len="): every llama2
# and llama3 builder 4096, mistral_7b 32768
POSITIONS = {"llama": 4096, "mistral": 32768}
BLOCK = 64 * 256     # torchao's NF4: 64-element blocks, scalers double-quantized in blocks of 256 (from_tensor asserts)
_SIZE = re.compile(r"^(\d*)n(?:/(\d+))?$")


@dataclass(frozen=True)
class Build:
    """What the replayed build leaves: peaks of allocated and reserved bytes, and the bytes still allocated."""

    peak_allocated: int
    peak_reserved: int
    resident: int
    segments: int


@lru_cache(maxsize=1)
def data() -> dict[str, Any]:
    return refdata.load("nf4_init")


def nf4_bytes(lin: Linear) -> int:
    """Bytes an NF4Tensor keeps for `lin`'s weight: the storages the traced build step keeps (packed codes n/2, int8
    scalers n/64, and quantization_factor's n/32: "quantization_factor[:, 0]" is a view that keeps the whole
    materialized tensor, in every torchao release from 0.1 on)."""
    events, keeps = _compiled("build", lin, 0)
    sizes = {key: size for op, key, size in events if op == "a"}
    return sum(sizes[k] for k, name in keeps.items() if name not in ("lora_a", "lora_b"))


def replays(torchao_version: str | None) -> bool | None:
    """True when torchao quantizes each weight whole (releases before the chunked one), False from it on (its
    release candidates included), None when the version is unknown or a development build of that release (nightlies
    before and after the change share its number)."""
    from packaging.version import Version

    if torchao_version is None:
        return None
    v, since = Version(torchao_version), Version(str(data()["chunked_since"]))
    base = Version(v.base_version)          # 0.2 == 0.2.0; a release candidate of 0.2.0 counts as 0.2.0
    if v.is_devrelease and base == since:
        return None
    return base < since


def supported(arch: Arch, targets: frozenset[str] = frozenset()) -> str | None:
    """Why the build cannot be replayed for `arch` with LoRA on `targets` (None when it can)."""
    block = arch.block
    if arch.family not in POSITIONS or arch.mix or block.kind != "decoder" or not block.gated or arch.head is None:
        return (f"torchtune 0.1's lora_llama2 / lora_llama3 / lora_mistral build is replayed for Llama / Mistral "
                f"decoders with an untied output; {arch.name} is {arch.family}")
    if any(lin.bias for lin in block.linears):
        return "torchtune 0.1's Llama / Mistral linears have no bias"
    return nf4_shapes(arch, targets)


def nf4_shapes(arch: Arch, targets: frozenset[str]) -> str | None:
    """Why torchao cannot quantize the targeted linears of `arch` (NF4Tensor.from_tensor asserts), or None."""
    odd = sorted({lin.name for b, _ in arch.kinds for lin in b.linears
                  if lin.name in targets and (lin.fan_in * lin.fan_out) % BLOCK})
    if odd:
        return (f"torchao's NF4 needs weights of a multiple of {BLOCK} elements (64-element blocks, scalers "
                f"double-quantized in blocks of 256); {', '.join(odd)} of {arch.name} is not")
    return None


def rope_bytes(arch: Arch) -> int | None:
    """The fp32 buffers each torchtune layer's RotaryPositionalEmbeddings keeps (theta and the cos/sin cache), for
    all layers; None for a family without a torchtune 0.1 builder."""
    positions = POSITIONS.get(arch.family)
    if positions is None:
        return None
    return arch.layers * sum(_rope_buffers(arch.block.head_dim, positions))


def _rope_buffers(head_dim: int, positions: int) -> tuple[int, int]:
    """Bytes of RotaryPositionalEmbeddings' theta (head_dim / 2, fp32) and cos/sin cache (positions x head_dim / 2
    x 2, fp32)."""
    half = head_dim // 2
    return half * 4, positions * half * 2 * 4


def dequant_peak(lin: Linear) -> int:
    """The bytes torchao's weight.to(bfloat16) holds at its peak for `lin` (the dense output included): what
    linear_nf4 needs beside the step in forward and backward (the traced `dequantize` step)."""
    events, _ = _compiled("dequantize", lin, 0)
    live = peak = 0
    sizes: dict[Any, int] = {}
    for op, key, size in events:
        if op == "a":
            sizes[key] = size
            live += size
            peak = max(peak, live)
        elif op == "f":
            live -= sizes.pop(key)
    return peak


def _bytes(size: Any, n: int, lin: Linear, rank: int) -> int:
    if isinstance(size, int):
        return size
    if size == "lora_a":
        return rank * lin.fan_in * BF16
    if size == "lora_b":
        return lin.fan_out * rank * BF16
    m = _SIZE.match(str(size))
    if not m:
        raise ValueError(f"nf4_init.yaml: size {size!r}")
    num, den = int(m.group(1) or 1), int(m.group(2) or 1)
    if (num * n) % den:
        raise ValueError(f"nf4_init.yaml: {size} of n={n} is not a whole number of bytes")
    return num * n // den


@lru_cache(maxsize=256)
def _compiled(name: str, lin: Linear, rank: int) -> tuple[tuple[tuple[str, Any, int], ...], dict[Any, str]]:
    """A step's events with their sizes in bytes for `lin` (op, key, bytes; bytes 0 for frees), and its keeps."""
    body = data()["steps"][name]
    n = lin.fan_in * lin.fan_out
    events = tuple((e[0], e[1], _bytes(e[2], n, lin, rank) if e[0] == "a" else 0) for e in body["events"])
    return events, body["keeps"]


class _Replay:
    def __init__(self, rank: int) -> None:
        self.alloc = CachingAllocator()
        self.rank = rank
        self.count = 0

    def new(self, size: int) -> int:
        self.count += 1
        self.alloc.malloc(self.count, size)
        return self.count

    def free(self, *handles: int) -> None:
        for h in handles:
            self.alloc.free(h)

    def step(self, name: str, lin: Linear, old: dict[str, int] | None = None) -> dict[str, int]:
        """One traced per-linear step; returns the module's storages (name -> handle), the old ones replaced."""
        events, keeps = _compiled(name, lin, self.rank)
        ids: dict[Any, int] = {}
        old = dict(old or {})
        for op, key, size in events:
            if op == "a":
                ids[key] = self.new(size)
            elif op == "f":
                self.free(ids.pop(key))
            else:   # "fo": a storage of the module before the step
                self.free(old.pop(key))
        kept = {keeps[k]: ids.pop(k) for k in list(ids) if k in keeps}
        if ids:
            raise ValueError(f"nf4_init.yaml {name}: allocations {sorted(ids)} neither freed nor kept")
        return {**old, **kept}

    def linear(self, lin: Linear, lora: bool, step: str, old: dict[str, int] | None = None) -> dict[str, int]:
        if lora:
            return self.step(step, lin, old)
        if step.startswith("load"):   # copy_ into a bf16 weight: the host-to-device copy writes in place
            return dict(old or {})
        return {"weight": self.new(lin.params * BF16)}

    def rope(self, head_dim: int, positions: int, build: bool) -> list[int]:
        """torchtune's RotaryPositionalEmbeddings buffers (fp32 theta and cache); `build` runs _rope_init's
        expression by expression (modules/position_embeddings.py: theta = 1.0 / (base ** (torch.arange(0, dim, 2)[:
        dim // 2].float() / dim)), then build_rope_cache's seq_idx, einsum, cos, sin and stack)."""
        half = head_dim // 2
        if not build:   # deepcopy: the two buffers
            return [self.new(size) for size in _rope_buffers(head_dim, positions)]
        prev = self.new(half * 8)                       # arange: int64
        for _ in range(4):                              # .float(), / dim, base **, 1.0 /: each frees its operand
            cur = self.new(half * 4)
            self.free(prev)
            prev = cur
        theta = prev
        seq = self.new(positions * 4)
        idx = self.new(positions * half * 4)
        cos, sin = self.new(positions * half * 4), self.new(positions * half * 4)
        cache = self.new(_rope_buffers(head_dim, positions)[1])
        self.free(cos, sin, idx, seq)
        return [theta, cache]


def replay(arch: Arch, targets: frozenset[str], rank: int, checkpoint_dtype: str) -> Build:
    """The build's allocation sequence for `arch`, LoRA (and NF4) on `targets`, loaded from a `checkpoint_dtype`
    (fp16 or bf16) state dict."""
    why = supported(arch, targets)
    if why:
        raise ValueError(why)
    block = arch.block
    shape = _Shape(arch.layers, block.hidden, block.head_dim, POSITIONS[arch.family], arch.vocab,
                   tuple(block.linear(name) for name in ATTN + MLP))
    return _replay(shape, frozenset(targets & {*ATTN, *MLP, "lm_head"}), rank, checkpoint_dtype)


@dataclass(frozen=True)
class _Shape:
    layers: int
    hidden: int
    head_dim: int
    positions: int
    vocab: int
    linears: tuple[Linear, ...]     # ATTN + MLP, in that order


@lru_cache(maxsize=32)
def _replay(shape: _Shape, targets: frozenset[str], rank: int, checkpoint_dtype: str) -> Build:
    r = _Replay(rank)
    hidden = shape.hidden
    lins = {lin.name: lin for lin in shape.linears}
    lora = {name: name in targets for name in lins}

    def layer(step: str) -> dict[str, Any]:
        """One decoder layer: built in lora_llama2's order, deep-copied in TransformerDecoderLayer's attribute order
        (sa_norm, attn, mlp_norm, mlp)."""
        out: dict[str, Any] = {}
        if step == "clone":
            out["sa_norm"] = r.new(hidden * BF16)
        for name in ATTN:
            out[name] = r.linear(lins[name], lora[name], step)
        out["rope"] = r.rope(shape.head_dim, shape.positions, build=step == "build")
        if step == "clone":
            out["mlp_norm"] = r.new(hidden * BF16)
        for name in MLP:
            out[name] = r.linear(lins[name], lora[name], step)
        if step == "build":
            out["sa_norm"], out["mlp_norm"] = r.new(hidden * BF16), r.new(hidden * BF16)
        return out

    template = layer("build")
    r.new(shape.vocab * hidden * BF16)                      # tok_embeddings
    r.new(shape.vocab * hidden * BF16)                      # output: a bf16 linear (LoRA on it is not NF4)
    if "lm_head" in targets:
        r.new(rank * hidden * BF16), r.new(shape.vocab * rank * BF16)
    r.new(hidden * BF16)                                    # final norm
    copies = [layer("clone") for _ in range(shape.layers)]
    for item in template.values():                          # the builder returns: the template is dropped
        r.free(*(item.values() if isinstance(item, dict) else item if isinstance(item, list) else [item]))
    load = f"load_{checkpoint_dtype}"
    for copy in copies:
        for name in ATTN + MLP:
            copy[name] = r.linear(lins[name], lora[name], load, copy[name])
    a = r.alloc
    return Build(a.peak_allocated, a.peak_reserved, a.allocated, a.segments)
