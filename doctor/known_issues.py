"""Evaluate the known-issue rows of doctor/data/known_issues.yaml against facts and a job. Pure: no probing.

A row applies when every one of its conditions holds. Each condition answers True, False or None ("undecided": a
fact it needs is missing, e.g. no GPU facts, an unknown compute capability, an unknown package version or
platform). The answers combine as a three-valued AND: one False and the row does not apply; otherwise one None and
the row yields an *undecided* hit that names what is missing; otherwise the row applies with its verdict. A missing
fact is never read as true or false.

Packages count as present when installed (judged on the installed version), else when listed in
job.software.packages, else when the job implies them (`implies` entries: a QLoRA / nf4 / int8 job implies
bitsandbytes, attn_implementation flash_attention_2 implies flash-attn, ...). A package that is only required or
implied is judged on the job's specifier: a row holds only if every version that specifier admits is in the row's
range (pip installs the newest admitted version, not the floor).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .refdata import load

Tri = bool | None  # True, False, or None = undecided


@dataclass(frozen=True)
class Context:
    """The facts a row may ask about. None means "not known" (the fact was not collected), never "absent"."""

    installed: dict[str, str] | None        # canonical distribution name -> version; None: not inspected
    required: dict[str, str] = field(default_factory=dict)   # job.software.packages, canonical -> specifier
    gpus: list[str | None] | None = None    # one compute capability per GPU (None where unknown); None: no GPU facts
    gpu_gap: str = "there are no GPU facts"
    torch_known: bool = False                # torch facts say whether and how torch is built
    torch_cuda: str | None = None            # torch.version.cuda; None with torch_known = a CPU-only build
    os: str | None = None                    # "linux" | "win32" | "darwin"
    machine: str | None = None               # "x86_64" | "aarch64" | "arm64"
    nvcc_known: bool = False                 # toolchain facts were collected
    nvcc: str | None = None                  # nvcc's CUDA version; None with nvcc_known = no nvcc
    workload: dict[str, Any] = field(default_factory=dict)   # job.workload
    software: dict[str, Any] = field(default_factory=dict)   # job.software (build_extensions, ...)


@dataclass(frozen=True)
class Hit:
    """A row that applies (verdict warn | fail) or could not be decided (verdict undecided, with reasons)."""

    row: dict[str, Any]
    verdict: str
    versions: dict[str, str]
    reasons: tuple[str, ...] = ()

    def summary(self) -> str:
        text = self.row["summary"].format_map(_Blank(self.versions))
        if self.verdict == "undecided":
            return f"could not decide {self.row['id']}: {'; '.join(self.reasons)}"
        return text


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


@dataclass
class _State:
    """What one row's evaluation collects: values for its summary, reasons it could not decide."""

    ctx: Context
    implied: dict[str, str]
    versions: dict[str, str] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    package_versions: dict[str, str] = field(default_factory=dict)  # installed versions the row was judged on


# ------------------------------------------------------------------------------------------------ versions

def floor(spec: str | None) -> Version | None:
    """The lowest version a requirement specifier admits at its bound (>=, >, ==, ~=), if any."""
    try:
        specs = SpecifierSet(spec or "")
    except InvalidSpecifier:
        return None
    bounds = []
    for s in specs:
        if s.operator in (">=", ">", "==", "~=", "==="):
            try:
                bounds.append(Version(s.version.rstrip(".*")))
            except InvalidVersion:
                continue
    return max(bounds) if bounds else None



def _interval(spec: str) -> tuple[Any, bool, Any, bool] | None:
    """(low, low inclusive, high, high inclusive) of a specifier made of >=, >, <=, <, ==, ~= (None: unbounded);
    None when it uses a form an interval cannot hold (!=, wildcards, ===)."""
    low: Any = None
    high: Any = None
    low_inc = high_inc = True
    for s in SpecifierSet(spec):
        if "*" in s.version or s.operator in ("!=", "==="):
            return None
        v = Version(s.version)
        if s.operator in ("==", "~="):
            bounds = [(">=", v)]
            if s.operator == "==":
                bounds.append(("<=", v))
            else:
                rel = v.release[:-1] if len(v.release) > 1 else v.release
                bounds.append(("<", Version(".".join(map(str, (*rel[:-1], rel[-1] + 1))))))
        else:
            bounds = [(s.operator, v)]
        for op, b in bounds:
            if op in (">=", ">") and (low is None or b > low or (b == low and op == ">")):
                low, low_inc = b, op == ">="
            elif op in ("<=", "<") and (high is None or b < high or (b == high and op == "<")):
                high, high_inc = b, op == "<="
    return low, low_inc, high, high_inc


