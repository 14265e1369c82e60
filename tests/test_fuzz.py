"""Fuzz doctor with hostile input (issue "Safe with hostile input").

For ANY input doctor must: print no Python traceback, report no "check crashed" and no "internal error",
exit 0, 1, 2 or 3 (3 only with a "could not decide" result), print exactly one line on stderr when it exits 2,
and finish in bounded time (here: 10 s per input) and memory (the isolated runs: RLIMIT_AS 2 GiB).

Four kinds of input, each mutated from doctor's own seeds by a deterministic mutator (hypothesis, derandomized,
no shrinking: every example runs and every violation is collected, then the test asserts there are none):
profiles (and the DeepSpeed configs they name), facts snapshots, model configs, command-line flags; and the
newer surfaces: hybrid Mamba configs, `doctor baseline capture --from-report` (hostile reports, output paths,
tolerances), `doctor check --health --facts`, the --simulate parent (its child replaced by a stand-in that
prints a hostile answer). On exit 2 those also check the line names the file or the flag. The
corpus replays the minimal inputs the fuzzer once found breaking the contract. A few fixed cases run in a
child process with a time and memory limit (aliases, nesting, /dev/zero, FIFOs, long `extends` chains).
Whole file: about a minute on 2 cores (DOCTOR_FUZZ_SCALE=8 multiplies the examples, for a longer local run).
Inputs tried, failures (with the files to reproduce them), max wall time and RSS: /tmp/fuzz (DOCTOR_FUZZ_DIR).
"""
from __future__ import annotations

import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import fuzz_kit as fk
from fuzz_kit import Draw, Recorder


def fuzz_settings(n: int):
    return settings(max_examples=fk.examples(n), derandomize=True, database=None, deadline=None,
                    phases=[Phase.generate], suppress_health_check=list(HealthCheck), print_blob=False)


@pytest.fixture
def sandbox(monkeypatch):
    """No network, no real caches: HOME, HF_HOME and the other cache roots point into the scratch area."""
    home = fk.FUZZ_DIR / "home"
    home.mkdir(parents=True, exist_ok=True)
    for var, value in {"HOME": home, "XDG_CACHE_HOME": home / ".cache", "HF_HOME": home / "hf",
                       "PIP_CACHE_DIR": home / "pip", "TORCH_HOME": home / "torch"}.items():
        monkeypatch.setenv(var, str(value))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "HF_XET_CACHE", "DOCTOR_PROFILE_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(home)
    return home


def _finish(rec: Recorder) -> None:
    problems = rec.finish()
    assert not problems, "contract violations (details and inputs in the JSON report):\n" + problems


# --------------------------------------------------------------------------------------------------------------
# (1) profiles


def test_fuzz_profiles(sandbox):
    rec, scratch = Recorder("profiles"), fk.Scratch("profiles")
    seeds, params = fk.shipped_profiles(), fk._registry_params()
    facts = fk.write_facts_seeds(scratch.root / "facts")

    @fuzz_settings(200)
    @given(st.data())
    def one(data):
        rec.run(fk.profile_case(Draw(data), scratch, seeds, facts, params))

    one()
    _finish(rec)


# --------------------------------------------------------------------------------------------------------------
# (2) facts snapshots


def test_fuzz_facts(sandbox):
    rec, scratch = Recorder("facts"), fk.Scratch("facts")
    seeds = fk.facts_seeds()

    @fuzz_settings(180)
    @given(st.data())
    def one(data):
        rec.run(fk.facts_case(Draw(data), scratch, seeds))

    one()
    _finish(rec)


# --------------------------------------------------------------------------------------------------------------
# (3) model configs


def test_fuzz_model_configs(sandbox):
    rec, scratch = Recorder("models"), fk.Scratch("models")
    seeds = fk.model_seeds()

    @fuzz_settings(220)
    @given(st.data())
    def one(data):
        rec.run(fk.model_case(Draw(data), scratch, seeds))

    one()
    _finish(rec)


# --------------------------------------------------------------------------------------------------------------
# (4) flags


