"""GPU code targets and NVIDIA's rules for which compiled code runs on which GPU (pure; no data files).

A build carries cubins (machine code for one architecture: `sm_80`) and PTX (virtual code the driver
JIT-compiles: `compute_80`). Suffixes: `a` = arch-specific (`sm_90a`: features of exactly CC 9.0), `f` =
family-specific (`sm_100f`: CC 10.x from 10.0 up). NVIDIA's rules (CUDA C++ Programming Guide, "Binary
Compatibility" and "Application Compatibility"; NVIDIA blog "NVIDIA Blackwell and NVIDIA CUDA 12.9 Introduce
Family-Specific Architecture Features"):
- a plain cubin sm_XY runs on CC X.Z with Z >= Y, never across majors and never on an older minor;
- an arch-specific cubin sm_XYa runs on exactly CC X.Y; its PTX compute_XYa is not JIT-compiled for any other CC;
- a family cubin sm_XYf runs on CC X.Z with Z >= Y (the same major); its PTX likewise stays in the family;
- plain PTX compute_XY is JIT-compiled by the driver for any CC >= X.Y, across majors.
Tegra (Jetson) parts are listed separately by the caller: desktop cubins are not promised to run on them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

# TORCH_CUDA_ARCH_LIST's named architectures, as torch.utils.cpp_extension expands them (torch 2.13);
# combined names first, so that "Ampere+Tegra" is not read as "Ampere" followed by "+Tegra".
NAMED = (("Kepler+Tesla", "3.7"), ("Kepler", "3.5+PTX"), ("Maxwell+Tegra", "5.3"), ("Maxwell", "5.0;5.2+PTX"),
         ("Pascal", "6.0;6.1+PTX"), ("Volta+Tegra", "7.2"), ("Volta", "7.0+PTX"), ("Turing", "7.5+PTX"),
         ("Ampere+Tegra", "8.7"), ("Ampere", "8.0;8.6+PTX"), ("Ada", "8.9+PTX"), ("Hopper", "9.0+PTX"),
         ("Blackwell+Tegra", "11.0"), ("Blackwell", "10.0;10.3;12.0;12.1+PTX"))
FLAG = re.compile(r"^(sm|compute|lto)_(\d{2,3})([af]?)$")
DOTTED = re.compile(r"^(\d{1,2})\.(\d)([af]?)(\+PTX)?$", re.I)


@dataclass(frozen=True, order=True)
class Target:
    """One compiled target: kind 'sm' (cubin) or 'ptx', compute capability, suffix '' | 'a' | 'f'."""

    major: int
    minor: int
    kind: str = "sm"
    suffix: str = ""

    @property
    def cc(self) -> tuple[int, int]:
        return self.major, self.minor

    @property
    def label(self) -> str:
        return f"{'sm' if self.kind == 'sm' else 'compute'}_{self.major}{self.minor}{self.suffix}"


@dataclass(frozen=True)
class ArchList:
    """What a build's arch list says: the targets it names and the tokens that are not targets."""

    targets: tuple[Target, ...]
    unknown: tuple[str, ...] = ()

    @property
    def cubins(self) -> tuple[Target, ...]:
        return tuple(t for t in self.targets if t.kind == "sm")

    def labels(self) -> list[str]:
        return [t.label for t in self.targets]


def parse_cc(text: object) -> tuple[int, int] | None:
    """'8.0' -> (8, 0); anything else (None, '', '8', 'x.y', 8.0 as a float) -> None. Never raises."""
    if not isinstance(text, str):
        return None
    m = re.fullmatch(r"\s*(\d{1,2})\.(\d{1,2})\s*", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _split_flag_digits(digits: str) -> tuple[int, int]:
    """'80' -> (8, 0), '100' -> (10, 0), '121' -> (12, 1): the last digit is the minor version."""
    return int(digits[:-1]), int(digits[-1])


def parse_token(token: str) -> list[Target] | None:
    """One arch-list token: 'sm_90a', 'compute_120', '8.6+PTX', '10.0f'. None when it is not a target."""
    token = token.strip()
    m = FLAG.match(token)
    if m:
        major, minor = _split_flag_digits(m.group(2))
        kind = "sm" if m.group(1) in ("sm", "lto") else "ptx"
        return [Target(major, minor, kind, m.group(3))]
    m = DOTTED.match(token)
    if m:
        major, minor, suffix = int(m.group(1)), int(m.group(2)), m.group(3).lower()
        out = [Target(major, minor, "sm", suffix)]
        if m.group(4):
            out.append(Target(major, minor, "ptx", suffix))
        return out
    return None


def parse_arch_list(value: str | Iterable[object] | None) -> ArchList:
    """Parse `torch.cuda.get_arch_list()` output (a list of 'sm_XY' / 'compute_XY') or a TORCH_CUDA_ARCH_LIST
    string ('8.0;8.6+PTX', space or comma separated, named architectures). Never raises: what is not a target
    is kept in `unknown`."""
    if value is None:
        return ArchList(())
    if isinstance(value, str):
        text = value
        for name, expansion in NAMED:
            text = text.replace(name, expansion)
        tokens = [t for t in re.split(r"[;,\s]+", text) if t]
    else:
        tokens = [t if isinstance(t, str) else repr(t) for t in value]
    targets: list[Target] = []
    unknown: list[str] = []
    for token in tokens:
        parsed = parse_token(token)
        if parsed is None:
            unknown.append(token)
        else:
            targets.extend(t for t in parsed if t not in targets)
    return ArchList(tuple(targets), tuple(unknown))


def runs_on(target: Target, cc: tuple[int, int]) -> bool:
    """Does this target's code run on a GPU of compute capability `cc` (NVIDIA's rules, module docstring)?"""
    if target.suffix == "a":
        return target.cc == cc
    if target.kind == "sm" or target.suffix == "f":
        return target.major == cc[0] and target.minor <= cc[1]
    return target.cc <= cc   # plain PTX: JIT-compiled for any newer CC


@dataclass(frozen=True)
class Coverage:
    """How a GPU is served by a build: by a cubin, only by PTX (JIT at first use), or not at all."""

    covered: bool
    by: str | None
    via_ptx: bool


def coverage(cc: tuple[int, int], arch: ArchList, tegra: bool = False) -> Coverage:
    """The best target of `arch` for a GPU of `cc`. On a Tegra part only a cubin built for exactly its CC is
    counted (desktop binary compatibility is not promised there); PTX still JIT-compiles."""
    cubins = [t for t in arch.cubins if (t.cc == cc if tegra else runs_on(t, cc))]
    if cubins:
        best = max(cubins, key=lambda t: (t.minor, t.suffix == ""))
        return Coverage(True, best.label, False)
    ptx = [t for t in arch.targets if t.kind == "ptx" and runs_on(t, cc)]
    if ptx:
        return Coverage(True, max(ptx).label, True)
    return Coverage(False, None, False)


def compiled_range(arch: ArchList) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Oldest and newest CC among the cubins (torch warns at start-up for a GPU outside it)."""
    ccs = sorted(t.cc for t in arch.cubins)
    return (ccs[0], ccs[-1]) if ccs else None


def cc_text(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"