def forced(job_spec: str, spec: str) -> tuple[bool, Version | None]:
    """Does every version the job's specifier admits fall in `spec`? pip installs the newest admitted
    version, so a not-yet-installed package is judged on the whole range, not on its floor."""
    low = floor(job_spec)
    if spec.strip() in ("*", ""):
        return True, low
    try:
        job = _interval(job_spec or "")
        row = _interval(spec)
    except (InvalidSpecifier, InvalidVersion):
        return False, low
    if job is None or row is None:
        return False, low
    j_lo, j_lo_inc, j_hi, j_hi_inc = job
    r_lo, r_lo_inc, r_hi, r_hi_inc = row
    lower_ok = r_lo is None or (j_lo is not None and (j_lo > r_lo or (j_lo == r_lo and (r_lo_inc or not j_lo_inc))))
    upper_ok = r_hi is None or (j_hi is not None and (j_hi < r_hi or (j_hi == r_hi and (r_hi_inc or not j_hi_inc))))
    return lower_ok and upper_ok, low


def _in(version: str, spec: str) -> Tri:
    if spec.strip() in ("*", ""):
        return True
    try:
        return Version(str(version)) in SpecifierSet(spec, prereleases=True)
    except (InvalidVersion, InvalidSpecifier):
        return None


def _cc(text: str | None) -> tuple[int, int] | None:
    try:
        major, minor = str(text).split(".")[:2]
        return int(major), int(minor)
    except (ValueError, AttributeError):
        return None


def _cc_matches(cc: tuple[int, int], pattern: str) -> bool:
    major, _, minor = pattern.partition(".")
    return cc[0] == int(major) and (minor in ("*", "x") or cc[1] == int(minor))


# ------------------------------------------------------------------------------------------------ presence

def presence(st: _State, name: str) -> tuple[str, str | None]:
    """('installed', version) | ('required', spec) | ('implied', spec) | ('absent', None) | ('unknown', None)."""
    ctx = st.ctx
    if ctx.installed is not None and name in ctx.installed:
        return "installed", ctx.installed[name]
    if name in ctx.required:
        return "required", ctx.required[name]
    if name in st.implied:
        return "implied", st.implied[name]
    return ("unknown", None) if ctx.installed is None else ("absent", None)


# ------------------------------------------------------------------------------------------------ condition kinds

def cond_packages(st: _State, value: dict[str, str], row: dict[str, Any]) -> Tri:
    """packages: {name: specifier}: every package is present (installed, required or implied) in that range."""
    out: Tri = True
    for pkg, spec in value.items():
        name = canonicalize_name(pkg)
        how, what = presence(st, name)
        if how == "installed":
            st.versions[pkg] = str(what)
            st.package_versions[name] = str(what)
            ok = _in(str(what), str(spec))
            if ok is None:
                st.reasons.append(f"{pkg} {what} is not a version doctor can compare")
        elif how in ("required", "implied"):
            ok, _ = forced(what or "", str(spec))
            st.versions[pkg] = f"{what or 'any version'} ({'required' if how == 'required' else 'implied'} by the job)"
        elif how == "unknown":
            ok = None
            st.reasons.append(f"whether {pkg} is installed is unknown (the environment's packages were not read)")
        else:
            ok = False
        out = _and(out, ok)
        if out is False:
            return False
    return out


def cond_missing(st: _State, value: list[str], row: dict[str, Any]) -> Tri:
    """missing: [names]: none of them is installed or listed in job.software.packages."""
    if st.ctx.installed is None:
        st.reasons.append("the environment's packages were not read")
        return None
    return all(canonicalize_name(p) not in st.ctx.installed and canonicalize_name(p) not in st.ctx.required
               for p in value)