def test_fuzz_estimate_flags(sandbox):
    rec, ctx = Recorder("flags-estimate"), fk.flags_context(fk.FUZZ_DIR / "work" / "flags")

    @fuzz_settings(220)
    @given(st.data())
    def one(data):
        rec.run(fk.estimate_flags_case(Draw(data), ctx))

    one()

    @fuzz_settings(60)
    @given(st.data())
    def new_flags(data):
        rec.run(fk.new_estimate_flags_case(Draw(data), ctx))

    new_flags()
    _finish(rec)


def test_fuzz_other_flags(sandbox):
    rec, ctx = Recorder("flags-other"), fk.flags_context(fk.FUZZ_DIR / "work" / "flags")

    @fuzz_settings(110)
    @given(st.data())
    def one(data):
        rec.run(fk.other_flags_case(Draw(data), ctx))

    one()

    @fuzz_settings(6)
    @given(st.data())
    def validate(data):
        rec.run(fk.validate_flags_case(Draw(data), ctx))

    validate()
    _finish(rec)


# --------------------------------------------------------------------------------------------------------------
# (5) the newer surfaces: hybrid Mamba configs, baseline capture, --health, the --simulate parent


def test_fuzz_hybrid_configs(sandbox):
    rec, scratch = Recorder("hybrid"), fk.Scratch("hybrid")

    @fuzz_settings(120)
    @given(st.data())
    def one(data):
        rec.run(fk.hybrid_case(Draw(data), scratch))

    one()
    _finish(rec)


def test_fuzz_baseline_capture(sandbox):
    rec, scratch = Recorder("baseline"), fk.Scratch("baseline")
    seed = fk.baseline_report(fk.FUZZ_DIR / "work" / "baseline-seed")

    @fuzz_settings(110)
    @given(st.data())
    def one(data):
        o = rec.run(case := fk.baseline_case(Draw(data), scratch, seed))
        if o.rc not in (0, 2):   # its documented exit codes
            rec._keep(rec.failures, f"baseline capture exit {o.rc}", case, o)

    one()
    _finish(rec)


def test_fuzz_health(sandbox):
    rec, scratch = Recorder("health"), fk.Scratch("health")
    seed = fk.baseline_report(fk.FUZZ_DIR / "work" / "baseline-seed")
    seeds = dict(fk.facts_seeds(), a800_bench=json.loads(seed.with_name("gpu01.facts.json").read_text()))
    profiles = fk.health_profiles(fk.FUZZ_DIR / "work" / "health-profiles", seed)

    @fuzz_settings(120)
    @given(st.data())
    def one(data):
        rec.run(fk.health_case(Draw(data), scratch, seeds, profiles))

    one()
    _finish(rec)


