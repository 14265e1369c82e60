"""`doctor estimate --simulate`: the fake-tensor step's peak against a real CPU run of the same tiny model, measured
independently (the PyTorch profiler's allocator events, not MemTracker); the refusal and timeout paths; bad input.

Subprocesses that import torch: four (training, inference, custom-code refusal, a headless config with auto_map);
the others run a tiny script or build on the meta device in this process."""
from __future__ import annotations

import importlib.util
import json
import sys
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from doctor.cli import main
from doctor.vram.arch import from_config
from doctor.vram.estimator import Workload, estimate
from doctor.vram.simulate import (
    SCRIPT,
    report_alone,
    request,
    run_child,
    simulate,
    simulate_unmodelled,
    unsupported,
)

OPT = {"model_type": "opt", "architectures": ["OPTForCausalLM"], "hidden_size": 64, "ffn_dim": 128,
       "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 1000, "max_position_embeddings": 256,
       "word_embed_proj_dim": 64, "dropout": 0.1, "tie_word_embeddings": True}
LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000,
         "max_position_embeddings": 256, "tie_word_embeddings": False}
# The fake step sees each aten op's outputs; the real CPU run also allocates inside kernels (the CPU SDPA kernel's
# per-thread scratch, BLAS packing), which no op outputs. Measured on this machine (torch 2.13 CPU, transformers
# 5.24): training +0.04% (11,368,088 vs 11,364,008 B), generation 0 B apart (1,411,136 B). 2% leaves room for
# thread-count-dependent scratch; a tensor class the simulation missed (one layer's activations, the gradients,
# an Adam moment) is over 5% of these peaks, so it still fails.
TOLERANCE = 0.02