def cond_not_installed(st: _State, value: list[str], row: dict[str, Any]) -> Tri:
    """not_installed: [names]: none of them is installed in the inspected environment (so it will be installed)."""
    if st.ctx.installed is None:
        st.reasons.append("the environment's packages were not read")
        return None
    return all(canonicalize_name(p) not in st.ctx.installed for p in value)


def _some_gpu(st: _State, test: Callable[[tuple[int, int]], bool], what: str) -> Tri:
    """True if some GPU's CC passes `test`; None if none does but a CC is unknown or there are no GPU facts."""
    gpus = st.ctx.gpus
    if gpus is None:
        st.reasons.append(f"cannot tell whether {what}: {st.ctx.gpu_gap}")
        return None
    if not gpus:   # an observed absence: NVML found no driver or no GPU
        return False
    known = [c for c in (_cc(g) for g in gpus) if c is not None]
    hits = [c for c in known if test(c)]
    if hits:
        st.versions["cc"] = ", ".join(f"{a}.{b}" for a, b in hits)
        return True
    if len(known) < len(gpus):
        st.reasons.append(f"cannot tell whether {what}: a GPU's compute capability is unknown")
        return None
    return False


def cond_cc_below(st: _State, value: str, row: dict[str, Any]) -> Tri:
    """cc_below: "X.Y": some GPU has a compute capability below X.Y."""
    limit = _cc(value)
    return _some_gpu(st, lambda c: c < limit, f"a GPU is below compute capability {value}")


def cond_cc_at_least(st: _State, value: str, row: dict[str, Any]) -> Tri:
    """cc_at_least: "X.Y": some GPU has a compute capability of X.Y or more."""
    limit = _cc(value)
    return _some_gpu(st, lambda c: c >= limit, f"a GPU is at compute capability {value} or above")


def cond_cc_in(st: _State, value: list[str], row: dict[str, Any]) -> Tri:
    """cc_in: ["8.*", "9.0"]: some GPU's compute capability matches one of these (X.* = any minor)."""
    return _some_gpu(st, lambda c: any(_cc_matches(c, p) for p in value), f"a GPU is compute capability {value}")


def cond_cc_not_in(st: _State, value: list[str], row: dict[str, Any]) -> Tri:
    """cc_not_in: ["8.*", "9.0"]: some GPU's compute capability matches none of these (X.* = any minor)."""
    return _some_gpu(st, lambda c: not any(_cc_matches(c, p) for p in value),
                     f"a GPU is outside compute capability {value}")


def cond_torch_cuda(st: _State, value: str, row: dict[str, Any]) -> Tri:
    """torch_cuda: specifier on torch's CUDA build (e.g. ">=12.8"); a CPU-only build does not match."""
    if not st.ctx.torch_known:
        st.reasons.append("torch's CUDA build is unknown (no torch facts)")
        return None
    st.versions["torch_cuda"] = str(st.ctx.torch_cuda)
    return False if st.ctx.torch_cuda is None else _in(st.ctx.torch_cuda, value)


def cond_platform(st: _State, value: list[str], row: dict[str, Any]) -> Tri:
    """platform: [linux, win32, darwin]: the host's sys.platform is one of these."""
    if st.ctx.os is None:
        st.reasons.append("the host's operating system is unknown")
        return None
    return st.ctx.os in value


def cond_platform_not(st: _State, value: list[str], row: dict[str, Any]) -> Tri:
    """platform_not: [linux, win32]: the host's sys.platform is none of these."""
    if st.ctx.os is None:
        st.reasons.append("the host's operating system is unknown")
        return None
    st.versions["platform"] = st.ctx.os
    return st.ctx.os not in value


def job_holds(conditions: dict[str, Any] | list[dict[str, Any]], ctx: Context) -> bool:
    """Job conditions, from the profile (never unknown: a key the job does not set does not hold). A list is any-of;
    in a mapping every key must hold: job.workload keys list their allowed values, `build_extensions: true` reads
    job.software, `uses: [packages]` means the job lists one of them in job.software.packages, and
    `needs: {package: version}` means "the job's own floor for that package is at least version"."""
    if isinstance(conditions, list):
        return any(job_holds(c, ctx) for c in conditions)
    for key, allowed in conditions.items():
        if key == "needs":
            for pkg, version in allowed.items():
                low = floor(ctx.required.get(canonicalize_name(pkg)))
                if low is None or low < Version(str(version)):
                    return False
        elif key == "uses":
            if not any(canonicalize_name(p) in ctx.required for p in allowed):
                return False
        elif key == "build_extensions":
            if bool(ctx.software.get("build_extensions")) is not bool(allowed):
                return False
        elif ctx.workload.get(key) not in allowed:
            return False
    return True


