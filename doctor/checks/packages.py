"""Python packages: the job's version floors, known incompatibilities, and compiled extensions that
must load against this torch."""
from __future__ import annotations

from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from doctor.known_issues import Context, evaluate
from doctor.model import Remediation, Result, errored, failed, passed, skipped, warned
from doctor.registry import check

from .common import compute_capability, devices


def installed(facts: dict[str, Any]) -> dict[str, str]:
    """Canonical distribution name -> version, from the inspected interpreter."""
    return {canonicalize_name(k): v for k, v in ((facts.get("python") or {}).get("distributions") or {}).items()}


def requirements(packages: dict[str, str] | None) -> dict[str, str]:
    """The job's packages as canonical name -> specifier ('' = any version)."""
    return {canonicalize_name(k): (v or "").strip() for k, v in (packages or {}).items()}


def pip_line(name: str, spec: str) -> str:
    return f"pip install '{name}{spec}'" if spec else f"pip install {name}"


@check("python.version", needs=("python",), binds={"spec": "job.software.python"})
def python_version(facts: dict[str, Any], *, spec: str) -> Result:
    """The inspected interpreter's version satisfies the job's Python specifier.

    Why: wheels exist per Python version; a job pinned to packages without wheels for this Python
    fails at install or import, or silently builds from source.
    Fix: create the environment with a Python the job supports (e.g. `conda create -n job python=3.11`).
    """
    version = facts["python"].get("version")
    try:
        ok = Version(version) in SpecifierSet(spec)
    except (InvalidVersion, InvalidSpecifier, TypeError):
        return failed(f"cannot compare Python {version!r} with the job's specifier {spec!r}")
    if ok:
        return passed(f"Python {version} satisfies {spec}")
    return failed(f"Python {version}; the job needs {spec}",
                  Remediation(f"Create an environment with a Python that satisfies {spec} and install the job there.",
                              (f"conda create -n job 'python{spec}'",)))


@check("packages.required", needs=("python",), binds={"packages": "job.software.packages"})
def packages_required(facts: dict[str, Any], *, packages: dict[str, str]) -> Result:
    """Every package the job names is installed at a version its specifier admits.

    Why: a floor missed by one minor version (Qwen3-VL needs transformers >= 4.57) surfaces only when the
    model class is imported, after the job has queued, downloaded and allocated.
    Fix: install the listed specifiers into the inspected environment (the exact pip line is given).
    """
    if not isinstance((facts.get("python") or {}).get("distributions"), dict):
        return errored("could not decide: the snapshot does not list the environment's installed packages")
    have = installed(facts)
    missing, wrong, ok, bad, odd = [], [], [], [], []
    for name, spec in requirements(packages).items():
        try:
            specifier = SpecifierSet(spec)
        except InvalidSpecifier:
            bad.append(f"{name}: {spec!r}")
            continue
        version = have.get(name)
        if version is None:
            missing.append((name, spec))
            continue
        try:
            fits = not specifier or Version(version) in SpecifierSet(spec, prereleases=True)
        except InvalidVersion:
            odd.append(f"{name} {version!r}")
            continue
        if fits:
            ok.append(f"{name} {version}" + (f" ({spec})" if spec else ""))
        else:
            wrong.append((name, spec, version))
    if bad:
        return failed(f"the job lists invalid version specifiers: {', '.join(bad)}", None,
                      "expected PEP 440 specifiers such as '>=4.57.0'")
    if not missing and not wrong and odd:
        return errored(f"could not decide: installed version(s) doctor cannot compare: {', '.join(odd)}", *ok)
    if not missing and not wrong:
        return passed(f"{len(ok)} required packages satisfied", *ok)
    parts = [f"{n} is not installed (needs {s or 'any version'})" for n, s in missing]
    parts += [f"{n} {v} does not satisfy {s}" for n, s, v in wrong]
    line = "pip install " + " ".join(f"'{n}{s}'" for n, s, *_ in [*missing, *wrong])
    return failed("; ".join(parts), Remediation("Install the job's packages into the inspected environment.",
                                                (line,)), *ok)


OS_NAMES = {"linux": "linux", "windows": "win32", "darwin": "darwin"}


def known_issue_context(facts: dict[str, Any], packages: dict[str, str] | None, workload: dict[str, Any] | None,
                        build_extensions: bool | None = None) -> Context:
    """The facts the known-issue rows read. A section or key the snapshot lacks stays unknown (None), never empty."""
    python = facts.get("python")
    dists = (python or {}).get("distributions") if isinstance(python, dict) else None
    installed_pkgs = {canonicalize_name(k): v for k, v in dists.items()} if isinstance(dists, dict) else None
    gpu = facts.get("gpu")
    gpus: list[str | None] | None = None
    gap = "there are no GPU facts (the gpu probe did not run or failed)"
    if isinstance(gpu, dict) and isinstance(gpu.get("devices"), list):
        devs = devices(gpu)
        if devs:
            gpus = [compute_capability(facts, d)[0] for d in devs]
        elif gpu.get("available") is False and gpu.get("reason"):
            gpus = []   # NVML answered: no driver or no GPU; a GPU condition is then simply false
        else:
            gap = "the GPU facts list no device and no reason NVML found none"
    elif isinstance(gpu, dict):
        gap = "the GPU facts hold no device list"
    torch = facts.get("torch") if isinstance(facts.get("torch"), dict) else None
    torch_known = torch is not None and ("cuda_build" in torch or torch.get("installed") is False)
    host = facts.get("host") if isinstance(facts.get("host"), dict) else {}
    tc = facts.get("toolchain") if isinstance(facts.get("toolchain"), dict) else None
    nvcc_fact = (tc or {}).get("nvcc")
    nvcc_known = isinstance(nvcc_fact, dict) and "version" in nvcc_fact   # version null: nvcc not found or broken
    nvcc = nvcc_fact.get("version") if nvcc_known else None
    return Context(installed=installed_pkgs, required=requirements(packages), gpus=gpus, gpu_gap=gap,
                   torch_known=torch_known, torch_cuda=(torch or {}).get("cuda_build") if torch_known else None,
                   os=OS_NAMES.get(str(host.get("os") or "").lower()), machine=host.get("machine"),
                   nvcc_known=nvcc_known, nvcc=nvcc, workload=dict(workload or {}),
                   software={"build_extensions": bool(build_extensions)})


