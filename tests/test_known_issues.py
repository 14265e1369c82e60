"""doctor/known_issues.py (each condition kind, three-valued: undecided on a missing fact), the rows of
doctor/data/known_issues.yaml (sources, conditions, the generated bitsandbytes table), and the packages.known_issues
check on literal facts (tests/factsbuilder.py)."""
from __future__ import annotations

import copy
import re

import pytest
import factsbuilder as fb

from doctor import known_issues as ki
from doctor.checks.packages import known_issue_context, packages_known_issues
from doctor.model import Status
from doctor.refdata import load

QLORA = {"method": "qlora", "quantization": "nf4", "dtype": "bf16", "attn_implementation": "sdpa"}


def ctx(**kw) -> ki.Context:
    base = dict(installed={}, required={}, gpus=["8.0"], torch_known=True, torch_cuda="12.8", os="linux",
                machine="x86_64", nvcc_known=True, nvcc="12.8", workload={}, software={})
    base.update(kw)
    return ki.Context(**base)


def cond(kind: str, value, c: ki.Context, implied: dict | None = None):
    st = ki._State(c, implied or {})
    return ki.CONDITIONS[kind](st, value, {"id": "t"}), st


# ------------------------------------------------------------------------------------------------ condition kinds

def test_packages_installed_required_implied_unknown():
    c = ctx(installed={"transformers": "4.57.1"}, required={"autoawq": ">=0.1.8"})
    assert cond("packages", {"transformers": ">=4.57.0,<5.0.0rc0"}, c)[0] is True
    assert cond("packages", {"transformers": ">=5"}, c)[0] is False
    assert cond("packages", {"autoawq": "*"}, c)[0] is True               # required, not installed: judged on the spec
    assert cond("packages", {"autoawq": "<0.2"}, c)[0] is False           # pip installs the newest, not the floor
    assert cond("packages", {"peft": "*"}, c)[0] is False                 # absent
    assert cond("packages", {"flash-attn": ">=2.0,<3"}, c, {"flash-attn": ">=2.1.0,<3"})[0] is True  # implied
    value, st = cond("packages", {"peft": "*"}, ctx(installed=None))
    assert value is None and "unknown" in st.reasons[0]                   # packages not read: undecided
    assert cond("packages", {"x": "*"}, ctx(installed={"x": "not-a-version"}))[0] is True
    assert cond("packages", {"x": ">1"}, ctx(installed={"x": "not-a-version"}))[0] is None


@pytest.mark.parametrize("job,row,expected", [
    (">=2.1.0,<3", ">=2.0,<3", True), (">=2.1.0", ">=2.0,<3", False), ("==0.45.0", "<0.45.3", True),
    ("~=4.57.0", ">=4.57.0,<5.0.0rc0", True), ("", "*", True), (">=4.57.0,!=4.57.2", ">=4.57", False),
])
def test_forced_is_a_range_inclusion(job, row, expected):
    assert ki.forced(job, row)[0] is expected


def test_missing_and_not_installed():
    c = ctx(installed={"vllm": "0.11.2"}, required={"gptqmodel": ""})
    assert cond("missing", ["vllm"], c)[0] is False and cond("missing", ["gptqmodel"], c)[0] is False
    assert cond("missing", ["sglang"], c)[0] is True
    assert cond("not_installed", ["gptqmodel"], c)[0] is True and cond("not_installed", ["vllm"], c)[0] is False
    assert cond("missing", ["x"], ctx(installed=None))[0] is None
    assert cond("not_installed", ["x"], ctx(installed=None))[0] is None