def cond_job(st: _State, value: Any, row: dict[str, Any]) -> Tri:
    """job: {workload key: [values], needs: {pkg: ver}, uses: [pkgs], build_extensions: bool} or a list (any-of)."""
    return job_holds(value, st.ctx)


def cond_nvcc_below(st: _State, value: str, row: dict[str, Any]) -> Tri:
    """nvcc_below: "X.Y": there is no nvcc, or its CUDA version is below X.Y (a source build cannot proceed)."""
    if not st.ctx.nvcc_known:
        st.reasons.append("whether nvcc is installed is unknown (no toolchain facts)")
        return None
    st.versions["nvcc"] = st.ctx.nvcc or "not found"
    if st.ctx.nvcc is None:
        return True
    try:
        return Version(st.ctx.nvcc) < Version(value)
    except InvalidVersion:
        st.reasons.append(f"nvcc version {st.ctx.nvcc!r} cannot be compared")
        return None


def cond_nvcc(st: _State, value: str, row: dict[str, Any]) -> Tri:
    """nvcc: specifier: nvcc is installed and its CUDA version is in this range."""
    if not st.ctx.nvcc_known:
        st.reasons.append("nvcc's version is unknown (no toolchain facts)")
        return None
    st.versions["nvcc"] = st.ctx.nvcc or "not found"
    return False if st.ctx.nvcc is None else _in(st.ctx.nvcc, value)


# --- the generated binaries table (scripts/refresh/packages.py) -------------------------------------------------

_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def _platform_candidates(st: _State, release: dict[str, Any]) -> list[str] | None:
    """The wheel platforms of `release` this host may be: exact when OS and machine are known, else every
    platform of the release for that OS; None (undecided) when the OS is unknown."""
    if st.ctx.os is None:
        st.reasons.append("the host's operating system is unknown")
        return None
    plats = set(release.get("binaries") or {}) | set(release.get("wheels") or [])
    prefix = st.ctx.os + "-"
    if st.ctx.machine:
        m = _MACHINES.get(st.ctx.machine.lower(), st.ctx.machine.lower())
        if st.ctx.os != "linux" and m == "aarch64":
            m = "arm64"
        return [prefix + m]
    return sorted(p for p in plats if p.startswith(prefix)) or [prefix + "?"]


def _release(st: _State, pkg: str) -> dict[str, Any] | None:
    """The binaries-table entry for the installed release of pkg, or None with a reason."""
    table = ((load("known_issues").get("binaries") or {}).get(pkg)) or {}
    releases = table.get("releases") or {}
    how, what = presence(st, canonicalize_name(pkg))
    if how != "installed":
        if how in ("required", "implied"):
            st.reasons.append(f"{pkg} is not installed yet: its binaries are judged once pip has chosen a release")
        elif how == "unknown":
            st.reasons.append(f"whether {pkg} is installed is unknown")
        return None
    st.versions[pkg] = str(what)
    try:
        v = Version(str(what))
    except InvalidVersion:
        st.reasons.append(f"{pkg} {what} is not a version doctor can compare")
        return None
    key = next((k for k in releases if Version(k) == Version(v.base_version) or Version(k) == v), None)
    if key is None:
        known = sorted(releases, key=Version)
        span = f"{known[0]}..{known[-1]}" if known else "none"
        st.reasons.append(f"{pkg} {what} is not in doctor's binaries table (releases {span}; regenerate it with "
                          "scripts/refresh_data.py packages)")
        return None
    return releases[key]


def _cuda_key(st: _State) -> str | None | bool:
    if not st.ctx.torch_known:
        st.reasons.append("torch's CUDA build is unknown (no torch facts)")
        return None
    if st.ctx.torch_cuda is None:
        return False
    parts = str(st.ctx.torch_cuda).split(".")
    st.versions["torch_cuda"] = str(st.ctx.torch_cuda)
    return ".".join(parts[:2])


