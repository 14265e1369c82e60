"""CUDA toolkit <-> NVIDIA driver rules (doctor/data/cuda.yaml) and the torch builds that run on a machine
(doctor/data/torch_wheels.yaml). Pure functions of their arguments and the data; nothing is probed here.

Driver support of a toolkit X.Y (NVIDIA's CUDA Toolkit Release Notes, tables 2 and 3; CUDA Compatibility guide):
- "full"    the driver is at least the toolkit's own (GA) driver;
- "minor"   at least the minor-version-compatibility floor of CUDA X: runs with a limited feature set, and PTX
            from the toolkit is not JIT-compiled (a GPU covered only by PTX fails);
- "too_old" below that floor: the build does not run (unless a forward-compatibility package bridges it);
- "unknown" doctor's table cannot tell (a toolkit it has no row for, a driver it cannot parse): never guessed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from . import refdata
from .archs import ArchList, coverage, parse_arch_list

COMPAT_URL = "https://docs.nvidia.com/deploy/cuda-compatibility/"
FORWARD_URL = "https://docs.nvidia.com/deploy/cuda-compatibility/forward-compatibility.html"


def version(text: Any) -> Version | None:
    """A driver or CUDA version, or None when there is none or it does not parse."""
    try:
        return Version(str(text)) if text not in (None, "") else None
    except InvalidVersion:
        return None


def toolkit_key(cuda: str | None) -> str | None:
    """'12.8' from '12.8', '12.8.1' or 'cu128'; None for anything else."""
    if not cuda:
        return None
    text = str(cuda)
    if text.startswith("cu") and text[2:].isdigit() and len(text) >= 5:
        return f"{text[2:-1]}.{text[-1]}"
    parts = text.split(".")
    return f"{parts[0]}.{parts[1]}" if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit() else None


@dataclass(frozen=True)
class Need:
    """What one toolkit asks of the driver on one OS: its own driver (full support) and its major's floor."""

    cuda: str
    full: str | None            # the toolkit's GA driver (or its branch, "610"); None when the table lacks it
    floor: str | None           # minor-version compatibility floor of the major; None for a major doctor lacks
    known_toolkit: bool


def need(cuda: str, os_name: str = "linux") -> Need:
    data = refdata.load("cuda")
    key = toolkit_key(cuda) or str(cuda)
    row = (data.get("toolkits") or {}).get(key)
    full = None
    if row:
        drivers = row.get("drivers") or []
        full = (drivers[0].get(os_name) if drivers else None) or row.get("driver_branch")
    major = (data.get("minor_version_compatibility") or {}).get(key.split(".")[0]) or {}
    floor = major.get(os_name) or major.get("min")
    return Need(key, full, floor, bool(row))


@dataclass(frozen=True)
class Support:
    level: str                  # full | minor | too_old | unknown
    need: Need
    why: str


