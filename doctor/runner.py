"""Judge a facts snapshot against a profile: run checks in profile order, purely (no file, no probe)."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from .errors import InputError
from .facts import MissingSection, gpu_absence, section
from .model import NO_GPU, NOT_ASKED, Report, Result, errored, skipped
from .profile import Profile
from .registry import CheckSpec, Registry

def params_for(spec: CheckSpec, entry: dict[str, Any], profile: Profile) -> tuple[dict[str, Any], list[str]]:
    """Parameter values: the check entry's params, else the bound profile keys, else defaults.
    Returns (values, missing required parameters described by their profile key)."""
    explicit = entry.get("params") or {}
    values: dict[str, Any] = {}
    missing = []
    for name, param in spec.params.items():
        if name in explicit:
            values[name] = explicit[name]
            continue
        key = spec.binds.get(name)
        found, value = profile.value(key) if key else (False, None)
        if found:
            values[name] = value
        elif param.required:
            missing.append(key or f"checks[{spec.id}].params.{name}")
    return values, missing


def _no_gpu(facts: dict[str, Any]) -> Result | None:
    """The declared "needs a GPU": skip where there is none; undecided where that is not known."""
    absent = gpu_absence(facts)
    if absent is None:
        return None
    known, why = absent
    if known:
        return skipped(f"{NO_GPU} ({why}); see gpu.present", cause=NO_GPU)
    return errored(f"could not decide: {why}; see gpu.present")


def run_check(spec: CheckSpec, entry: dict[str, Any], facts: dict[str, Any], profile: Profile) -> Result:
    t0 = time.perf_counter()
    values, missing = params_for(spec, entry, profile)
    if missing:
        result = skipped(f"profile '{profile.name}' sets no {', '.join(missing)}", cause=NOT_ASKED)
    else:
        try:
            for name in spec.needs:
                section(facts, name)  # raises MissingSection: skip, or error if its probe failed
            result = (_no_gpu(facts) if spec.needs_gpu else None) or spec.func(facts, **values)
        except MissingSection as exc:
            result = errored(exc.reason) if exc.is_error else skipped(exc.reason)
        except InputError as exc:   # the profile's values (or a file it names) cannot be judged: said, not guessed
            result = errored(f"could not decide: {exc}")
        except Exception as exc:  # a check bug must not pass silently
            result = errored(f"check crashed: {type(exc).__name__}: {exc}")
    result = _apply_severity(result, entry.get("severity"))
    return dataclasses.replace(result, check_id=spec.id, duration_s=time.perf_counter() - t0)


def _apply_severity(result: Result, severity: str | None) -> Result:
    from .model import Status

    if severity == "warn" and result.status is Status.FAIL:
        return dataclasses.replace(result, status=Status.WARN, summary=result.summary + " (severity lowered to warn by the profile)")
    if severity == "fail" and result.status is Status.WARN:
        return dataclasses.replace(result, status=Status.FAIL, summary=result.summary + " (severity raised to fail by the profile)")
    return result


def _scrubbed(result: Result, secrets: list[str]) -> Result:
    """The result with secrets removed from every text it carries (profiles and facts may hold URLs with tokens)."""
    from .model import Remediation
    from .secrets import scrub

    rem = result.remediation
    if rem is not None:
        rem = Remediation(scrub(rem.text, secrets), tuple(scrub(c, secrets) for c in rem.commands),
                          scrub(rem.url, secrets) if rem.url else rem.url)
    return dataclasses.replace(result, summary=scrub(result.summary, secrets),
                               details=tuple(scrub(d, secrets) for d in result.details), remediation=rem)


def judge(facts: dict[str, Any], profile: Profile, registry: Registry,
          keep: Callable[[str], bool] = lambda _id: True) -> dict[str, Result]:
    """Each check of the profile that `keep` accepts, judged once: check id -> Result (secrets scrubbed)."""
    from .secrets import env_secrets

    secrets = env_secrets()
    return {entry["id"]: _scrubbed(run_check(registry.checks[entry["id"]], entry, facts, profile), secrets)
            for entry in profile.checks if keep(entry["id"])}


def report(facts: dict[str, Any], profile: Profile, registry: Registry, judged: dict[str, Result],
           strict: bool = False, notes: list[str] | None = None) -> Report:
    """The Report: plugin load errors first, then the judged checks in profile order."""
    from .secrets import env_secrets, scrub, scrub_obj

    results = [dataclasses.replace(
        errored(f"plugin entry point '{err.entry_point}' from package '{err.package}' failed to import: {err.message}"),
        check_id=f"plugin.{err.entry_point}") for err in registry.load_errors]
    results += [judged[entry["id"]] for entry in profile.checks if entry["id"] in judged]
    secrets = env_secrets()
    return Report(profile.name, profile.refs, results, scrub_obj(facts, secrets),
                  [scrub(n, secrets) for n in notes or []], strict)


def evaluate(facts: dict[str, Any], profile: Profile, registry: Registry, strict: bool = False,
             notes: list[str] | None = None) -> Report:
    """Judge every check of the profile and report."""
    return report(facts, profile, registry, judge(facts, profile, registry), strict, notes)