def _fold(results: list[Tri]) -> Tri:
    """All candidate platforms agree -> that answer; else undecided."""
    if results and all(r is True for r in results):
        return True
    if results and all(r is False for r in results):
        return False
    return None


def _binaries(st: _State, pkg: str) -> "tuple[str, dict[str, Any], list[str]] | Tri":
    """(torch's CUDA key, the installed release's row, the host's wheel platforms), or the answer when one of
    them settles the condition already (False: a CPU-only torch; None: something unknown)."""
    cuda = _cuda_key(st)
    if cuda is None or cuda is False:
        return cuda
    rel = _release(st, pkg)
    if rel is None:
        return None
    plats = _platform_candidates(st, rel)
    if plats is None:
        return None
    return cuda, rel, plats


def cond_no_binary_for_torch_cuda(st: _State, value: str, row: dict[str, Any]) -> Tri:
    """no_binary_for_torch_cuda: pkg: the installed release's wheel for this platform ships no binary for torch's
    CUDA major.minor (generated `binaries` table; judged on the PyPI wheels, a source build is not distinguished)."""
    ctx = _binaries(st, value)
    if not isinstance(ctx, tuple):
        return ctx
    cuda, rel, plats = ctx
    answers: list[Tri] = []
    for plat in plats:
        built = (rel.get("binaries") or {}).get(plat)
        answers.append(None if built is None else cuda not in built)
    verdict = _fold(answers)
    if verdict is None:
        st.reasons.append(f"which {value} wheel this host uses, or what it holds, is not known ({', '.join(plats)})")
    st.versions["platform"] = ", ".join(plats)
    st.versions["first_fixed"] = _first_release_with(value, plats, cuda) or "no release in doctor's table"
    return verdict


def _first_release_with(pkg: str, plats: list[str], cuda: str) -> str | None:
    releases = ((load("known_issues").get("binaries") or {}).get(pkg) or {}).get("releases") or {}
    for version in sorted(releases, key=Version):
        if all(cuda in ((releases[version].get("binaries") or {}).get(p) or {}) for p in plats):
            return version
    return None