@check("packages.known_issues",
       binds={"packages": "job.software.packages", "workload": "job.workload",
              "build_extensions": "job.software.build_extensions"})
def packages_known_issues(facts: dict[str, Any], *, packages: dict[str, str] | None = None,
                          workload: dict[str, Any] | None = None, build_extensions: bool = False) -> Result:
    """No known-incompatible package, package pair or package-GPU pairing (doctor/data/known_issues.yaml), for
    the packages installed, listed by the job, or implied by it (QLoRA/nf4/int8 -> bitsandbytes,
    flash_attention_2/3 -> flash-attn / flash-attn-3, awq -> the AWQ stack transformers uses).

    Why: AutoAWQ imports fail beside transformers 4.57 (which Qwen3-VL needs); FlashAttention-2 and LLM.int8()
    refuse older GPUs; a bitsandbytes release with no binary for torch's CUDA version falls back to CPU or fails
    at the first quantized layer. Each of these fails at the first forward pass, not at install.
    Fix: the remediation of each row names the successor, the upgrade or the attention fallback. A row whose facts
    are missing (no GPU facts, unknown package version or platform) is reported as could-not-decide.
    """
    ctx = known_issue_context(facts, packages, workload, build_extensions)
    hits = evaluate(ctx)
    if not hits:
        return passed("no known incompatibility among the installed packages, the GPUs and the job")
    decided = [h for h in hits if h.verdict in ("fail", "warn")]
    open_ = [h for h in hits if h.verdict == "undecided"]
    details = []
    for h in decided:
        details.append(f"[{h.verdict}] {h.row['id']}: {h.summary()}")
        details.extend(f"    source: {s}" for s in h.row.get("sources", []))
    for h in open_:
        details.append(f"[undecided] {h.row['id']}: could not decide: {'; '.join(h.reasons)}")
    fails = [h for h in decided if h.verdict == "fail"]
    if fails or (decided and not open_):
        worst = fails[0] if fails else decided[0]
        fixes = " ".join(f"{h.row['id']}: {h.row['fix']}" for h in decided)
        commands = tuple(dict.fromkeys(c for h in decided for c in h.row.get("commands", [])))
        remedy = Remediation(fixes, commands, worst.row.get("url"))
        summary = "; ".join(h.summary() for h in decided)
        if open_:
            summary += f" (and {len(open_)} known issue(s) could not be decided: see details)"
        return (failed if fails else warned)(summary, remedy, *details)
    summary = "could not decide: " + "; ".join(f"{h.row['id']} ({'; '.join(h.reasons)})" for h in open_)
    if decided:
        summary += "; also: " + "; ".join(h.summary() for h in decided)
    return errored(summary, *details)


@check("packages.compiled", needs=("python", "torch"))
def packages_compiled(facts: dict[str, Any]) -> Result:
    """Compiled CUDA extensions (flash-attn, mamba-ssm, causal-conv1d) import against this torch, and
    DeepSpeed's prebuilt ops are listed.

    Why: these wheels are built for one torch ABI; upgrading torch afterwards gives `undefined symbol`
    at the first import inside the training script.
    Fix: rebuild the extension against the installed torch (`pip install --no-build-isolation
    --force-reinstall <pkg>==<version>`) or install a wheel built for this torch/CUDA pair.
    """
    torch = facts["torch"]
    exts = torch.get("extensions")
    ds = (facts["python"].get("deepspeed_ops") or {})
    if exts is None and not torch.get("version"):
        return skipped("torch did not import, so compiled extensions were not tried; see torch.installed")
    exts = exts or {}
    details = [f"{d} {e['version']}: {e['module']} " + ("imports" if e["ok"] else f"fails: {e['error']}")
               for d, e in exts.items()]
    if ds.get("installed_ops") is not None:
        built = sorted(k for k, v in ds["installed_ops"].items() if v)
        details.append(f"deepspeed {ds.get('version')}: prebuilt ops {', '.join(built) or 'none'} "
                       "(others are JIT-compiled at first use; see toolchain.cuda)")
    broken = {d: e for d, e in exts.items() if not e["ok"]}
    if broken:
        cmds = tuple(f"pip install --no-build-isolation --force-reinstall '{d}=={e['version']}'"
                     for d, e in broken.items())
        return failed(f"{', '.join(broken)} fail to import against {torch.get('version')}: "
                      + "; ".join(e["error"] for e in broken.values()),
                      Remediation("Rebuild each broken extension against the installed torch (needs nvcc; see "
                                  "toolchain.cuda), or install a wheel built for this torch and CUDA.", cmds),
                      *details)
    if not exts and ds.get("installed_ops") is None:
        return passed("no compiled CUDA extension package is installed (flash-attn, mamba-ssm, causal-conv1d, "
                      "deepspeed)")
    return passed(f"{len(exts)} compiled extensions import against torch {torch.get('version')}", *details)