def test_compute_capability_kinds_and_undecided():
    two = ctx(gpus=["7.5", "9.0"])
    assert cond("cc_below", "8.0", two)[0] is True and cond("cc_below", "7.5", two)[0] is False
    assert cond("cc_at_least", "9.0", two)[0] is True and cond("cc_at_least", "10.0", two)[0] is False
    assert cond("cc_in", ["8.*"], two)[0] is False and cond("cc_in", ["9.*"], two)[0] is True
    assert cond("cc_not_in", ["9.0"], two)[0] is True and cond("cc_not_in", ["7.*", "9.0"], two)[0] is False
    for gpus, why in ((None, "no GPU facts"), (["9.0", None], "unknown")):
        value, st = cond("cc_below", "8.0", ctx(gpus=gpus, gpu_gap="no GPU facts"))
        assert value is None and why in st.reasons[0]
    assert cond("cc_below", "8.0", ctx(gpus=[]))[0] is False            # NVML observed no GPU: nothing is below
    assert cond("cc_below", "8.0", ctx(gpus=["7.0", None]))[0] is True    # one known GPU already decides


def test_torch_platform_nvcc_and_job_kinds():
    assert cond("torch_cuda", ">=12.8", ctx(torch_cuda="13.0"))[0] is True
    assert cond("torch_cuda", ">=12.8", ctx(torch_cuda=None))[0] is False  # CPU-only build
    assert cond("torch_cuda", ">=12.8", ctx(torch_known=False))[0] is None
    assert cond("platform", ["linux"], ctx())[0] is True and cond("platform_not", ["linux"], ctx())[0] is False
    assert cond("platform", ["linux"], ctx(os=None))[0] is None and cond("platform_not", ["x"], ctx(os=None))[0] is None
    assert cond("nvcc_below", "12.3", ctx(nvcc="12.1"))[0] is True and cond("nvcc_below", "12.3", ctx())[0] is False
    assert cond("nvcc_below", "12.3", ctx(nvcc=None))[0] is True          # no nvcc at all
    assert cond("nvcc_below", "12.3", ctx(nvcc_known=False))[0] is None
    assert cond("nvcc", ">=11.7,<12", ctx(nvcc="11.8"))[0] is True and cond("nvcc", ">=1", ctx(nvcc=None))[0] is False
    assert cond("nvcc", ">=1", ctx(nvcc_known=False))[0] is None
    c = ctx(workload=QLORA, required={"transformers": ">=4.57.0", "bitsandbytes": ""}, software={"build_extensions": True})
    assert cond("job", {"method": ["qlora"], "quantization": ["nf4"]}, c)[0] is True
    assert cond("job", [{"method": ["lora"]}, {"quantization": ["nf4"]}], c)[0] is True   # any-of
    assert cond("job", {"attn_implementation": ["flash_attention_2"]}, c)[0] is False
    assert cond("job", {"needs": {"transformers": "4.57"}}, c)[0] is True
    assert cond("job", {"needs": {"transformers": "4.58"}}, c)[0] is False
    assert cond("job", {"uses": ["bitsandbytes"]}, c)[0] is True and cond("job", {"uses": ["peft"]}, c)[0] is False
    assert cond("job", {"build_extensions": True}, c)[0] is True
    assert cond("job", {"build_extensions": True}, ctx())[0] is False
    assert cond("job", {"model": ["x"]}, ctx(workload={}))[0] is False   # a key the job does not set: False


