"""NVIDIA's driver rules (doctor/data/cuda.yaml) and the choice of a torch build (pure functions)."""
from __future__ import annotations

import pytest

from doctor import cuda, refdata
from doctor.cuda import Build, can_target, forward_package, need, recommend, support


@pytest.mark.parametrize("toolkit,driver,level", [
    ("12.8", "570.124.06", "full"),        # 12.8 GA needs 570.26
    ("12.8", "550.54.15", "minor"),        # >= 525.60.13, the 12.x minor-version floor
    ("12.8", "470.256.02", "too_old"),
    ("13.0", "580.65.06", "full"),
    ("13.0", "570.124.06", "too_old"),     # CUDA 13 has no minor-version compatibility below branch 580
    ("13.2", "580.95.05", "minor"),        # 13.2 GA wants 595.45.04
    ("11.0", "450.51.06", "unknown"),      # no row for 11.0: below the 11.x floor, but 11.0's own driver may be older
    ("14.0", "610.43.02", "unknown"),      # a CUDA major doctor has no table for
    ("12.8", None, "unknown"),
    ("12.8", "not-a-version", "unknown"),
])
def test_driver_support_levels(toolkit, driver, level):
    assert support(toolkit, driver).level == level


def test_need_reads_the_ga_driver_and_the_major_floor():
    n = need("12.8")
    assert (n.full, n.floor, n.known_toolkit) == ("570.26", "525.60.13", True)
    assert need("13.0").floor == "580" and need("12.2", "windows").full == "536.25"


def test_forward_compatibility_package_from_nvidias_matrix():
    assert forward_package("13.0", "535.104.05") == "cuda-compat-13-0"     # R535 runs 13.0 with the package
    assert forward_package("13.0", "550.54.15") is None                      # R550: not a listed target branch
    assert cuda.forward_commands("cuda-compat-13-0") == (
        "apt install cuda-compat-13-0", "export LD_LIBRARY_PATH=/usr/local/cuda-13.0/compat")


def test_compile_range():
    assert not can_target("13.0", (7, 0)) and can_target("12.6", (7, 0)) and can_target("13.2", (7, 5))


TABLE = {"index_url": "https://download.pytorch.org/whl/{variant}", "releases": {
    "2.11": {"versions": ["2.11.0"], "pypi": {"linux-x86_64": "cu130"}, "variants": {
        "cu126": {"cuda": "12.6", "platforms": ["linux-x86_64"], "arch": {"linux-x86_64": ["5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0"]}},
        "cu128": {"cuda": "12.8", "platforms": ["linux-x86_64"], "arch": {"linux-x86_64": ["7.5", "8.0", "8.6", "9.0", "10.0", "12.0"]}},
        "cu130": {"cuda": "13.0", "platforms": ["linux-x86_64"], "arch": {"linux-x86_64": ["7.5", "8.0", "8.6", "9.0", "10.0", "12.0+PTX"]}}}},
    "2.9": {"versions": ["2.9.0", "2.9.1"], "pypi": {"linux-x86_64": "cu128"}, "variants": {
        "cu126": {"cuda": "12.6", "platforms": ["linux-x86_64"], "arch": {"linux-x86_64": ["5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0"]}},
        "cu128": {"cuda": "12.8", "platforms": ["linux-x86_64"], "arch": {"linux-x86_64": ["7.0", "7.5", "8.0", "8.6", "9.0", "10.0", "12.0"]}}}},
    "2.4": {"versions": ["2.4.1"], "pypi": {"linux-x86_64": "cu121"}, "variants": {
        "cu121": {"cuda": "12.1", "platforms": ["linux-x86_64"], "arch": {"linux-x86_64": ["5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0"]}}}},
}}


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setattr(refdata, "torch_wheels", lambda: TABLE)


def test_keeps_the_users_release_in_the_newest_cuda_the_driver_runs(table):
    a = recommend("2.11.0+cu130", "570.124.06", [((8, 0), False)], "linux-x86_64")   # cu130 needs branch 580
    assert (a.build.version, a.build.variant) == ("2.11.0", "cu128") and "keeps your torch release" in a.text
    assert a.build.command == "pip install 'torch==2.11.0+cu128' --index-url https://download.pytorch.org/whl/cu128"


def test_v100_keeps_2_11_on_cu126_rather_than_a_downgrade(table):
    a = recommend("2.11.0+cu128", "580.65.06", [((7, 0), False)], "linux-x86_64")
    assert (a.build.release, a.build.variant) == ("2.11", "cu126")


def test_an_upgrade_before_any_downgrade(table):
    a = recommend("2.4.1+cu121", "570.124.06", [((12, 0), False)], "linux-x86_64")   # RTX 5090
    assert (a.build.release, a.build.variant) == ("2.11", "cu128") and "no build of torch 2.4 runs" in a.text


def test_driver_too_old_for_everything_names_the_floor_and_what_works_meanwhile(table):
    a = recommend("2.11.0+cu130", "520.61.05", [((8, 0), False)], "linux-x86_64")    # R520: no 12.x build runs
    assert a.build is None and a.driver_floor == "525.60.13" and a.meanwhile is None
    a = recommend("2.11.0+cu130", "530.30.02", [((12, 0), False)], "linux-x86_64")
    assert a.build is None or a.build.release == "2.11"


def test_a_release_newer_than_the_table_is_judged_as_the_newest(table):
    a = recommend("2.16.0+cu132", "580.65.06", [((9, 0), False)], "linux-x86_64")
    assert a.build.release == "2.11" and "newer than doctor's table" in a.notes[0]


def test_ptx_only_coverage_needs_the_full_driver(table):
    fit = cuda.fit(Build("2.11", "2.11.0", "cu130", "13.0", "linux-x86_64",
                         cuda.parse_arch_list(["7.5", "12.0+PTX"])), "580.65.06", [((12, 1), False)])
    assert fit.runs                     # sm_120 cubin runs on 12.1
    fit = cuda.fit(Build("2.11", "2.11.0", "cu130", "13.0", "linux-x86_64",
                         cuda.parse_arch_list(["9.0+PTX"])), "580.65.06", [((12, 0), False)])
    assert fit.runs                     # PTX compute_90 JIT on a driver that fully supports 13.0
    fit = cuda.fit(Build("2.11", "2.11.0", "cu132", "13.2", "linux-x86_64",
                         cuda.parse_arch_list(["9.0+PTX"])), "580.65.06", [((12, 0), False)])
    assert not fit.runs and "JIT" in fit.why   # 13.2 PTX on a 580 driver: minor-version, no JIT


def test_every_gpu_row_cites_a_source_and_a_known_architecture():
    for row in refdata.load("gpus")["gpus"]:
        assert row["source"].strip(), row["name"]
        assert refdata.architecture(row["cc"]), row["name"]


def test_gpu_spec_is_exact():
    assert refdata.gpu_spec("NVIDIA A800-SXM4-80GB")["name"] == "A800 SXM4 80GB"
    assert refdata.gpu_spec("NVIDIA GeForce RTX 4090 D")["name"] == "RTX 4090 D"
    assert refdata.gpu_spec("NVIDIA GeForce RTX 4090")["name"] == "RTX 4090"
    assert refdata.gpu_spec("NVIDIA GH200 144G HBM3e")["name"].startswith("GH200")
    assert refdata.gpu_spec("NVIDIA H200")["name"].startswith("H200")
    assert refdata.gpu_spec("mystery") is None and refdata.gpu_spec("NVIDIA H20 NVL16") is None