def _measured_peak(step) -> int:
    """Peak live CPU bytes of step() above what was live before it: the profiler's allocation events in order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def _real_model(config: dict):
    import torch
    import transformers

    cfg = dict(config)
    conf = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(0)
    model = getattr(transformers, config["architectures"][0])._from_config(conf, dtype=torch.float32,
                                                                          attn_implementation="sdpa")
    held = sum(t.untyped_storage().nbytes() for t in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values())
    return torch, model, held


TRAIN = Workload(method="full", dtype="fp32", batch=4, seq=128, optimizer="adamw", attention="sdpa")
GENERATE = Workload(method="inference", dtype="fp32", batch=2, seq=96, context=100, attention="sdpa")
CUSTOM = {"model_type": "doctor_custom_lm", "architectures": ["CustomLM"], "hidden_size": 64, "num_hidden_layers": 2,
          "auto_map": {"AutoModelForCausalLM": "modeling_custom.CustomLM"}}
# a base-model class (no LM head) and custom code for a model type transformers has built in
HEADLESS = {**LLAMA, "architectures": ["LlamaModel"], "auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}}


def _start(config: dict, wl: Workload, pool: ThreadPoolExecutor) -> Future:
    arch = from_config(config, name="tiny", source="test")
    est = estimate(arch, wl)
    return pool.submit(lambda: (simulate(config, arch, wl, est, timeout_s=120), est))


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """The four torch children, started together: they import torch side by side (and beside this process's
    real runs) instead of one after another. The third is `--simulate` on an architecture doctor has no formula
    for, whose config names custom code; the fourth a Llama config naming its headless base class and custom code."""
    custom = tmp_path_factory.mktemp("custom") / "config.json"
    custom.write_text(json.dumps(CUSTOM), encoding="utf-8")
    pool = ThreadPoolExecutor(4)
    started = {"train": _start(OPT, TRAIN, pool), "generate": _start(LLAMA, GENERATE, pool),
               "custom": pool.submit(simulate_unmodelled, str(custom), True,
                                     lambda: Workload(method="inference", dtype="fp32", batch=1, seq=8), 120),
               "headless": _start(HEADLESS, Workload(method="full", dtype="fp32", batch=1, seq=8), pool)}
    yield started
    pool.shutdown(wait=True)


def _done(future: Future, ok: bool = True):
    sim, est = future.result(timeout=150)
    assert sim.ok is ok, sim.reason
    return sim, est


def test_training_step_peak_matches_a_real_cpu_run(children):
    wl = TRAIN
    torch, model, held = _real_model(OPT)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=True)
    ids = torch.randint(0, OPT["vocab_size"], (wl.batch, wl.seq))

    def two_steps():
        for _ in range(2):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            del loss
            opt.step()
            opt.zero_grad(set_to_none=True)

    real = held + _measured_peak(two_steps)
    sim, est = _done(children["train"])
    assert abs(sim.peak_bytes - real) <= TOLERANCE * real, (sim.peak_bytes, real)
    d = sim.to_dict()
    assert sim.by_category["params"] == held and sim.by_category["optimizer_states"] >= 2 * held
    assert d["overheads"]["cuda_context"]["bytes"] == est.breakdown["cuda_context"]
    assert d["total_bytes"] == sim.peak_bytes + est.breakdown["cuda_context"] + est.breakdown["cublas_workspace"]
    assert d["analytic"]["tensor_bytes"] == est.peak_bytes - sum(
        est.breakdown[k] for k in ("cuda_context", "cublas_workspace", "allocator_rounding"))


def test_generation_peak_matches_a_real_cpu_run(children):
    wl = GENERATE
    assert request(LLAMA, from_config(LLAMA, name="t", source="t"), wl)["decode_steps"] == 4   # context - seq
    torch, model, held = _real_model(LLAMA)
    model.eval()
    ids = torch.randint(0, LLAMA["vocab_size"], (wl.batch, wl.seq))

    def generate():
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            for pos in range(wl.seq, wl.context):
                nxt = out.logits[:, -1:].argmax(-1)
                out = model(input_ids=nxt, cache=out.cache, use_cache=True, logits_to_keep=1,
                            position_ids=torch.full((wl.batch, 1), pos))

    real = held + _measured_peak(generate)
    sim, _ = _done(children["generate"])
    assert abs(sim.peak_bytes - real) <= TOLERANCE * real, (sim.peak_bytes, real)
    assert sim.by_category["grads"] == 0 and sim.phase in ("prefill", "decode")


def test_custom_code_is_refused_in_one_line(children, capsys):
    """An architecture doctor has no formula for runs the simulation alone; custom code is refused, in one line."""
    sim, source, why, wl = children["custom"].result(timeout=150)
    assert "model_type" in why and source.endswith("config.json")
    assert not sim.ok and sim.reason.startswith("not simulated: ") and "trust_remote_code" in sim.reason
    assert report_alone("custom", source, why, wl, sim, as_json=False) == 2
    out = capsys.readouterr().out
    assert "no analytic estimate" in out and "simulation: not simulated: the config names custom code" in out
    assert report_alone("custom", source, why, wl, sim, as_json=True) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["peak_bytes"] is None and doc["analytic_error"] == why and doc["simulation"]["reason"] == sim.reason


def test_a_headless_config_with_custom_code_trains_the_causal_lm_and_says_so(children):
    """architectures naming the base class (no LM head, which the analytic estimate counts) and auto_map for a model
    type transformers has built in: the training step runs LlamaForCausalLM, and the notes say both."""
    sim, _ = _done(children["headless"])
    d = sim.to_dict()
    assert d["model_class"] == "LlamaForCausalLM" and sim.by_category["grads"] > 0
    notes = " | ".join(d["notes"])
    assert "architectures (LlamaModel)" in notes and "auto_map" in notes and "not the remote code" in notes


def _script():
    spec = importlib.util.spec_from_file_location("doctor_simulate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("config, notes", [
    ({k: v for k, v in LLAMA.items() if k != "architectures"}, []),   # Auto classes have no _from_config
    ({**LLAMA, "architectures": ["LlamaModel"]}, ["architectures (LlamaModel)"]),
    ({**LLAMA, "auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}}, ["auto_map"]),
])
def test_the_model_built_is_the_causal_lm(config, notes):
    """Built on the meta device in this process, as the child builds it: the model type's causal-LM class whatever
    architectures names (or without it), with a note where that is not the class the config names."""
    import torch

    script, said = _script(), []
    req = request(config, None, Workload(method="full", dtype="fp32", batch=1, seq=8, attention="sdpa"))
    model, name = script.build_model(req, torch, said)
    assert name == type(model).__name__ == "LlamaForCausalLM" and model.lm_head.weight.is_meta
    assert len(said) == len(notes) and all(n in s for n, s in zip(notes, said)), said


def test_a_model_type_without_an_lm_head_class_is_refused_naming_architectures():
    script = _script()
    config = {"model_type": "distilbert", "architectures": ["DistilBertModel"], "dim": 64, "hidden_dim": 128,
              "n_layers": 2, "n_heads": 4, "vocab_size": 1000}
    req = request(config, None, Workload(method="inference", dtype="fp32", batch=1, seq=8))
    with pytest.raises(script.Refusal) as refused:
        script.build_model(req, __import__("torch"), [])
    text = str(refused.value)
    assert "architectures (DistilBertModel)" in text and "'distilbert'" in text and "\n" not in text


def test_unmodelled_architecture_checks_the_workload_before_any_child(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CUSTOM), encoding="utf-8")
    assert main(["estimate", "--model", str(path), "--simulate", "--method", "hessian"]) == 2
    assert "not a second-order method" in capsys.readouterr().err


def test_a_hung_child_is_killed_and_reported(tmp_path):
    sleeper = tmp_path / "sleep.py"
    sleeper.write_text("import time\ntime.sleep(60)\n")
    arch = from_config(LLAMA, name="t", source="t")
    wl = Workload(method="inference", dtype="fp32", batch=1, seq=8)
    sim = simulate(LLAMA, arch, wl, estimate(arch, wl), timeout_s=1, script=sleeper)
    assert not sim.ok and sim.timed_out and sim.wall_s < 10
    assert sim.reason == "not simulated: did not finish in 1 s (killed); raise --simulate-timeout"


def test_untraceable_answers_and_crashes_are_one_line_findings(tmp_path):
    untraceable = tmp_path / "untraceable.py"
    untraceable.write_text("import json\nprint(json.dumps({'ok': False, 'stage': 'training step 1', 'error': "
                           "'DataDependentOutputException: aten._local_scalar_dense.default'}))\n")
    arch = from_config(LLAMA, name="t", source="t")
    wl = Workload(method="full", dtype="fp32", batch=1, seq=8)
    sim = simulate(LLAMA, arch, wl, estimate(arch, wl), timeout_s=30, script=untraceable)
    assert sim.reason == ("cannot be traced (training step 1): DataDependentOutputException: "
                          "aten._local_scalar_dense.default")
    crash = tmp_path / "crash.py"
    crash.write_text("import sys\nsys.stderr.write('Traceback...\\nSegmentation fault\\n')\nsys.exit(139)\n")
    answer, _ = run_child({}, 30, script=crash, python=sys.executable)
    assert answer["ok"] is False and answer["error"].endswith("exited with 139 and no answer (Segmentation fault)")


def test_answer_arithmetic_and_a_measured_context(tmp_path):
    """The parent's sums on a child's answer (a script standing in for it): overheads from the estimate, a measured
    CUDA context named as measured, the differences on tensors and in all."""
    child = tmp_path / "answer.py"
    child.write_text("import json\nprint('noise before the answer')\nprint(json.dumps({'ok': True, 'peak_bytes': "
                     "1000000, 'by_category': {'params': 600000, 'activations': 400000}, 'peak_phase': 'backward', "
                     "'model_class': 'LlamaForCausalLM', 'notes': []}))\n")
    arch = from_config(LLAMA, name="t", source="t")
    wl = Workload(method="full", dtype="fp32", batch=1, seq=8, cuda_context_mib=300)
    est = estimate(arch, wl)
    d = simulate(LLAMA, arch, wl, est, timeout_s=30, script=child).to_dict()
    ctx, ws = est.breakdown["cuda_context"], est.breakdown["cublas_workspace"]
    assert ctx == 300 * 2**20 and d["overheads"]["cuda_context"]["source"].startswith("measured")
    assert d["overheads"]["cublas_workspace"]["source"].startswith("doctor/data/vram.yaml (reference")
    assert d["total_bytes"] == 1000000 + ctx + ws
    tensors = est.peak_bytes - ctx - ws - est.breakdown["allocator_rounding"]
    assert d["difference"]["tensor_bytes"] == 1000000 - tensors
    assert d["difference"]["total_pct"] == round(100 * (1000000 + ctx + ws - est.peak_bytes) / est.peak_bytes, 2)


@pytest.mark.parametrize("argv, flag", [
    (["--method", "qlora"], "--method"), (["--quant", "nf4", "--method", "inference"], "--quant"),
    (["--method", "hessian"], "--method"), (["--zero", "2", "--world-size", "2"], "--simulate"),
    (["--optimizer", "adamw_8bit"], "--optimizer"), (["--chunked-ce"], "--chunked-ce"),
])
def test_workloads_it_cannot_simulate_exit_2_before_any_child(argv, flag, capsys):
    assert main(["estimate", "--model", "opt-125m", "--simulate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and "--simulate" in err


def test_nanochat_formula_is_not_a_transformers_config(capsys):
    assert main(["estimate", "--model", "nanochat-d20", "--simulate"]) == 2
    assert "not a transformers config" in capsys.readouterr().err


def test_unsupported_names_nothing_for_plain_workloads():
    assert unsupported(Workload()) is None
    assert unsupported(Workload(method="lora", optimizer="adafactor")) is None
    assert unsupported(Workload(method="inference", optimizer="muon")) is None   # no optimizer in inference
    assert "torch.optim's AdamW and SGD and transformers' Adafactor" in unsupported(Workload(optimizer="lion"))[2]


def test_request_round_trips_as_json():
    arch = from_config(LLAMA, name="t", source="t")
    req = request(LLAMA, arch, Workload(method="lora", lora_targets="default"))
    assert json.loads(json.dumps(req))["lora_target_names"] == ["q_proj", "v_proj"]