def support(cuda: str, driver: str | None, os_name: str = "linux", driver_cuda: str | None = None) -> Support:
    """How the installed driver supports toolkit `cuda` (see the module docstring).

    NVML's newest CUDA for this driver (nvmlSystemGetCudaDriverVersion, `driver_cuda`) decides first where it
    answers: a driver that supports CUDA X.Z runs X.Y fully for Y <= Z; a newer minor of the same major runs
    through minor-version compatibility, which exists from CUDA 11 on (CUDA Compatibility guide); a newer major,
    or a newer minor before CUDA 11, does not run. Else the driver's version against NVIDIA's tables."""
    n = need(cuda, os_name)
    dc, tk = version(driver_cuda), version(n.cuda)
    if dc is not None and tk is not None:
        if (dc.major, dc.minor) >= (tk.major, tk.minor):
            return Support("full", n, f"the driver supports CUDA up to {driver_cuda} (NVML)")
        if dc.major == tk.major and tk.major >= 11:
            return Support("minor", n, f"the driver supports CUDA up to {driver_cuda} (NVML): CUDA {n.cuda} runs "
                                       "through minor-version compatibility (limited features, no PTX JIT)")
        floor = f"; CUDA {tk.major}.x needs driver >= {n.floor}" if n.floor else ""
        return Support("too_old", n, f"the driver supports CUDA up to {driver_cuda} (NVML), older than CUDA "
                                     f"{n.cuda}{floor}")
    d = version(driver)
    if d is None:
        return Support("unknown", n, f"the driver version {driver!r} is unknown")
    full, floor = version(n.full), version(n.floor)
    if full is not None and d >= full:
        return Support("full", n, f"driver {driver} >= {n.full}, CUDA {n.cuda}'s own driver")
    if floor is not None and d >= floor:
        if full is None:
            return Support("minor", n, f"driver {driver} >= {n.floor}, the CUDA {n.cuda.split('.')[0]}.x "
                                       f"minor-version floor (CUDA {n.cuda}'s own driver is not in doctor's table)")
        return Support("minor", n, f"driver {driver} is below CUDA {n.cuda}'s own driver {n.full} but >= {n.floor}, "
                                   f"the CUDA {n.cuda.split('.')[0]}.x floor: limited features, no PTX JIT")
    if floor is None:
        return Support("unknown", n, f"doctor has no driver table for CUDA {n.cuda.split('.')[0]}.x")
    if not n.known_toolkit:
        return Support("unknown", n, f"driver {driver} is below the CUDA {n.cuda.split('.')[0]}.x floor {n.floor}, "
                                     f"but doctor has no row for CUDA {n.cuda} itself, whose own driver may be older")
    return Support("too_old", n, f"driver {driver} is below {n.floor}, the oldest that runs any CUDA "
                                 f"{n.cuda.split('.')[0]}.x build")


def forward_package(cuda: str, driver: str | None) -> str | None:
    """The cuda-compat package that lets this driver's branch run toolkit `cuda` (NVIDIA's forward-compatibility
    matrix), or None where the matrix does not list the pair as compatible."""
    data = refdata.load("cuda")
    key = toolkit_key(cuda)
    d = version(driver)
    if not key or d is None:
        return None
    package = f"cuda-compat-{key.replace('.', '-')}"
    row = ((data.get("forward_compatibility_matrix") or {}).get("packages") or {}).get(package) or {}
    return package if row.get(str(d.major)) == "compatible" else None


def forward_commands(package: str) -> tuple[str, ...]:
    major, minor = package.rsplit("-", 2)[-2:]
    install = (refdata.load("cuda").get("forward_compatibility") or {}).get("install") or {}
    return tuple(install[k].format(major=major, minor=minor) for k in ("apt", "activate") if install.get(k))