def _covered(cc: tuple[int, int], archs: list[int], ptx: str) -> Tri:
    """A cubin for sm_XY runs on CC X.Z (Z >= Y); PTX of the highest target could JIT on a newer CC."""
    if any(a // 10 == cc[0] and a % 10 <= cc[1] for a in archs):
        return True
    top = max(archs)
    if (cc[0] * 10 + cc[1]) < top:
        return False  # PTX never runs on an older CC, and no cubin fits
    return {"none": False, "present": True}.get(ptx)


def cond_binary_lacks_gpu_arch(st: _State, value: str, row: dict[str, Any]) -> Tri:
    """binary_lacks_gpu_arch: pkg: the binary the installed release loads for torch's CUDA holds no code for some
    GPU's compute capability (cubin of the same major and an equal or lower minor, or PTX where shipped)."""
    ctx = _binaries(st, value)
    if not isinstance(ctx, tuple):
        return ctx
    cuda, rel, plats = ctx
    gpus = st.ctx.gpus
    if gpus is None:
        st.reasons.append(f"cannot tell which GPUs {value} must run on: {st.ctx.gpu_gap}")
        return None
    if not gpus:   # NVML observed no GPU: no binary has to run on one
        return False
    answers: list[Tri] = []
    for plat in plats:
        built = (rel.get("binaries") or {}).get(plat)
        if built is None:
            answers.append(None)
            continue
        if cuda not in built:
            answers.append(False)  # no binary at all: the other row says so
            continue
        archs = built[cuda]
        if archs is None:
            answers.append(None)
            continue
        st.versions["archs"] = ", ".join(f"sm_{a}" for a in archs)
        ptx = rel.get("ptx")
        ptx = ptx.get(plat, "unknown") if isinstance(ptx, dict) else (ptx or "unknown")
        per_gpu = [None if _cc(g) is None else _covered(_cc(g), archs, ptx) for g in gpus]
        bad = [g for g, ok in zip(gpus, per_gpu) if ok is False]
        if bad:
            st.versions["cc"] = ", ".join(sorted(set(str(b) for b in bad)))
            answers.append(True)
        elif any(ok is None for ok in per_gpu):
            answers.append(None)
        else:
            answers.append(False)
    verdict = _fold(answers)
    if verdict is None:
        st.reasons.append(f"which GPU code {value} {st.versions.get(value, '')} holds for CUDA {cuda} on this host "
                          "is not fully known (an unknown platform, arch list, PTX or compute capability)")
    return verdict


CONDITIONS: dict[str, Callable[[_State, Any, dict[str, Any]], Tri]] = {
    "packages": cond_packages, "missing": cond_missing, "not_installed": cond_not_installed,
    "cc_below": cond_cc_below, "cc_at_least": cond_cc_at_least, "cc_in": cond_cc_in, "cc_not_in": cond_cc_not_in,
    "torch_cuda": cond_torch_cuda, "platform": cond_platform, "platform_not": cond_platform_not,
    "job": cond_job, "nvcc_below": cond_nvcc_below, "nvcc": cond_nvcc,
    "no_binary_for_torch_cuda": cond_no_binary_for_torch_cuda,
    "binary_lacks_gpu_arch": cond_binary_lacks_gpu_arch,
}
ROW_KEYS = {"id", "verdict", "summary", "fix", "commands", "url", "sources", "fail_when_job", "verified_through",
            "implies", "spec", "unconfirmed", "note"}


def _and(a: Tri, b: Tri) -> Tri:
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


def judge(row: dict[str, Any], ctx: Context, implied: dict[str, str]) -> tuple[Tri, _State]:
    """Three-valued AND of a row's conditions (in the order written; a False stops early)."""
    st = _State(ctx, implied)
    result: Tri = True
    for key, value in row.items():
        if key in ROW_KEYS:
            continue
        if key not in CONDITIONS:
            raise KeyError(f"known_issues row {row.get('id')}: unknown condition {key!r}")
        result = _and(result, CONDITIONS[key](st, value, row))
        if result is False:
            return False, st
    for pkg, last in (row.get("verified_through") or {}).items():
        seen = st.package_versions.get(canonicalize_name(pkg))
        try:
            newer = seen is not None and Version(seen) > Version(str(last))
        except InvalidVersion:
            newer = False
        if result is True and newer:
            st.reasons.append(f"{pkg} {seen} is newer than the last release whose source doctor read ({last})")
            result = None
    return result, st


def implications(ctx: Context, table: dict[str, Any] | None = None) -> tuple[dict[str, str], list[Hit]]:
    """The packages the job implies ({name: specifier}) and a hit for each implied package that is neither
    installed nor listed in job.software.packages (or an undecided hit where that cannot be told)."""
    table = table or load("known_issues")
    implied: dict[str, str] = {}
    hits: list[Hit] = []
    for entry in table.get("implies") or []:
        name = canonicalize_name(entry["implies"])
        holds, st = judge(entry, ctx, {})
        if holds is False:
            continue
        if holds is True:
            implied[name] = entry.get("spec", "")
        if name in ctx.required or (ctx.installed is not None and name in ctx.installed):
            continue
        if ctx.installed is None:
            st.reasons.append(f"whether {entry['implies']} is installed is unknown")
            holds = None
        verdict = entry["verdict"] if holds is True else "undecided"
        hits.append(Hit(entry, verdict, st.versions, tuple(st.reasons)))
    return implied, hits


def evaluate(ctx: Context, table: dict[str, Any] | None = None) -> list[Hit]:
    """Every hit for this context: implied-but-missing packages first, then the rows that apply or are undecided."""
    table = table or load("known_issues")
    implied, hits = implications(ctx, table)
    for row in table.get("rows") or []:
        holds, st = judge(row, ctx, implied)
        if holds is False:
            continue
        if holds is None:
            hits.append(Hit(row, "undecided", st.versions, tuple(st.reasons)))
            continue
        verdict = row["verdict"]
        if verdict == "warn" and "fail_when_job" in row and job_holds(row["fail_when_job"], ctx):
            verdict = "fail"
        hits.append(Hit(row, verdict, st.versions))
    return hits