def test_binaries_table_kinds():
    bnb = {"bitsandbytes": "0.48.1"}
    ok = ctx(installed=bnb, torch_cuda="12.8", gpus=["7.0"])
    assert cond("no_binary_for_torch_cuda", "bitsandbytes", ok)[0] is False
    assert cond("binary_lacks_gpu_arch", "bitsandbytes", ok)[0] is False       # the 12.8 build has sm_70
    no132 = ctx(installed={"bitsandbytes": "0.49.2"}, torch_cuda="13.2")
    value, st = cond("no_binary_for_torch_cuda", "bitsandbytes", no132)
    assert value is True and st.versions["first_fixed"] == "0.50.0"
    v100_cu130 = ctx(installed=bnb, torch_cuda="13.0", gpus=["7.0"])
    value, st = cond("binary_lacks_gpu_arch", "bitsandbytes", v100_cu130)
    assert value is True and st.versions["cc"] == "7.0" and "sm_75" in st.versions["archs"]
    assert cond("binary_lacks_gpu_arch", "bitsandbytes", ctx(installed={"bitsandbytes": "0.46.0"}, gpus=["7.0"]))[0] is True
    # undecided: unknown OS, no torch facts, a release outside the table, a package not installed yet
    for c, why in ((ctx(installed=bnb, os=None), "operating system"), (ctx(installed=bnb, torch_known=False), "torch"),
                   (ctx(installed={"bitsandbytes": "0.36.0"}), "not in doctor's binaries table"),
                   (ctx(required={"bitsandbytes": ">=0.41"}), "not installed yet")):
        value, st = cond("no_binary_for_torch_cuda", "bitsandbytes", c)
        assert value is None and any(why in r for r in st.reasons), (why, st.reasons)
    # Windows with the machine unknown: every Windows wheel of 0.45.5 lacks 12.9, so it is decided
    win = ctx(installed={"bitsandbytes": "0.45.5"}, torch_cuda="12.9", os="win32", machine=None)
    assert cond("no_binary_for_torch_cuda", "bitsandbytes", win)[0] is True
    # PTX unknown and a GPU newer than every cubin: only PTX could run there, so it is undecided
    assert cond("binary_lacks_gpu_arch", "bitsandbytes",
                ctx(installed={"bitsandbytes": "0.45.0"}, torch_cuda="12.6", gpus=["12.0"]))[0] is None


def test_covered_rule():
    assert ki._covered((8, 7), [80, 86], "unknown") is True       # sm_86 cubin runs on 8.7
    assert ki._covered((7, 0), [75, 80, 120], "unknown") is False  # PTX never runs backwards
    assert ki._covered((12, 1), [90, 120], "none") is True
    assert ki._covered((12, 0), [80, 90], "none") is False and ki._covered((12, 0), [80, 90], "present") is True
    assert ki._covered((12, 0), [80, 90], "unknown") is None


def test_three_valued_rows_and_verified_through():
    table = {"rows": [
        {"id": "a", "packages": {"x": "*"}, "cc_below": "8.0", "verdict": "warn", "summary": "x {x} on {cc}",
         "fail_when_job": {"method": ["lora"]}},
        {"id": "b", "packages": {"y": "*"}, "cc_below": "8.0", "verdict": "fail", "summary": "y"},
        {"id": "c", "packages": {"x": ">=1"}, "verdict": "fail", "summary": "x", "verified_through": {"x": "1.5"}},
    ]}
    hits = {h.row["id"]: h for h in ki.evaluate(ctx(installed={"x": "2.0"}, gpus=["7.5"]), table)}
    assert hits["a"].verdict == "warn" and hits["a"].summary() == "x 2.0 on 7.5" and "b" not in hits
    assert hits["c"].verdict == "undecided" and "newer than the last release" in hits["c"].reasons[0]
    assert {h.row["id"]: h.verdict for h in ki.evaluate(ctx(installed={"x": "1.0"}, workload={"method": "lora"}), table)} \
        == {"c": "fail"}                                                  # 8.0 is not below 8.0; 1.0 <= 1.5
    undecided = {h.row["id"]: h.verdict for h in ki.evaluate(ctx(installed={"x": "1.0"}, gpus=None), table)}
    assert undecided == {"a": "undecided", "c": "fail"}                  # no GPU facts: a is neither true nor false
    with pytest.raises(KeyError):
        ki.evaluate(ctx(), {"rows": [{"id": "z", "nonsense": 1, "verdict": "warn", "summary": ""}]})


