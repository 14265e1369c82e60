"""NVIDIA's code-target rules and the parsing of every arch-list form torch prints or accepts."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doctor.archs import NAMED, ArchList, Target, coverage, parse_arch_list, parse_cc, parse_token, runs_on


@pytest.mark.parametrize("token,labels", [
    ("sm_80", ["sm_80"]), ("sm_90a", ["sm_90a"]), ("sm_100f", ["sm_100f"]), ("compute_120", ["compute_120"]),
    ("compute_90a", ["compute_90a"]), ("8.6+PTX", ["sm_86", "compute_86"]), ("9.0a", ["sm_90a"]),
    ("10.0f", ["sm_100f"]), ("12.0+ptx", ["sm_120", "compute_120"]), ("lto_90", ["sm_90"]),
])
def test_tokens(token, labels):
    assert [t.label for t in parse_token(token)] == labels


def test_torch_lists_and_env_strings():
    got = parse_arch_list(["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"])
    assert got.labels() == ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"] and not got.unknown
    env = parse_arch_list("Ampere+Tegra;Hopper 10.0, 12.0+PTX gfx90a")
    assert env.labels() == ["sm_87", "sm_90", "compute_90", "sm_100", "sm_120", "compute_120"]
    assert env.unknown == ("gfx90a",)
    assert parse_arch_list(None) == ArchList(())
    assert parse_arch_list([None, 3, "sm_"]).unknown == ("None", "3", "sm_")


@pytest.mark.parametrize("cc,arch,covered,via_ptx", [
    ((8, 6), "8.0", True, False),            # same major, newer minor: the sm_80 cubin runs
    ((8, 0), "8.6", False, False),           # older minor: no
    ((9, 0), "8.0;8.6", False, False),       # other major, no PTX: no
    ((9, 0), "8.0+PTX", True, True),         # plain PTX is JIT-compiled for any newer CC
    ((7, 5), "8.0+PTX", False, False),       # never for an older GPU
    ((9, 0), "9.0a", True, False),           # arch-specific: exactly 9.0 ...
    ((10, 0), "9.0a+PTX", False, False),     # ... and its PTX is not JIT-compiled elsewhere
    ((10, 3), "10.0f", True, False),         # family: 10.x from 10.0 up
    ((12, 0), "10.0f+PTX", False, False),    # family PTX stays in the family
    ((12, 1), "12.0", True, False),          # GB10 on an sm_120 build
    ((10, 3), "10.0", True, False),          # B300 on an sm_100 build
    ((7, 0), "7.5;8.0;8.6;9.0;10.0;12.0+PTX", False, False),   # V100 on a cu130 list
])
def test_coverage_rule(cc, arch, covered, via_ptx):
    cov = coverage(cc, parse_arch_list(arch))
    assert (cov.covered, cov.via_ptx) == (covered, via_ptx)


def test_tegra_needs_its_own_cubin():
    arch = parse_arch_list("8.0;8.6")
    assert coverage((8, 7), arch).covered                       # a desktop 8.7 would run sm_86
    assert not coverage((8, 7), arch, tegra=True).covered       # Orin: not promised
    assert coverage((8, 7), parse_arch_list("8.7"), tegra=True).by == "sm_87"
    assert coverage((8, 7), parse_arch_list("8.0+PTX"), tegra=True).via_ptx


def test_parse_cc_never_raises_on_bad_values():
    assert parse_cc("8.0") == (8, 0) and parse_cc("12.1") == (12, 1)
    for bad in (None, "", "8", "x.y", 8.0, "8.0.1", [8, 0]):
        assert parse_cc(bad) is None


TOKENS = st.one_of(
    st.builds(lambda k, d, s: f"{k}_{d}{s}", st.sampled_from(["sm", "compute", "lto", "gfx", "xx"]),
              st.integers(0, 2000).map(str), st.sampled_from(["", "a", "f", "b"])),
    st.builds(lambda a, b, s, p: f"{a}.{b}{s}{p}", st.integers(0, 150), st.integers(0, 99),
              st.sampled_from(["", "a", "f", "z"]), st.sampled_from(["", "+PTX", "+ptx", "+", "+PTXX"])),
    st.sampled_from([n for n, _ in NAMED] + ["native", "all", "all-major", ""]),
    st.text(max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKENS, max_size=8), st.sampled_from([";", " ", ",", "; ", "\t"]))
def test_any_arch_string_parses_without_raising(tokens, sep):
    for value in (sep.join(tokens), tokens):
        arch = parse_arch_list(value)
        for t in arch.targets:
            assert isinstance(t, Target) and t.kind in ("sm", "ptx") and t.suffix in ("", "a", "f")
            coverage(t.cc, arch)
            assert runs_on(t, t.cc)       # every target runs on its own compute capability