def test_fuzz_simulate_parent(sandbox, monkeypatch):
    """--simulate with the torch child replaced by a stand-in printing a hostile answer (tests/test_vram_simulate.py
    runs the real child)."""
    from doctor.vram import simulate

    folder = fk.FUZZ_DIR / "work" / "simulate"
    folder.mkdir(parents=True, exist_ok=True)
    stand_in, answer = folder / "stand_in.py", folder / "answer.txt"
    stand_in.write_text(fk.SIM_STAND_IN)
    (folder / "hybrid.json").write_text(json.dumps(fk.HYBRID_SEEDS["bamba"]))
    (folder / "unmodelled.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "n_embd": 64}))
    monkeypatch.setenv("FUZZ_SIM_ANSWER", str(answer))
    real = simulate.run_child
    monkeypatch.setattr(simulate, "run_child", lambda req, timeout_s, script=None, **kw: real(req, timeout_s, stand_in))
    rec = Recorder("simulate")

    @fuzz_settings(30)
    @given(st.data())
    def one(data):
        d = Draw(data)
        case, text = fk.simulate_case(d, folder)
        answer.write_text(text, encoding="utf-8")
        monkeypatch.setenv("FUZZ_SIM_RC", str(d.pick([0, 0, 0, 1, 139])))
        rec.run(case)

    one()
    _finish(rec)


ARGPARSE_BAD = [
    ["estimate", "--model", "opt-125m", "--batch", "x"],
    ["estimate", "--model", "opt-125m", "--batch", "1" * 5000],
    ["estimate", "--model", "opt-125m", "--method", "nope"],
    ["estimate", "--model"],
    ["check", "--format", "yaml"],
    ["check", "--timeout", "soon"],
    ["clean-cache", "--keep-last", "1.5"],
    ["validate", "--budget", "x"],
    ["explain"],
    ["no-such-command"],
    [],
]


@pytest.mark.parametrize("argv", ARGPARSE_BAD, ids=lambda a: " ".join(a)[:40] or "(none)")
def test_usage_error_is_one_line(sandbox, argv):
    """A flag argparse refuses is bad input too: exit 2 and one line on stderr."""
    o = fk.run_inprocess(argv)
    assert o.rc == 2
    assert not fk.violations(o), fk.violations(o)


# --------------------------------------------------------------------------------------------------------------
# the corpus: minimal inputs the fuzzer once found breaking the contract, replayed in-process on every run

CORPUS = list(fk.corpus())


@pytest.mark.parametrize("name", CORPUS)
def test_known_hostile_input(sandbox, name):
    argv = fk.write_corpus_case(name, fk.FUZZ_DIR / "work" / "corpus" / f"k{CORPUS.index(name)}")
    o = fk.run_inprocess(argv)
    found = fk.violations(o, argv[0])
    assert not found, {"argv": " ".join(argv)[:400], "rc": o.rc, "violations": found, "stderr": o.err[-400:]}


# --------------------------------------------------------------------------------------------------------------
# fixed cases, isolated: a child process with a time limit and RLIMIT_AS 2 GiB


def _fixed(tmp):
    """name -> (argv, what doctor must say on exit 2, or None when any verdict is fine)."""
    tmp.mkdir(parents=True, exist_ok=True)
    facts = fk.write_facts_seeds(tmp / "facts")
    cases = {}

    laughs = tmp / "laughs.yaml"
    laughs.write_text("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")))
    cases["billion laughs profile"] = (["check", "--facts", facts["autodl-a800"], "-p", laughs], "aliases")

    chain = tmp / "alias-chain.yaml"   # 2 aliases per level: 60 aliases, 2**30 values once expanded
    chain.write_text("kind: job\njob:\n  notes: &l0 [x, x]\n" + "".join(
        f"  n{i}: &l{i} [*l{i - 1}, *l{i - 1}]\n" for i in range(1, 31)))
    cases["alias chain profile"] = (["profiles", "show", chain], "")

    deep = tmp / "deep.yaml"
    deep.write_text("description: " + "[" * 50_000 + "\n")
    cases["50k-deep YAML profile"] = (["estimate", "-p", deep], "")

    deep_json = tmp / "deep.json"
    deep_json.write_text("[" * 200_000 + "]" * 200_000)
    cases["200k-deep JSON facts"] = (["check", "--facts", deep_json, "-p", "base"], "")
    cases["200k-deep JSON model config"] = (["estimate", "--offline", "--model", deep_json], "")

    cases["/dev/zero facts (not a file)"] = (["check", "--facts", "/dev/zero", "-p", "base"], "is a device")
    cases["/dev/zero model config (not a file)"] = (["estimate", "--offline", "--model", "/dev/zero"], "is a device")
    big = tmp / "big.yaml"
    big.write_text("kind: job\n# " + "x" * ((1 << 20) + 100) + "\n")
    cases["profile over 1 MiB (size limit)"] = (["estimate", "-p", big], "larger than")
    cases["/dev/urandom profile"] = (["profiles", "show", "/dev/urandom"], "")

    fifo = tmp / "fifo.json"
    if not fifo.exists():
        os.mkfifo(fifo)
    cases["FIFO facts (no writer)"] = (["check", "--facts", fifo, "-p", "base"], "")
    cases["FIFO model config (no writer)"] = (["estimate", "--offline", "--model", fifo], "")

    chain_dir = tmp / "extends-chain"
    shutil.rmtree(chain_dir, ignore_errors=True)
    chain_dir.mkdir()
    (chain_dir / "p0.yaml").write_text("kind: job\n")
    for i in range(1, 1500):
        (chain_dir / f"p{i}.yaml").write_text(f"kind: job\nextends: [{chain_dir}/p{i - 1}.yaml]\n")
    cases["extends chain of 1500 files"] = (["profiles", "show", chain_dir / "p1499.yaml"], None)

    diamond = tmp / "extends-diamond"
    shutil.rmtree(diamond, ignore_errors=True)
    diamond.mkdir()
    (diamond / "d0.yaml").write_text("kind: job\n")
    for i in range(1, 40):
        (diamond / f"d{i}.yaml").write_text(f"kind: job\nextends: [{diamond}/d{i - 1}.yaml, {diamond}/d{i - 1}.yaml]\n")
    cases["extends diamond 2**39"] = (["profiles", "show", diamond / "d39.yaml"], None)

    repeat = tmp / "extends-repeat.yaml"   # 6 bytes per entry: a 1 MiB profile could name base 170,000 times
    repeat.write_text("kind: job\nextends: [" + ", ".join(["base"] * 1500) + "]\n")
    cases["extends: [base] x1500"] = (["profiles", "show", repeat], None)

    quad = tmp / "quadratic.yaml"   # the longest string doctor accepts, in a shape the URL scrubber rescans
    dots = "a." * 49_000
    quad.write_text(f"kind: job\ndescription: {dots}\njob:\n  name: {dots}\n  notes: [{dots}]\n")
    cases["3 strings of 98k dotted characters printed"] = (["profiles", "show", quad], None)

    gpus = fk.facts_seeds()["autodl-a800"]
    dev = gpus["gpu"]["devices"][0]
    gpus["gpu"]["devices"] = [dict(dev, nvml_index=i) for i in range(2500)]
    many = tmp / "2500-gpus.json"
    many.write_text(json.dumps(gpus))
    cases["2500 GPUs in a 1.9 MB snapshot"] = (["check", "--facts", many, "-p", "autodl-a800"], None)
    return cases