def test_implied_packages_and_missing_hits():
    c = ctx(workload=QLORA)
    implied, hits = ki.implications(c)
    assert implied["bitsandbytes"] == "" and [h.row["id"] for h in hits] == ["implies-bitsandbytes"]
    assert hits[0].verdict == "fail"
    assert ki.implications(ctx(workload=QLORA, installed={"bitsandbytes": "0.48.1"}))[1] == []
    awq = {"quantization": "awq", "method": "inference"}
    ids = lambda c: [h.row["id"] for h in ki.implications(c)[1]]
    assert ids(ctx(workload=awq, installed={"transformers": "4.57.1"})) == ["implies-autoawq"]
    assert ids(ctx(workload=awq, installed={"transformers": "5.2.0"})) == ["implies-gptqmodel"]
    assert ids(ctx(workload=awq, installed={"transformers": "5.2.0", "vllm": "0.11"})) == []
    open_ = ki.implications(ctx(workload=QLORA, installed=None))[1]
    assert open_[0].verdict == "undecided"                               # cannot tell whether it is installed


# ------------------------------------------------------------------------------------------------ the table itself

def test_every_row_is_sourced_and_well_formed():
    table = load("known_issues")
    entries = table["rows"] + table["implies"]
    assert len({e["id"] for e in entries}) == len(entries)
    for e in entries:
        assert e["verdict"] in ("warn", "fail"), e["id"]
        assert e.get("sources") and all(len(s) > 30 for s in e["sources"]), e["id"]
        assert e.get("fix") and e.get("summary"), e["id"]
        conds = set(e) - ki.ROW_KEYS
        assert conds and conds <= set(ki.CONDITIONS), (e["id"], conds - set(ki.CONDITIONS))
        for field in re.findall(r"\{([^}]+)\}", e["summary"]):
            assert field in {"cc", "archs", "platform", "first_fixed", "nvcc", "torch_cuda"} | set(e.get("packages", {})) \
                | {e.get("no_binary_for_torch_cuda"), e.get("binary_lacks_gpu_arch")}, (e["id"], field)


def test_generated_bitsandbytes_table():
    releases = load("known_issues")["binaries"]["bitsandbytes"]["releases"]
    assert "0.43.0" in releases and "0.50.2" in releases
    x86 = lambda v, c: releases[v]["binaries"]["linux-x86_64"].get(c)
    assert x86("0.45.2", "12.8") is None and x86("0.45.3", "12.8")[0] == 70       # 12.8 builds start in 0.45.3
    assert min(x86("0.47.0", "12.6")) == 50 and min(x86("0.48.0", "12.6")) == 60  # Maxwell left in 0.48.0
    assert 70 not in x86("0.46.0", "12.8") and 70 in x86("0.47.0", "12.8")        # Volta back in 0.47.0 (PR #1715)
    assert x86("0.49.2", "13.2") is None and x86("0.50.0", "13.2")[0] == 75
    assert "linux-aarch64" not in releases["0.45.5"]["binaries"] and "linux-aarch64" in releases["0.46.0"]["binaries"]
    assert releases["0.50.2"]["ptx"]["linux-x86_64"] == "none" and "linux-x86_64" not in releases["0.46.0"]["ptx"]
    assert releases["0.50.2"]["binaries"]["win32-arm64"] == {"13.4": [121]}
    for v, r in releases.items():
        assert r["sources"] and all(s for s in r["sources"]), v


# ------------------------------------------------------------------------------------------------ the check, literal facts

def box(name: str, cc: str, total_mib: int, packages: dict[str, str], cuda: str = "12.8", **kw):
    facts = fb.gpu_box(name=name, total_mib=total_mib, cc=cc, edited="known-issue test", **kw)
    facts["torch"]["cuda_build"] = cuda
    facts["torch"]["version"] = f"2.10.0+cu{cuda.replace('.', '')}"
    facts["python"]["distributions"].update(packages)
    return facts


