"""NVIDIA's arch-compatibility rule, driver tables and wheel choice (pure functions)."""
from __future__ import annotations

import pytest

from doctor import refdata
from doctor.cuda import coverage, driver_need, parse_arch_list, parse_flag, recommend_wheel


@pytest.mark.parametrize("flag,label,kind", [("sm_80", "sm_80", "sm"), ("sm_90a", "sm_90a", "sm"),
                                             ("compute_120", "compute_120", "ptx"), ("sm_100", "sm_100", "sm")])
def test_parse_flag(flag, label, kind):
    t = parse_flag(flag)
    assert t.label == label and t.kind == kind


def test_parse_flag_rejects_garbage():
    assert parse_flag("sm_") is None and parse_flag("gfx90a") is None


@pytest.mark.parametrize("cc,arch,covered,via_ptx", [
    ("8.6", ["8.0"], True, False),           # same major, higher minor: the sm_80 cubin runs
    ("8.0", ["8.6"], False, False),          # lower minor: no
    ("9.0", ["8.0", "8.6"], False, False),   # other major, no PTX: no
    ("9.0", ["8.0+PTX"], True, True),        # PTX JIT for any CC >= 8.0
    ("7.5", ["8.0+PTX"], False, False),      # PTX never runs on an older GPU
    ("9.0", ["9.0a"], True, False),          # arch-specific: exactly 9.0
    ("10.0", ["9.0a"], False, False),
    ("12.1", ["12.0"], True, False),         # GB10 on an sm_120 wheel
])
def test_coverage_rule(cc, arch, covered, via_ptx):
    cov = coverage(cc, parse_arch_list(arch))
    assert (cov.covered, cov.via_ptx) == (covered, via_ptx)


def test_driver_need_from_nvidia_tables():
    need = driver_need("12.8")
    assert (need.floor, need.toolkit) == ("525.60.13", "570.26")
    assert driver_need("13.0").floor == "580.65.06"
    assert driver_need("12.7").toolkit is None  # no such toolkit in the table: only the floor applies


def test_recommend_wheel():
    assert recommend_wheel(["12.0"], "570.124.06").variant == "cu128"   # RTX 5090
    assert recommend_wheel(["12.0"], "560.35.05") is None               # cu126 has no sm_120
    assert recommend_wheel(["7.0"], "580.65.06").variant == "cu128"     # cu130 dropped Volta
    assert recommend_wheel(["8.0"], "580.65.06").variant == "cu130"


def test_every_reference_row_cites_a_source():
    for row in refdata.load("gpus")["gpus"]:
        assert row["source"].strip(), row["name"]
        assert refdata.architecture(row["cc"]), row["name"]


def test_gpu_spec_lookup_by_nvml_name():
    assert refdata.gpu_spec("NVIDIA A800-SXM4-80GB")["chip"] == "GA100"
    assert refdata.gpu_spec("NVIDIA GeForce RTX 4090 D")["name"].startswith("RTX 4090D")
    assert refdata.gpu_spec("NVIDIA GeForce RTX 4090")["name"].startswith("RTX 4090 24GB")
    assert refdata.gpu_spec("NVIDIA H20")["memory_gb"] == 96
    assert refdata.gpu_spec("NVIDIA L20")["cc"] == "8.9"
    assert refdata.gpu_spec("mystery") is None