FIXED_NAMES = ["billion laughs profile", "alias chain profile", "50k-deep YAML profile", "200k-deep JSON facts",
               "200k-deep JSON model config", "/dev/zero facts (not a file)", "/dev/zero model config (not a file)",
               "profile over 1 MiB (size limit)", "/dev/urandom profile", "FIFO facts (no writer)",
               "FIFO model config (no writer)", "extends chain of 1500 files", "extends diamond 2**39", "extends: [base] x1500",
               "3 strings of 98k dotted characters printed", "2500 GPUs in a 1.9 MB snapshot"]


@pytest.fixture(scope="module")
def fixed_outcomes():
    """Every fixed case run at once, 6 children at a time (a hang costs its 10 s once, not per case in turn)."""
    from concurrent.futures import ThreadPoolExecutor

    report = fk.FUZZ_DIR / "report-isolated.jsonl"
    report.unlink(missing_ok=True)
    cases = _fixed(fk.FUZZ_DIR / "work" / "fixed")
    assert sorted(cases) == sorted(FIXED_NAMES)
    with ThreadPoolExecutor(6) as pool:
        outcomes = dict(zip(cases, pool.map(lambda c: fk.run_isolated(c[0]), cases.values())))
    records = {}
    with open(report, "w") as fh:
        for name, o in outcomes.items():
            records[name] = {"name": name, "argv": o.argv, "rc": o.rc, "wall_s": round(o.wall_s, 3),
                             "rss_mib": round(o.rss_kib / 1024, 1) if o.rss_kib >= 0 else None, "stderr": o.err[-600:],
                             "violations": fk.violations(o), "expected_on_exit_2": cases[name][1]}
            fh.write(json.dumps(records[name], default=str) + "\n")
    return records


@pytest.mark.parametrize("name", FIXED_NAMES)
def test_bounded_isolated(name, fixed_outcomes):
    record = fixed_outcomes[name]
    assert not record["violations"], record
    expected = record["expected_on_exit_2"]
    if expected is not None:
        assert record["rc"] == 2 and expected in record["stderr"], record