def test_qlora_on_v100_with_bitsandbytes_048():
    # The brief's premise ("CC below its floor") holds only for the CUDA 13 build: 0.48's floor is CC 6.0 and its
    # CUDA 12.8 build has sm_70; its CUDA 13.0 build starts at sm_75.
    v100 = dict(name="Tesla V100-SXM2-32GB", cc="7.0", total_mib=32768)
    pkgs = {"bitsandbytes": "0.48.1", "transformers": "4.57.1", "peft": "0.17.1"}
    r = packages_known_issues(box(**v100, packages=pkgs, cuda="13.0"), packages={"bitsandbytes": ""}, workload=QLORA)
    assert r.status is Status.FAIL and "[fail] bitsandbytes-binary-lacks-gpu-arch" in "\n".join(r.details)
    assert "compute capability 7.0" in r.summary and "sm_75" in r.summary
    assert packages_known_issues(box(**v100, packages=pkgs, cuda="12.8"), workload=QLORA).status is Status.PASS
    r = packages_known_issues(box(**v100, packages={**pkgs, "bitsandbytes": "0.46.0"}, cuda="12.8"), workload=QLORA)
    assert r.status is Status.FAIL                                            # 0.46's 12.8 build dropped sm_70
    m40 = packages_known_issues(box("Tesla M40 24GB", "5.2", 24576, pkgs, cuda="12.6"), workload=QLORA)
    assert m40.status is Status.FAIL and "bitsandbytes-maxwell-dropped" in "\n".join(m40.details)
    assert "0.47.0" in " ".join(m40.remediation.commands)


def test_flash_attention_2_on_t4():
    facts = box("Tesla T4", "7.5", 15360, {"flash-attn": "2.8.3"})
    r = packages_known_issues(facts, workload={"attn_implementation": "flash_attention_2"})
    assert r.status is Status.FAIL and 'attn_implementation="sdpa"' in r.remediation.text
    assert packages_known_issues(facts, workload={"attn_implementation": "sdpa"}).status is Status.WARN
    newer = box("Tesla T4", "7.5", 15360, {"flash-attn": "2.8.3.post2"})   # newer than the sources doctor read
    assert packages_known_issues(newer, workload={"attn_implementation": "sdpa"}).status is Status.ERROR


def test_flash_attention_3_on_a100():
    facts = box("NVIDIA A100-SXM4-80GB", "8.0", 81920, {})
    r = packages_known_issues(facts, workload={"attn_implementation": "flash_attention_3"})
    details = "\n".join(r.details)
    assert r.status is Status.FAIL and "[fail] flash-attn-3-gpu" in details and "[fail] implies-flash-attn-3" in details
    assert "H100/H800" in r.summary
    installed = box("NVIDIA A100-SXM4-80GB", "8.0", 81920, {"flash_attn_3": "3.0.0b1"})
    assert packages_known_issues(installed, workload={"attn_implementation": "sdpa"}).status is Status.WARN
    h100 = box("NVIDIA H100 80GB HBM3", "9.0", 81559, {"flash_attn_3": "3.0.0b1"})
    assert packages_known_issues(h100, workload={"attn_implementation": "flash_attention_3"}).status is Status.PASS
    old_nvcc = copy.deepcopy(box("NVIDIA H100 80GB HBM3", "9.0", 81559, {}))
    old_nvcc["toolchain"]["nvcc"]["version"] = "12.1"
    r = packages_known_issues(old_nvcc, workload={"attn_implementation": "flash_attention_3"})
    assert r.status is Status.FAIL and "flash-attn-3-build-nvcc" in "\n".join(r.details)


def test_torch_cu132_with_bitsandbytes_without_a_132_binary():
    facts = box("NVIDIA H100 80GB HBM3", "9.0", 81559, {"bitsandbytes": "0.49.2"}, cuda="13.2")
    r = packages_known_issues(facts, packages={"bitsandbytes": ">=0.45"}, workload=QLORA)
    assert r.status is Status.FAIL and "no binary for torch's CUDA 13.2" in r.summary
    assert "first release with that binary is 0.50.0" in r.summary
    fixed = box("NVIDIA H100 80GB HBM3", "9.0", 81559, {"bitsandbytes": "0.50.1"}, cuda="13.2")
    assert packages_known_issues(fixed, workload=QLORA).status is Status.PASS


