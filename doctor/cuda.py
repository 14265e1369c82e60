"""Pure CUDA compatibility rules: arch coverage of a build, driver requirements, wheel choice."""
from __future__ import annotations

from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from . import refdata


def cc_tuple(cc: str) -> tuple[int, int]:
    major, minor = cc.split(".")
    return int(major), int(minor)


@dataclass(frozen=True)
class Target:
    """One compiled target: a cubin (sm_XY, sm_XYa) or PTX (compute_XY)."""

    kind: str  # "sm" or "ptx"
    major: int
    minor: int
    arch_specific: bool = False

    @property
    def label(self) -> str:
        base = f"{self.major}{self.minor}"
        return f"compute_{base}" if self.kind == "ptx" else f"sm_{base}{'a' if self.arch_specific else ''}"


def parse_flag(flag: str) -> Target | None:
    """'sm_80' / 'sm_90a' / 'compute_90' -> Target. Two-digit majors: 'sm_100', 'sm_120'."""
    kind, _, digits = flag.strip().partition("_")
    suffix = digits[-1] if digits and digits[-1] in "af" else ""
    digits = digits[:-1] if suffix else digits
    if kind not in ("sm", "compute") or not digits.isdigit() or len(digits) < 2:
        return None
    return Target("sm" if kind == "sm" else "ptx", int(digits[:-1]), int(digits[-1]), bool(suffix))


def parse_arch_list(entries: list[str]) -> list[Target]:
    """Build-list form ("8.0", "12.0+PTX") or flag form ("sm_80", "compute_120")."""
    out: list[Target] = []
    for e in entries:
        if "_" in e:
            t = parse_flag(e)
            if t:
                out.append(t)
            continue
        ptx = e.endswith("+PTX")
        major, minor = cc_tuple(e.replace("+PTX", "").rstrip("a"))
        out.append(Target("sm", major, minor, e.replace("+PTX", "").endswith("a")))
        if ptx:
            out.append(Target("ptx", major, minor))
    return out


@dataclass(frozen=True)
class Coverage:
    covered: bool
    by: str | None       # the target that covers it
    via_ptx: bool        # only PTX covers it: the driver JIT-compiles at first use
    warning: str | None  # torch prints a min/max warning for this GPU


def coverage(cc: str, targets: list[Target]) -> Coverage:
    """NVIDIA's rule: cubin sm_XY runs on CC X.Z with Z >= Y (arch-specific sm_XYa only on X.Y);
    PTX compute_XY is JIT-compiled for any CC >= X.Y."""
    major, minor = cc_tuple(cc)
    cubins = [t for t in targets if t.kind == "sm" and t.major == major
              and (t.minor == minor if t.arch_specific else t.minor <= minor)]
    warning = None
    sms = sorted((t.major, t.minor) for t in targets if t.kind == "sm")
    if sms and ((major, minor) > sms[-1] or (major, minor) < sms[0]):
        warning = (f"torch warns at start-up that this GPU (CC {cc}) is outside the compiled range "
                   f"sm_{sms[0][0]}{sms[0][1]}..sm_{sms[-1][0]}{sms[-1][1]}")
    if cubins:
        best = max(cubins, key=lambda t: (t.minor, not t.arch_specific))
        return Coverage(True, best.label, False, warning)
    ptx = [t for t in targets if t.kind == "ptx" and (t.major, t.minor) <= (major, minor)]
    if ptx:
        return Coverage(True, max(ptx, key=lambda t: (t.major, t.minor)).label, True, warning)
    return Coverage(False, None, False, warning)


def driver_version(text: str | None) -> Version | None:
    try:
        return Version(text) if text else None
    except InvalidVersion:
        return None


@dataclass(frozen=True)
class DriverNeed:
    cuda: str
    floor: str | None    # minor-version-compatibility floor for the major
    toolkit: str | None  # full-support driver for this toolkit


def driver_need(cuda: str) -> DriverNeed:
    major = cuda.split(".")[0]
    return DriverNeed(cuda, refdata.minor_version_floor(major), refdata.toolkit_driver(".".join(cuda.split(".")[:2])))


@dataclass(frozen=True)
class Wheel:
    release: str
    variant: str  # e.g. cu128
    cuda: str     # e.g. 12.8

    @property
    def command(self) -> str:
        url = refdata.torch_wheels()["index_url"].format(variant=self.variant)
        return f"pip install --upgrade 'torch=={self.release}.*' --index-url {url}"


def recommend_wheel(ccs: list[str], driver: str | None) -> Wheel | None:
    """Newest listed torch wheel that covers every GPU by cubin and that the driver fully supports."""
    d = driver_version(driver)
    data = refdata.torch_wheels()["releases"]
    for release in sorted(data, key=Version, reverse=True):
        variants = sorted(data[release], key=lambda v: int(v[2:]), reverse=True)
        for variant in variants:
            cuda = f"{variant[2:-1]}.{variant[-1]}"
            need = refdata.toolkit_driver(cuda)
            if d is not None and need and d < Version(need):
                continue
            targets = parse_arch_list(data[release][variant])
            if all(coverage(cc, targets).covered and not coverage(cc, targets).via_ptx for cc in ccs):
                return Wheel(release, variant, cuda)
    return None