def can_target(cuda: str, cc: tuple[int, int]) -> bool:
    """Can toolkit `cuda` build code for compute capability `cc` at all (NVIDIA's per-toolkit compile range:
    CUDA 13.x dropped Maxwell, Pascal and Volta)? True where the table states no limit."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    from .archs import parse_cc

    cv = version(toolkit_key(cuda))
    for row in ((refdata.load("cuda").get("targets") or {}).get("compile_range") or []):
        try:
            applies = cv is not None and cv in SpecifierSet(str(row.get("toolkits", "")))
        except InvalidSpecifier:
            continue
        low = parse_cc(str(row.get("min_cc")))
        if applies and low is not None:
            return cc >= low
    return True


# -- torch builds -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Build:
    """One torch build: a release, its variant (cu128, cpu) on one platform, and its compiled arch list."""

    release: str
    version: str
    variant: str
    cuda: str | None
    platform: str
    arch: ArchList | None = field(default=None, compare=False)   # None: the table could not confirm it
    from_pypi: bool = False

    @property
    def command(self) -> str:
        """The exact build from PyTorch's index: the local tag (+cu128) makes pip replace a +cpu or other
        build of the same version instead of keeping it as already satisfied."""
        url = refdata.torch_wheels()["index_url"].format(variant=self.variant)
        return f"pip install 'torch=={self.version}+{self.variant}' --index-url {url}"

    @property
    def label(self) -> str:
        return f"torch {self.version} {self.variant}"


def platform_key(host: dict[str, Any] | None) -> str | None:
    """'linux-x86_64', 'linux-aarch64', 'windows-x86_64' from the host facts, or None when they do not say."""
    host = host or {}
    system, machine = str(host.get("os") or "").lower(), str(host.get("machine") or "").lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if not system or not machine:
        return None
    return f"{system}-{machine}"


def release_of(torch_version: str | None) -> str | None:
    v = version((torch_version or "").split("+")[0])
    return f"{v.major}.{v.minor}" if v is not None else None


def builds(platform: str) -> list[Build]:
    """Every CUDA build the table lists for `platform`, newest release first, newest CUDA first."""
    data = refdata.torch_wheels()
    out = []
    for release, row in (data.get("releases") or {}).items():
        versions = row.get("versions") or [release + ".0"]
        newest = max(versions, key=lambda v: version(v) or Version("0"))
        pypi_variant = (row.get("pypi") or {}).get(platform)
        for variant, spec in (row.get("variants") or {}).items():
            arch = (spec.get("arch") or {}).get(platform)
            if arch is None and platform not in (spec.get("platforms") or []):
                continue   # not built for this platform
            out.append(Build(release, newest, variant, spec.get("cuda"), platform,
                             parse_arch_list(arch) if arch is not None else None, variant == pypi_variant))
    return sorted(out, key=lambda b: (version(b.release) or Version("0"), version(b.cuda) or Version("0")),
                  reverse=True)


@dataclass(frozen=True)
class Fit:
    """Whether a build runs on this driver and covers these GPUs, and why not."""

    runs: bool
    level: str
    why: str


def fit(build: Build, driver: str | None, gpus: list[tuple[tuple[int, int], bool]], os_name: str = "linux",
        driver_cuda: str | None = None) -> Fit:
    """`gpus`: (compute capability, is a Tegra part) of every GPU the job uses."""
    if build.cuda is None:
        return Fit(False, "unknown", "not a CUDA build")
    s = support(build.cuda, driver, os_name, driver_cuda)
    if s.level in ("too_old", "unknown"):
        return Fit(False, s.level, s.why)
    if build.arch is None:
        return Fit(False, "unknown", f"the arch list of {build.label} is not confirmed in doctor's table")
    for cc, tegra in gpus:
        cov = coverage(cc, build.arch, tegra)
        if not cov.covered:
            return Fit(False, s.level, f"{build.label} has no code for CC {cc[0]}.{cc[1]}")
        if cov.via_ptx and s.level != "full":
            return Fit(False, s.level, f"{build.label} covers CC {cc[0]}.{cc[1]} only by PTX, which needs driver "
                                       f">= {s.need.full} to JIT")
    return Fit(True, s.level, s.why)


@dataclass(frozen=True)
class Advice:
    """What to install: `build` (None when nothing in the table runs here) and why, in order of preference."""

    build: Build | None
    text: str
    driver_floor: str | None = None
    meanwhile: Build | None = None
    notes: tuple[str, ...] = ()


def recommend(torch_version: str | None, driver: str | None, gpus: list[tuple[tuple[int, int], bool]],
              platform: str, os_name: str = "linux", driver_cuda: str | None = None) -> Advice:
    """What to install, in this order of preference:
    1. a build of the user's torch release that runs here and covers every GPU (the newest such CUDA variant);
    2. builds of the same release whose arch lists doctor's table does not confirm, all of them, with how to
       check (rather than a change of release doctor cannot show to be needed);
    3. the newest release that runs here: an upgrade before any downgrade;
    4. else the driver floor that makes the user's release run, and the newest build that runs meanwhile.
    Without a recorded driver, builds are chosen by coverage alone and the driver they need is named."""
    table = builds(platform)
    if not table:
        return Advice(None, f"doctor's torch table lists no CUDA build for {platform}")
    releases = sorted({b.release for b in table}, key=Version, reverse=True)
    newest = releases[0]
    current = release_of(torch_version)
    notes: list[str] = []
    if current and current not in releases and Version(current) > Version(newest):
        notes.append(f"torch {current} is newer than doctor's table (newest {newest}); judged as {newest}")
        current = newest
    blind = version(driver) is None and version(driver_cuda) is None

    def runs_here(b: Build) -> bool:
        return support(b.cuda or "", driver, os_name, driver_cuda).level in ("full", "minor") or blind

    if blind:   # the driver was not recorded: choose by coverage alone and say what the driver must run
        runnable = [b for b in table if b.cuda and b.arch is not None
                    and all(coverage(cc, b.arch, tegra).covered for cc, tegra in gpus)]
    else:
        runnable = [b for b in table if fit(b, driver, gpus, os_name, driver_cuda).runs]

    def driver_note(b: Build) -> None:
        if blind:
            n = need(b.cuda or "", os_name)
            notes.append(f"the driver was not recorded: CUDA {n.cuda} needs driver >= {n.floor or n.full}")

    mine = [b for b in runnable if b.release == current]
    if mine:
        driver_note(mine[0])
        what = "covers these GPUs" if blind else "runs here"
        return Advice(mine[0], f"{mine[0].label} (CUDA {mine[0].cuda}) keeps your torch release and {what}",
                      notes=tuple(notes))
    maybe = [b for b in table if b.release == current and b.arch is None and b.cuda and runs_here(b)
             and all(can_target(b.cuda, cc) for cc, _ in gpus)]
    if maybe:   # the same release exists for a CUDA this driver runs; its arch list is not in doctor's table
        maybe = _toward(maybe, gpus, [b for b in table if b.release == current and b.arch is not None])
        names = ", ".join(f"{b.variant}" for b in maybe)
        notes.append(f"doctor's table does not list which GPUs {', '.join(b.label for b in maybe)} cover; "
                     "after installing, check that `python -c \"import torch; print(torch.cuda.get_arch_list())\"` "
                     "lists this GPU's sm_XY")
        driver_note(maybe[0])
        return Advice(maybe[0], f"torch {maybe[0].version} also comes as {names}, which this driver runs; try "
                                f"{maybe[0].variant} first", notes=tuple(notes))
    newer = [b for b in runnable if current and Version(b.release) > Version(current)]
    if newer or (runnable and not current):
        best = (newer or runnable)[0]
        driver_note(best)
        why = f"no build of torch {current} runs here; " if current else ""
        return Advice(best, f"{why}{best.label} (CUDA {best.cuda}) {'covers these GPUs' if blind else 'runs here'}",
                      notes=tuple(notes))
    floor = _driver_floor(table, current or newest, gpus, os_name)
    older = [b for b in runnable if not current or Version(b.release) < Version(current)]
    meanwhile = older[0] if older else None
    if meanwhile is not None:
        driver_note(meanwhile)
    if (floor is None or blind) and meanwhile is not None:
        return Advice(meanwhile, f"no build of torch {current} covers these GPUs; the newest that does is "
                                 f"{meanwhile.label}", notes=tuple(notes))
    text = (f"the driver is too old for every build of torch {current or newest} that doctor's table lists: upgrade "
            f"it to >= {floor}" if floor else "no build in doctor's table runs here")
    if meanwhile is not None:
        text += f"; meanwhile {meanwhile.label} (CUDA {meanwhile.cuda}) runs on this driver"
    return Advice(None, text, floor, meanwhile, tuple(notes))


def _toward(candidates: list[Build], gpus: list[tuple[tuple[int, int], bool]], known: list[Build]) -> list[Build]:
    """Unconfirmed builds in the order most likely to hold these GPUs: a GPU older than every cubin the release's
    confirmed builds carry is dropped by newer CUDA toolkits first, so the oldest CUDA leads; otherwise the
    newest CUDA leads (new architectures arrive in new toolkits)."""
    lowest = min((t.cc for b in known for t in (b.arch.cubins if b.arch else ())), default=None)
    older = lowest is not None and all(cc < lowest for cc, _ in gpus)
    return sorted(candidates, key=lambda b: version(b.cuda) or Version("0"), reverse=not older)


def _driver_floor(table: list[Build], release: str, gpus: list[tuple[tuple[int, int], bool]],
                  os_name: str) -> str | None:
    """The oldest driver on which some build of `release` would run and cover these GPUs."""
    best: Version | None = None
    for b in (b for b in table if b.release == release and b.cuda and b.arch is not None):
        n = need(b.cuda, os_name)
        covs = [coverage(cc, b.arch, tegra) for cc, tegra in gpus]
        if not all(c.covered for c in covs):
            continue
        wanted = n.full if any(c.via_ptx for c in covs) else (n.floor or n.full)
        v = version(wanted)
        if v is not None and (best is None or v < best):
            best = v
    return str(best) if best is not None else None
