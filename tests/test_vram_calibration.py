"""The mechanisms behind issue 18's published-peaks rows (doctor/data/vram_measured.yaml): FSDP's gradients under
no_sync and with frozen parameters in a trainable flat parameter (measured on CPU with real torch FSDP), the KV cache
sized by the query heads (torchtune), the rows' stated library versions, and the bench's modelled / unmodelled split."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import replace
from typing import Any

import pytest

from doctor import refdata
from doctor.vram import distributed as dist
from doctor.vram.bench import main as bench_main
from doctor.vram.bench import rows
from doctor.vram.catalogue import resolve
from doctor.vram.estimator import Workload, estimate

# Two ranks of FSDP on CPU (gloo): two blocks, each one unit holding a frozen 64x64 base and LoRA A (4x64), B (64x4)
FSDP_PROBE = textwrap.dedent('''
    import json, sys, warnings
    import torch, torch.distributed as dist, torch.multiprocessing as mp

    class Block(torch.nn.Module):
        def __init__(s):
            super().__init__()
            s.base = torch.nn.Linear(64, 64, bias=False)
            s.lora_A = torch.nn.Linear(64, 4, bias=False)
            s.lora_B = torch.nn.Linear(4, 64, bias=False)
        def forward(s, x):
            return s.base(x) + s.lora_B(s.lora_A(x))

    def run(rank, port, out):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy
        warnings.simplefilter("ignore")
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
        torch.manual_seed(0)
        m = torch.nn.Sequential(Block(), Block())
        for b in m:
            b.base.weight.requires_grad_(False)
        f = FSDP(m, auto_wrap_policy=ModuleWrapPolicy({Block}), use_orig_params=True, device_id=torch.device("cpu"))
        units = [u for u in f.modules() if isinstance(u, FSDP) and u._handle is not None and u is not f]
        x = torch.randn(3, 64)
        with f.no_sync():                      # an accumulating micro-batch (Lightning Fabric's no_backward_sync)
            f(x).sum().backward()
        no_sync = [u._handle.flat_param.grad.numel() for u in units]
        f(x).sum().backward()                  # the synchronizing one: reduce-scatter to shards
        synced = [u._handle.flat_param.grad.numel() for u in units]
        if rank == 0:
            json.dump({"no_sync": no_sync, "synced": synced}, open(out, "w"))
        dist.destroy_process_group()

    if __name__ == "__main__":
        mp.spawn(run, args=(int(sys.argv[1]), sys.argv[2]), nprocs=2)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY_LLAMA = {"hidden_size": 64, "intermediate_size": 176, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 16, "num_hidden_layers": 2, "vocab_size": 128}


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """The two CPU probes (torch FSDP on 2 gloo ranks; PEFT's LoRA dropout), started together to halve the wall
    time; each entry is a callable giving that probe's JSON (or skipping when its library is missing)."""
    tmp = tmp_path_factory.mktemp("probes")
    (tmp / "fsdp_probe.py").write_text(FSDP_PROBE)
    (tmp / "lora_dropout_probe.py").write_text(PEFT_DROPOUT_PROBE)
    fsdp = subprocess.Popen([sys.executable, str(tmp / "fsdp_probe.py"), str(_free_port()), str(tmp / "fsdp.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peft = subprocess.Popen([sys.executable, str(tmp / "lora_dropout_probe.py"), json.dumps(TINY_LLAMA)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(proc: subprocess.Popen, out: Any = None) -> dict:
        stdout, stderr = proc.communicate(timeout=300)
        if "ModuleNotFoundError" in stderr:
            pytest.skip(stderr.strip().splitlines()[-1])
        assert proc.returncode == 0, stderr[-2000:]
        return json.loads(out.read_text() if out else stdout.strip().splitlines()[-1])

    yield {"fsdp": lambda: result(fsdp, tmp / "fsdp.json"), "peft": lambda: result(peft)}
    for proc in (fsdp, peft):
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_fsdp_gradients_under_no_sync_and_frozen_params_match_torch_on_cpu(probes):
    """Real FSDP (2 ranks, gloo, CPU): a unit mixing a frozen base with LoRA keeps a gradient over ALL its parameters
    (4608, not the 512 trainable), unsharded under no_sync and halved after the sync - what distributed._fsdp
    counts with fsdp_frozen_grads / fsdp_no_sync."""
    measured = probes["fsdp"]()
    base, lora = 2 * 64 * 64, 2 * (4 * 64 + 64 * 4)
    assert measured == {"no_sync": [4608, 4608], "synced": [2304, 2304]}
    counts = dist.Counts(base, lora, 64 * 64, 64 * 64 + 512, 64 * 64)
    prec = dist.Precision(weights=4 * (base + lora), param_bytes=4, state_bytes=8 * lora, master_bytes=0,
                          compute_bytes=4, grad_accum=2)
    fsdp = dist.Sharding(engine="fsdp", fsdp="full", world_size=2, no_sync=True, frozen_grads=True)
    assert dist.memory(counts, prec, fsdp).gpu["grads"].bytes == 4 * sum(measured["no_sync"])
    synced = dist.memory(counts, prec, replace(fsdp, no_sync=False)).gpu["grads_shard"].bytes
    assert synced == 4 * sum(measured["synced"])
    # CPUOffload: the accumulated gradients stay on the GPU inside no_sync (its docstring), the synced shard is on the CPU
    offloaded = dist.memory(counts, prec, replace(fsdp, offload_params="cpu"))
    assert offloaded.gpu["grads"].bytes == 4 * sum(measured["no_sync"]) and "grads_shard" in offloaded.cpu
    # the default (adapters wrapped apart from the frozen base, synced every micro-batch): trainable shards only
    assert dist.memory(counts, prec, replace(fsdp, no_sync=False, frozen_grads=False)).gpu["grads_shard"].bytes \
        == 4 * lora / 2


def test_fsdp_gradient_knobs_in_the_estimate():
    arch = resolve("llama-2-7b")
    wl = Workload(method="lora", dtype="bf16", adapter_dtype="bf16", batch=1, seq=1024, grad_accum=8,
                  lora_targets="q_proj,v_proj", checkpointing=True, fsdp="full", world_size=2)
    plain = estimate(arch, wl)
    both = estimate(arch, replace(wl, fsdp_no_sync=True, fsdp_frozen_grads=True))
    trainable = plain.trainable
    assert plain.breakdown["grads_shard"] == round(2 * trainable / 2)
    assert both.breakdown["grads"] == 2 * (arch.params + trainable)          # bf16, whole, frozen ones too
    assert "grads_shard" not in both.breakdown
    assert any("no_sync" in n for n in both.notes) and any("use_orig_params" in n for n in both.notes)
    # no accumulation: every micro-batch syncs, the gradient stays sharded
    one = estimate(arch, replace(wl, grad_accum=1, fsdp_no_sync=True, fsdp_frozen_grads=True))
    assert one.breakdown["grads_shard"] == arch.params + trainable
    # full fine-tuning has no frozen parameters: fsdp_frozen_grads changes nothing
    full = replace(wl, method="full", fsdp_no_sync=False)
    assert estimate(arch, replace(full, fsdp_frozen_grads=True)).peak_bytes == estimate(arch, full).peak_bytes


def test_kv_cache_sized_by_query_heads():
    arch = resolve("llama-3-8b")            # 32 query heads, 8 key/value heads
    wl = Workload(method="inference", dtype="bf16", seq=10, context=4096)
    gqa, query = estimate(arch, wl), estimate(arch, replace(wl, kv_cache_heads="query"))
    assert gqa.breakdown["kv_cache"] == 2 * 32 * 8 * 128 * 4096 * 2
    assert query.breakdown["kv_cache"] == 4 * gqa.breakdown["kv_cache"]


@pytest.mark.parametrize("argv, flag", [
    (["--method", "full", "--kv-cache-heads", "query"], "--kv-cache-heads"),
    (["--method", "inference", "--kv-cache-heads", "all"], "--kv-cache-heads"),
])
def test_kv_cache_heads_bad_input_is_one_line_exit_2(argv, flag):
    r = subprocess.run([sys.executable, "-m", "doctor", "estimate", "--model", "llama-3-8b", "--offline", *argv],
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and flag in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3


def test_rows_carry_the_library_versions_their_sources_state():
    data = refdata.load("vram_measured")
    assert "Bitsandbytes 0.41.1" in data["sources"]["litgpt_2023"]
    for name in ("lg", "lg_gen", "lg_fsdp"):
        assert data["models"][name]["bitsandbytes_version"] == "0.41.1"
    assert "bitsandbytes>=0.43.3" in data["sources"]["peft_70b"]
    assert data["models"]["peft70"]["bitsandbytes_version"] == "0.43.3"
    for row in data["rows"]:
        if row["source"] == "peft_metamathqa":
            assert f"transformers {row['workload']['transformers_version']} " in row["stack"]


def test_bnb_version_moves_the_litgpt_qlora_rows():
    """bitsandbytes 0.41.1 keeps each 4-bit linear's input (fixed in 0.43.2): the LitGPT QLoRA rows rise with it."""
    got = {r.id: r for r in rows()}
    data = refdata.load("vram_measured")
    row = next(r for r in data["rows"] if r["id"] == "lg-llama2-7b-qlora-nf4-mb1")
    fields = {**data["models"]["lg"], **row["workload"]}
    arch = resolve(fields.pop("model"))
    new = estimate(arch, Workload(**{**fields, "bitsandbytes_version": "0.43.2"}))
    assert got["lg-llama2-7b-qlora-nf4-mb1"].estimated_bytes > new.peak_bytes - new.breakdown["cuda_context"]


def test_bench_reports_unmodelled_rows_and_the_modelled_subset(capsys, monkeypatch):
    """Every row of the table is modelled now; a row marked `modelled: false` (with its reason) stays in the whole
    table and the modelled subset is reported beside it."""
    from doctor.vram import bench

    assert all(r.modelled and not r.unmodelled for r in rows())
    data = refdata.load("vram_measured")
    marked = [{**data["rows"][0], "modelled": False, "unmodelled": "a reason"}, *data["rows"][1:]]
    real = refdata.load
    monkeypatch.setattr(bench.refdata, "load",
                        lambda name: {**data, "rows": marked} if name == "vram_measured" else real(name))
    results = bench.rows()
    assert [r.id for r in results if not r.modelled] == [data["rows"][0]["id"]]
    code = bench.main()
    out = capsys.readouterr().out
    assert code == 1                                    # the target is still missed over the whole table
    assert f"{data['rows'][0]['id']}: a reason" in out
    assert "modelled subset:" in out and f"over {len(results) - 1} rows" in out and "whole table:" in out


def test_bench_refuses_an_unmodelled_row_without_a_reason(monkeypatch):
    from doctor.vram import bench

    data = refdata.load("vram_measured")
    broken = {**data, "rows": [{**data["rows"][0], "modelled": False}]}
    monkeypatch.setattr(bench.refdata, "load", lambda name: broken)
    with pytest.raises(ValueError, match="unmodelled"):
        bench.rows()


# PEFT LoRA with and without lora_dropout on a tiny bf16 Llama (fp32 adapters, PEFT's default): saved bytes per token
# of the second decoder layer
PEFT_DROPOUT_PROBE = textwrap.dedent('''
    import json, sys, torch, transformers
    from peft import LoraConfig, get_peft_model

    def measure(drop):
        torch.manual_seed(0)
        cfg = transformers.AutoConfig.for_model("llama", **json.loads(sys.argv[1]))
        cfg._attn_implementation = "sdpa"
        model = transformers.AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16)
        model.train()
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=drop))
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen, st = {}, {}
        def pack(t):
            s = t.untyped_storage()
            if s.data_ptr() not in params:
                seen.setdefault(s.data_ptr(), s.nbytes())
            return t
        def pre(m, a):
            st["c"] = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
            st["c"].__enter__()
        def post(m, a, o):
            st["c"].__exit__(None, None, None)
        layer = model.base_model.model.model.layers[1]
        layer.register_forward_pre_hook(pre)
        layer.register_forward_hook(post)
        ids = torch.randint(0, cfg.vocab_size, (2, 16))
        model(input_ids=ids, labels=ids).loss.backward()
        return sum(seen.values()) / 32

    print(json.dumps({"off": measure(0.0), "on": measure(0.1)}))
''')


def test_lora_dropout_saved_bytes_match_peft_on_cpu(probes):
    """lora_dropout > 0: each adapter's lora_A saves the dropped copy (in place of the cast input) and the dropout
    its mask. On CPU the mask is a tensor of the input's dtype (fp32 here: the adapters' cast), on CUDA a 1-byte one
    (the fused kernel), so the CPU measurement is doctor's figure plus 3 bytes per masked element."""
    measured = probes["peft"]()
    cfg = TINY_LLAMA
    from doctor.vram import activations as act
    from doctor.vram.arch import from_config

    block = from_config(dict(cfg, model_type="llama")).block
    ctx = act.Ctx(p=2, amp=False, trainable=frozenset(), lora=frozenset({"q_proj", "v_proj"}), lora_rank=4,
                  adapter_bytes=4, attention="sdpa", seq=16, dropout=False, full=False)
    off, on = act.per_token(ctx, block), act.per_token(replace(ctx, lora_dropout=True), block)
    cpu_mask_extra = 2 * 64 * (4 - 1)      # q_proj and v_proj read the 64-wide input; fp32 mask on CPU vs 1 byte
    assert measured["on"] - measured["off"] == on - off + cpu_mask_extra
    assert on - off == 2 * 64              # on CUDA: the two bool masks (the dropped copy replaces the cast one)


# LitGPT's Block at commit 8641822 (lit_gpt/lora.py), LoRA on q and v with dropout; lightning's imports stubbed out.
# Needs a checkout of that commit's lit_gpt package: DOCTOR_LITGPT_SRC=/path/containing/lit_gpt (skipped otherwise).
LITGPT_PROBE = textwrap.dedent('''
    import json, sys, types
    for name in ("lightning", "lightning.fabric", "lightning.fabric.strategies", "lightning.fabric.utilities",
                 "lightning.fabric.utilities.load", "lightning_utilities", "lightning_utilities.core",
                 "lightning_utilities.core.imports"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["lightning"].Fabric = object
    sys.modules["lightning.fabric.strategies"].FSDPStrategy = object
    sys.modules["lightning.fabric.utilities.load"]._lazy_load = None
    class RequirementCache:
        def __init__(self, req, *a):
            self.req = req
        def __bool__(self):
            return self.req.startswith("lightning")
    sys.modules["lightning_utilities.core.imports"].RequirementCache = RequirementCache
    sys.path.insert(0, sys.argv[1])
    import torch
    from lit_gpt.lora import GPT, Config, mark_only_lora_as_trainable
    H, heads, ffn, T = 256, 4, 688, 64
    cfg = Config(name="tiny", block_size=T, vocab_size=512, padded_vocab_size=512, n_layer=1, n_head=heads, n_embd=H,
                 rotary_percentage=1.0, parallel_residual=False, bias=False, _norm_class="RMSNorm", norm_eps=1e-5,
                 _mlp_class="LLaMAMLP", intermediate_size=ffn, r=8, alpha=16, dropout=0.05, to_query=True,
                 to_value=True)
    torch.set_default_dtype(torch.bfloat16)
    model = GPT(cfg)
    model.train()
    mark_only_lora_as_trainable(model)
    torch.set_default_dtype(torch.float32)
    block = model.transformer.h[0]
    if sys.argv[2] == "keep":   # bitsandbytes < 0.43.2 MatMul4Bit: "ctx.tensors = (A, B)"
        class Keep(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, w):
                ctx.save_for_backward(x)
                return torch.nn.functional.linear(x, w)
            @staticmethod
            def backward(ctx, g):
                raise NotImplementedError
        for mod in block.modules():
            if type(mod) is torch.nn.Linear and not mod.weight.requires_grad:
                mod.forward = (lambda m: (lambda x: Keep.apply(x, m.weight)))(mod)
    x = torch.randn(1, T, H, dtype=torch.bfloat16, requires_grad=True)
    skip = {p.untyped_storage().data_ptr() for p in model.parameters()}
    skip |= {model.cos.untyped_storage().data_ptr(), model.sin.untyped_storage().data_ptr()}
    seen = {}
    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip and t.is_floating_point():   # lora_ind (int64): a per-layer constant
            seen.setdefault(s.data_ptr(), s.nbytes())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x, model.cos[:T], model.sin[:T])
    print(json.dumps({"per_token": sum(seen.values()) / T}))
''')


@pytest.mark.skipif(not os.environ.get("DOCTOR_LITGPT_SRC"), reason="needs LitGPT 8641822's lit_gpt (DOCTOR_LITGPT_SRC)")
@pytest.mark.parametrize("keep", ["", "input"])
def test_litgpt_block_saved_bytes_match_litgpt_on_cpu(tmp_path, keep):
    from doctor.vram import activations as act
    from doctor.vram.arch import from_config

    script = tmp_path / "probe.py"
    script.write_text(LITGPT_PROBE)
    out = subprocess.run([sys.executable, str(script), os.environ["DOCTOR_LITGPT_SRC"], "keep" if keep else "-"],
                         check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])["per_token"]
    block = from_config({"model_type": "llama", "hidden_size": 256, "intermediate_size": 688,
                         "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 1,
                         "vocab_size": 512}).block
    ctx = act.Ctx(p=2, amp=False, trainable=frozenset(), lora=frozenset({"q_proj", "v_proj"}), lora_rank=8,
                  adapter_bytes=2, attention="sdpa", seq=64, dropout=False, full=False, lora_dropout=True,
                  frozen_keep=keep)
    cpu_mask_extra = 256 * (2 - 1)         # the dropout mask: bf16 on CPU, 1 byte on CUDA
    assert measured == pytest.approx(act.litgpt_decoder(ctx, block) + cpu_mask_extra, rel=0.005)


def test_litgpt_implementation_refuses_what_it_does_not_follow():
    arch = resolve("llama-2-7b")
    wl = Workload(method="lora", lora_targets="q_proj,v_proj", implementation="litgpt")
    estimate(arch, wl)
    from doctor.errors import InputError

    with pytest.raises(InputError, match="fused qkv"):
        estimate(arch, replace(wl, lora_targets="all-linear"))
    with pytest.raises(InputError, match="LoRA / QLoRA"):
        estimate(arch, replace(wl, method="full"))
    with pytest.raises(InputError, match="multi-head"):
        estimate(resolve("llama-3-8b"), wl)


def test_half_ce_counts_what_litgpt_chunked_cross_entropy_keeps():
    """LitGPT's chunked lm_head + chunked_cross_entropy on bf16 logits (no fp32 upcast): autograd saves
    log_softmax's bf16 output per chunk, and the logits list stays referenced through backward - 2 x 2 bytes per
    logit, which the estimate's half_ce term counts."""
    torch = pytest.importorskip("torch")
    tokens, vocab, hidden = 256, 1000, 64
    x = torch.randn(tokens, hidden, dtype=torch.bfloat16, requires_grad=True)
    head = torch.randn(vocab, hidden, dtype=torch.bfloat16)          # frozen lm_head
    saved: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() != head.untyped_storage().data_ptr() and t.is_floating_point():
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = [torch.nn.functional.linear(c, head) for c in x.split(128)]
        targets = torch.randint(vocab, (tokens,)).split(128)
        loss = torch.cat([torch.nn.functional.cross_entropy(c, t, reduction="none")
                          for c, t in zip(logits, targets)]).mean()
    kept = sum(saved.values()) + sum(c.untyped_storage().nbytes() for c in logits)
    assert kept == pytest.approx(tokens * vocab * 2 * 2, abs=16)    # + nll_loss's scalar total_weight
    loss.backward()
    arch = resolve("llama-2-7b")
    wl = Workload(method="lora", dtype="bf16", batch=1, seq=512, half_ce=True)
    assert estimate(arch, wl).breakdown["logits"] == 512 * arch.head_outputs * 2 * 2


# ---------------------------------------------------------------------------------------------------------------
# how the model is built on the CPU before FSDP / DeepSpeed take it, and HF's "auto" DeepSpeed buckets


def _load(wl: Workload) -> Any:
    from doctor.vram.estimator import distributed_memory

    return distributed_memory(resolve("llama-2-7b"), wl)


def test_fsdp_ram_efficient_loading_builds_one_copy_per_node():
    """accelerate's fsdp_cpu_ram_efficient_loading: local rank 0 loads, the other ranks build on meta (transformers
    is_fsdp_enabled() and not is_local_dist_rank_0()); the default has each rank build its own copy."""
    arch = resolve("llama-2-7b")
    wl = Workload(method="lora", dtype="bf16", fsdp="full", world_size=4, load_dtype="fp32")
    every, once = _load(wl), _load(replace(wl, ram_efficient_loading=True))
    assert every.cpu_load == 4 * 4 * arch.params and once.cpu_load == 4 * arch.params
    assert "meta" in once.load["model_load"].formula and "cpu_ram_efficient_loading" in once.load["model_load"].source
    assert _load(replace(wl, load_dtype="bf16", ram_efficient_loading=True)).cpu_load == 2 * arch.params


def test_load_dtype_default_follows_transformers_version():
    """from_pretrained builds in fp32 before transformers 5 and in the checkpoint's dtype ("auto") from 5.0, which
    doctor does not know: fp32 counted, with a note saying so; the same note where the version is unknown."""
    wl = Workload(method="lora", dtype="bf16", fsdp="full", world_size=2)
    old = _load(replace(wl, transformers_version="4.46.3"))
    new, unknown = _load(replace(wl, transformers_version="5.2.0")), _load(wl)
    assert old.cpu_load == new.cpu_load == unknown.cpu_load == 2 * 4 * resolve("llama-2-7b").params
    assert not any("load dtype" in n for n in old.notes)
    assert any("checkpoint's dtype" in n and "--load-dtype" in n for n in new.notes)
    assert any("version is unknown" in n for n in unknown.notes)


def test_qlora_fsdp_loads_the_packed_4bit_base():
    """transformers quantizes a bitsandbytes 4-bit base on the GPU and keeps it on the CPU under FSDP / ZeRO-3: one
    copy is the packed codes (the absmax statistics stay on the GPU) plus the rest in the load dtype, far under the
    bf16 model."""
    from doctor.vram.estimator import _weights, quant_state_bytes

    arch = resolve("llama-2-7b")
    wl = Workload(method="qlora", dtype="bf16", double_quant=True, fsdp="full", world_size=2, load_dtype="bf16",
                  ram_efficient_loading=True)
    mem = _load(wl)
    nf4 = replace(wl, quant="nf4")
    assert mem.cpu_load == pytest.approx(_weights(arch, nf4, 2)[0] - quant_state_bytes(arch, nf4))
    assert 0.25 * 2 * arch.params < mem.cpu_load < 0.4 * 2 * arch.params
    assert "quantize the parameter on the GPU" in mem.load["model_load"].source


def test_deepspeed_auto_buckets_resolve_from_hidden_size():
    """transformers' trainer_config_finalize / accelerate fill "auto" from hidden_size: reduce_bucket_size h^2,
    ZeRO-3 stage3_prefetch_bucket_size int(0.9 h^2) and stage3_param_persistence_threshold 10 h."""
    knobs, notes = dist.resolve_auto({"reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                                      "stage3_param_persistence_threshold": "auto"}, 8192, 3)
    assert (knobs["reduce_bucket_size"], knobs["stage3_prefetch_bucket_size"],
            knobs["stage3_param_persistence_threshold"]) == (8192**2, int(0.9 * 8192**2), 81920)
    two, _ = dist.resolve_auto({"reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto"}, 4096, 2)
    assert two["reduce_bucket_size"] == 4096**2 and "stage3_prefetch_bucket_size" not in two
    assert len(notes) == 3
    from doctor.vram.workload import deepspeed_fields

    text = json.dumps({"zero_optimization": {"stage": 3, "reduce_bucket_size": "auto",
                                             "stage3_prefetch_bucket_size": "auto"}, "bf16": {"enabled": True}})
    wl = Workload(method="full", world_size=2, **deepspeed_fields(text, "ds.json", {}))
    mem = _load(wl)
    assert mem.gpu["reduce_bucket"].bytes == 4096**2 * 2 and '"auto"' in mem.gpu["reduce_bucket"].formula
    assert mem.gpu["prefetch_bucket"].bytes == int(0.9 * 4096**2) * 2
    default = _load(replace(wl, ds_knobs={}))
    assert default.gpu["reduce_bucket"].bytes == 500_000_000 * 2
    from doctor.vram.estimator import distributed_memory

    blind = distributed_memory(None, wl, params=10**9)
    assert blind.gpu["reduce_bucket"].bytes == 500_000_000 * 2
    assert any('"auto"' in n and "hidden size is unknown" in n for n in blind.notes)


def test_load_profile_keys_and_flags_reach_the_workload(capsys):
    from doctor.cli import main
    from doctor.vram.workload import to_flags, workload_from_job

    _, fields = workload_from_job({"workload": {"model": "llama-2-7b", "fsdp": "full", "world_size": 2,
                                                "ram_efficient_loading": True, "load_dtype": "bf16"}})
    assert fields["ram_efficient_loading"] is True and fields["load_dtype"] == "bf16"
    flags = to_flags("llama-2-7b", fields)
    assert "--ram-efficient-loading" in flags and "--load-dtype bf16" in flags
    assert main(["estimate", "--model", "llama-2-7b", "--method", "lora", "--ram-efficient-loading"]) == 2
    err = capsys.readouterr().err
    assert "--ram-efficient-loading" in err and "--fsdp" in err and err.count("\n") == 1


def test_cpu_what_ifs_offer_ram_efficient_loading_and_the_load_dtype():
    from doctor.vram.whatif import cpu_what_ifs

    arch = resolve("llama-2-7b")
    wl = Workload(method="lora", dtype="bf16", fsdp="full", world_size=8, transformers_version="4.46.3")
    found = {w.flag: w for w in cpu_what_ifs(arch, wl, None, 64e9, 0)}
    base = 8 * 4 * arch.params
    assert found["--ram-efficient-loading"].cpu_bytes < base / 4 and found["--load-dtype bf16"].cpu_bytes < base
    done = replace(wl, ram_efficient_loading=True, load_dtype="bf16")
    assert not {"--ram-efficient-loading", "--load-dtype bf16"} & {w.flag for w in cpu_what_ifs(arch, done, None,
                                                                                                 64e9, 0)}


# ---------------------------------------------------------------------------------------------------------------
# a 4-bit base's quantization statistics under FSDP / ZeRO-3, and torchtune's memory unit


def test_params4bit_rebuilt_as_transformers_does_keeps_its_statistics_beside_the_data():
    """transformers' FSDP / ZeRO-3 load rebuilds each quantized weight as
    type(value)(value.data.to(param_to), **value.__dict__): `.data` holds the packed codes only (0.5 B a parameter in
    the bf16 quant storage) and the absmax statistics ride along by reference in quant_state, so they stay where
    bitsandbytes quantized them (the GPU), whole; the estimate keeps exactly those bytes whole on every rank."""
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    from doctor.vram.arch import Linear
    from doctor.vram.estimator import _quant_bytes, quant_state_bytes

    w = torch.randn(256, 512, dtype=torch.bfloat16)
    p = bnb.nn.Params4bit(w, requires_grad=False, compress_statistics=True, quant_type="nf4",
                          quant_storage=torch.bfloat16)._quantize("cpu")
    rebuilt = type(p)(p.data.to("cpu"), **p.__dict__)
    qs = rebuilt.quant_state
    assert qs is p.quant_state and qs.nested
    stats = qs.absmax.nbytes + qs.state2.absmax.nbytes
    assert rebuilt.data.nbytes == w.numel() // 2
    assert stats == pytest.approx((_quant_bytes("nf4", True, Linear("x", 512, 256)) - 0.5) * w.numel(), abs=1)

    arch = resolve("llama-2-7b")
    base = Workload(method="qlora", dtype="bf16", double_quant=True, quant="nf4", fsdp="full", world_size=2)
    whole = quant_state_bytes(arch, base)
    assert whole == pytest.approx(sum(lin.params * n for b, n in arch.kinds for lin in b.linears) * (1 / 64 + 1 / 4096))
    for wl in (base, replace(base, world_size=4), replace(base, offload_params="cpu"),
               replace(base, fsdp=None, zero=3)):
        assert _load(wl).gpu["quant_state"].bytes == pytest.approx(whole)
    assert "quant_state" not in _load(replace(base, quant="none", method="lora")).gpu


def test_torchtune_lora_rows_are_in_gb_of_1e9():
    """torchtune's LoRA / QLoRA tutorials (2024-04-15) printed memory_stats_log's "/ 1e9" figures (GiB only from
    2024-08-15): their LoRA model init, "GPU peak memory allocation: 13.96 GB", sits just above Llama-2-7B's bf16
    weights in units of 1e9 bytes, while 13.96 GiB would leave 1.5e9 bytes unexplained."""
    data = refdata.load("vram_measured")
    weights = 2 * resolve("llama-2-7b").params
    assert 0 < 13.96e9 - weights < 0.5e9 < 13.96 * 2**30 - weights - 1e9
    tt = [r for r in data["rows"] if r["source"] in ("torchtune_lora", "torchtune_qlora")]
    assert len(tt) == 5 and all(r["unit"] == "GB" for r in tt)
    assert "/ 1e9" in data["sources"]["torchtune_lora"]