def test_autoawq_beside_transformers_457():
    facts = box("NVIDIA A800-SXM4-80GB", "8.0", 81920, {"autoawq": "0.2.9", "transformers": "4.57.1"})
    r = packages_known_issues(facts, packages={"transformers": ">=4.57.0", "autoawq": ">=0.1.8"},
                              workload={"quantization": "awq", "method": "inference"})
    assert r.status is Status.FAIL and "PytorchGELUTanh" in r.summary
    assert "pip install llmcompressor" in r.remediation.commands
    lora = packages_known_issues(facts, workload={"method": "lora"})          # peft imports awq for LoRA
    assert lora.status is Status.FAIL
    five = box("NVIDIA A800-SXM4-80GB", "8.0", 81920, {"autoawq": "0.2.9", "transformers": "5.2.0"})
    r = packages_known_issues(five, workload={"quantization": "awq", "method": "inference"})
    assert "autoawq-transformers-4.57" not in "\n".join(r.details) and "implies-gptqmodel" in "\n".join(r.details)


def test_missing_gpu_facts_are_undecided_not_pass_not_fail(recorded):
    pkgs = {"bitsandbytes": "0.48.1", "transformers": "4.57.1"}
    facts = copy.deepcopy(recorded)                                  # this machine: NVML found no GPU
    facts["python"]["distributions"].update(pkgs)
    facts["torch"]["cuda_build"] = "12.8"
    r = packages_known_issues(facts, workload=QLORA)    # an observed absence decides: no GPU rule applies
    assert r.status is not Status.ERROR and "could not decide" not in r.summary
    del facts["gpu"]                                                 # no gpu section at all
    r = packages_known_issues(facts, workload=QLORA)
    assert r.status is Status.ERROR and "no GPU facts" in r.summary
    c = known_issue_context(facts, None, QLORA)
    assert c.gpus is None and c.installed["bitsandbytes"] == "0.48.1"
    del facts["python"]                                             # nothing known about the packages either
    assert packages_known_issues(facts, workload=QLORA).status is Status.ERROR


def test_the_real_qlora_profile_passes_on_a_healthy_a800(registry, judge):
    facts = fb.autodl_box(dict(fb.QWEN_QLORA_ENV), hf_home="/root/autodl-tmp/huggingface")
    assert judge(facts, "packages.known_issues", "qwen3-vl-32b-qlora").status is Status.PASS
    facts["python"]["distributions"]["bitsandbytes"] = "0.45.2"               # no CUDA 12.8 binary before 0.45.3
    r = judge(facts, "packages.known_issues", "qwen3-vl-32b-qlora")
    assert r.status is Status.FAIL and "0.45.3" in r.summary


@pytest.mark.parametrize("path", [("toolchain", "nvcc", "version"), ("toolchain", "nvcc"), ("toolchain",),
                                  ("torch", "cuda_build"), ("torch",), ("host", "os"), ("gpu", "devices"),
                                  ("python", "distributions")])
def test_removing_a_fact_never_turns_a_verdict_into_pass_or_fail(path):
    """Each case's verdict is FAIL or PASS with the fact; without it the check may only become undecided."""
    cases = [  # (facts, packages, workload)
        (box("NVIDIA H100 80GB HBM3", "9.0", 81559, {}), None, {"attn_implementation": "flash_attention_3"}),
        (box("NVIDIA H100 80GB HBM3", "9.0", 81559, {"bitsandbytes": "0.49.2"}, cuda="13.2"), None, QLORA),
        (box("NVIDIA H100 80GB HBM3", "9.0", 81559, {"bitsandbytes": "0.50.1"}, cuda="13.2"), None, QLORA),
    ]
    cases[0][0]["toolchain"]["nvcc"]["version"] = "12.1"
    for facts, packages, workload in cases:
        before = packages_known_issues(facts, packages=packages, workload=workload).status
        cut = copy.deepcopy(facts)
        node = cut
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
        after = packages_known_issues(cut, packages=packages, workload=workload).status
        assert after in (before, Status.ERROR), (path, before, after)
        if before is Status.PASS:
            assert after in (Status.PASS, Status.ERROR)
