"""Profiles: find, parse (yaml.safe_load), validate, compose with `extends` and repeated --profile."""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from .errors import InputError, did_you_mean
from .loading import CONFIG_BYTES, PROFILE_BYTES, read_text, read_yaml
from .profile_schema import SCHEMA, lookup, unknown_key, validate
from .registry import Registry, matches


@dataclass
class Profile:
    """A resolved profile: the composition of one or more YAML files."""

    name: str
    kind: str
    description: str
    data: dict[str, Any]
    refs: list[str] = field(default_factory=list)  # as given: names or paths
    sources: list[str] = field(default_factory=list)  # the files, in merge order

    @property
    def checks(self) -> list[dict[str, Any]]:
        return [c for c in self.data.get("checks", []) if c.get("enabled", True)]

    def value(self, dotted: str) -> tuple[bool, Any]:
        return lookup(self.data, dotted)

    def only(self, keep: Callable[[str], bool]) -> "Profile":
        """The same profile judging only the checks whose id `keep` accepts."""
        data = dict(self.data, checks=[c for c in self.data.get("checks", []) if keep(str(c.get("id", "")))])
        return Profile(self.name, self.kind, self.description, data, list(self.refs), list(self.sources))

    def storage_paths(self) -> dict[str, str]:
        """The job's storage plan as probe paths: 'storage.<name>' -> path."""
        _, storage = self.value("job.storage")
        return {f"storage.{k}": v["path"] for k, v in (storage or {}).items() if "path" in v}


def search_dirs() -> list[Path]:
    """$DOCTOR_PROFILE_PATH (os.pathsep-separated) first, then the profiles shipped in the wheel."""
    extra = [Path(p) for p in os.environ.get("DOCTOR_PROFILE_PATH", "").split(os.pathsep) if p]
    return extra + [Path(str(resources.files("doctor.profiles")))]


def available() -> dict[str, Path]:
    """name -> file, earlier search directories winning."""
    found: dict[str, Path] = {}
    for d in search_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")):
                found.setdefault(f.stem, f)
    return found


def locate(ref: str) -> Path:
    if ref.endswith((".yaml", ".yml")) or os.sep in ref or "/" in ref:
        path = Path(os.path.expanduser(ref))   # os.path's leaves ~unknown-user as it is (Path's raises)
        try:
            exists, regular = path.exists(), path.is_file()
        except (OSError, ValueError) as exc:   # a name too long for the filesystem, a loop of symlinks, a NUL
            raise InputError(ref, None, f"cannot open the profile file ({getattr(exc, 'strerror', None) or exc})"
                             ) from None
        if not exists:
            raise InputError(ref, None, "profile file not found")
        if not regular:
            raise InputError(ref, None, "is not a regular file; expected a YAML profile")
        return path
    names = available()
    if ref in names:
        return names[ref]
    raise InputError("--profile", None,
                     f"unknown profile '{ref}'; {did_you_mean(ref, names)}available: {', '.join(sorted(names))}")


def read(path: Path) -> dict[str, Any]:
    """Parse one profile file (bounded: size, aliases, depth; yaml.safe_load); errors name the file and key."""
    data = read_yaml(path, PROFILE_BYTES, "YAML profile")
    if not isinstance(data, dict):
        raise InputError(str(path), "(top level)", f"expected a mapping of profile keys, got {type(data).__name__}")
    validate(data, SCHEMA, str(path))
    _check_gpu_models(data, str(path))
    return data


def _check_workload(data: dict[str, Any], source: str) -> None:
    """Knobs of job.workload that cannot hold together (the same rules as `doctor estimate`'s flags)."""
    from .vram.estimator import Workload
    from .vram.workload import PROFILE_KEYS, contradictions, workload_from_job

    found, job = lookup(data, "job")
    if not found or not isinstance(job, dict) or not job.get("workload"):
        return
    _, fields = workload_from_job(job)
    try:
        wl = Workload(**fields)
    except TypeError:
        return
    for flag, value, problem in contradictions(wl):
        key = PROFILE_KEYS.get(flag, flag.lstrip("-").replace("-", "_"))
        raise InputError(source, f"job.workload.{key}", f"{value}: " + problem.replace("--method ", "method ")
                         .replace("--quant ", "quantization ").replace("--seq", "sequence").replace("--dtype", "dtype")
                         .replace("--amp", "mixed_precision"))


def _check_gpu_models(data: dict[str, Any], source: str) -> None:
    """machine.gpu.models names rows of doctor's GPU table (matched by exact NVML name), never a pattern."""
    from . import refdata

    found, models = lookup(data, "machine.gpu.models")
    if not found:
        return
    names = [row["name"] for row in refdata.load("gpus")["gpus"]]
    for i, model in enumerate(models):
        if model not in names:
            raise InputError(source, f"machine.gpu.models[{i}]", f"{model!r} is not a GPU in doctor's table; "
                             f"{did_you_mean(model, names)}expected a name `doctor gpus` lists")


def validate_checks(data: dict[str, Any], source: str, registry: Registry) -> None:
    """Every check id exists, every parameter is known and of the right type."""
    for i, entry in enumerate(data.get("checks", [])):
        base = f"checks[{i}]"
        if "id" not in entry:
            raise InputError(source, base, "missing 'id'; expected a check id such as gpu.model")
        spec = registry.checks.get(entry["id"])
        if spec is None:
            raise InputError(source, f"{base}.id", f"unknown check '{entry['id']}'; "
                             f"{did_you_mean(entry['id'], registry.checks)}see `doctor checks`")
        for name, value in (entry.get("params") or {}).items():
            param = spec.params.get(name)
            if param is None:
                raise unknown_key(source, f"{base}.params.{name}", name, sorted(spec.params))
            if not matches(value, param.type):
                raise InputError(source, f"{base}.params.{name}",
                                 f"expected {param.type_name()}, got {type(value).__name__} {value!r}")
            if name.endswith("_pct") and isinstance(value, (int, float)) and not 0 <= value < 100:
                raise InputError(source, f"{base}.params.{name}", f"is {value!r}; expected a percentage from 0 to "
                                                                  "under 100")


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Mappings deep-merge; `checks` merge by id (later wins, order of first appearance)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if key == "extends":
            continue
        if key == "checks":
            out["checks"] = merge_checks(out.get("checks", []), value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_checks(base: list[dict[str, Any]], top: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id = {c["id"]: copy.deepcopy(c) for c in base}
    order = [c["id"] for c in base]
    for entry in top:
        cid = entry["id"]
        if cid in by_id:
            by_id[cid] = merge(by_id[cid], entry)
        else:
            by_id[cid] = copy.deepcopy(entry)
            order.append(cid)
    return [by_id[c] for c in order]


MAX_EXTENDS = 32   # parents of one profile, and profiles in one chain of `extends`


def _resolve(ref: str, registry: Registry, stack: tuple[str, ...], sources: list[str], offline: bool | None = True,
             memo: dict[str, tuple[dict[str, Any], dict[str, Any]]] | None = None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the profile merged over everything it extends, the file's own data). Each file is read and resolved
    once per load (`memo`), so a diamond of `extends` costs its number of files, not 2**depth."""
    memo = {} if memo is None else memo
    path = locate(ref)
    key = str(path.resolve())
    if key in stack:
        raise InputError(str(path), "extends", f"cycle: {' -> '.join(Path(s).stem for s in stack + (key,))}")
    if key in memo:
        return memo[key]
    if len(stack) >= MAX_EXTENDS:
        raise InputError(str(path), "extends", f"a chain of more than {MAX_EXTENDS} profiles; expected a shallow one")
    data = read(path)
    parents = data.get("extends", [])
    if len(parents) > MAX_EXTENDS:
        raise InputError(str(path), "extends", f"lists {len(parents)} profiles; expected at most {MAX_EXTENDS}")
    validate_checks(data, str(path), registry)
    _attach_deepspeed_config(data, path)
    if offline is not None:
        _attach_model_config(data, path, offline)
    merged: dict[str, Any] = {}
    for parent in dict.fromkeys(parents):   # a parent named twice adds nothing the second time
        if not re.fullmatch(r"[\w.\-/~]+", parent):
            raise InputError(str(path), "extends", f"{parent!r} is not a profile name")
        merged = merge(merged, _resolve(_beside(parent, path), registry, stack + (key,), sources, offline,
                                        memo)[0])
    if str(path) not in sources:
        sources.append(str(path))
    own = {k: v for k, v in data.items() if k not in ("kind", "description")}
    memo[key] = (merge(merged, own), data)
    return memo[key]


def _beside(parent: str, path: Path) -> str:
    """A relative path in `extends` read from the profile's own folder, as job.deepspeed.config and a model path
    are (the working directory's file where the folder has none: how it was read before); names stay names."""
    if not (parent.endswith((".yaml", ".yml")) or "/" in parent) or os.path.isabs(os.path.expanduser(parent)):
        return parent
    here = path.parent / parent
    try:
        return str(here) if here.is_file() else parent
    except (OSError, ValueError):
        return parent


def _attach_deepspeed_config(data: dict[str, Any], path: Path) -> None:
    """Read the DeepSpeed config a job names (relative to the profile file) into the profile,
    so checks stay pure. Whether it parses is the check's finding, not a loading error."""
    found, ref = lookup(data, "job.deepspeed.config")
    if not found:
        return
    expected = "expected a path to a DeepSpeed JSON config, relative to this profile"
    if not isinstance(ref, str):
        raise InputError(str(path), "job.deepspeed.config", f"is {ref!r}; {expected}")
    try:
        file = (path.parent / os.path.expanduser(ref)).resolve()
        is_file = file.is_file()
    except (OSError, RuntimeError, ValueError) as exc:   # ENAMETOOLONG, a symlink loop, an embedded NUL
        why = getattr(exc, "strerror", None) or str(exc)
        raise InputError(str(path), "job.deepspeed.config", f"cannot be opened ({why}); {expected}") from None
    if not is_file:
        raise InputError(str(path), "job.deepspeed.config", f"{file} is not a file; {expected}")
    text = read_text(file, CONFIG_BYTES, "DeepSpeed JSON config")
    from .loading import load_json

    config = load_json(text, str(file))   # not JSON, or past the bounds: bad input, exit 2
    if not isinstance(config, dict):
        raise InputError(str(file), None, "expected a JSON object (a DeepSpeed config)")
    data["job"]["deepspeed"]["loaded"] = {"path": str(file), "text": text}


ATTACHED = ("loaded", "resolved_config")   # what loading adds to a profile (file contents), never written by hand


def _attach_model_config(data: dict[str, Any], path: Path, offline: bool) -> None:
    """Read the config.json of the model a job names (a built-in name, a path relative to this profile, or a Hub
    id from the Hugging Face cache, downloaded unless offline) into the profile, so the VRAM check stays pure.
    A name or path that cannot be a model is bad input; a Hub config that is not here is recorded, and the
    check that needs it says it could not decide."""
    from .vram.catalogue import load_config
    from .vram.workload import workload_from_job

    found, job = lookup(data, "job")
    if not found or not isinstance(job, dict) or not isinstance(job.get("workload"), dict):
        return
    model, _ = workload_from_job(job)
    if not model:
        return
    where = model
    local = path.parent / os.path.expanduser(model)
    try:
        here = local.exists()
    except (OSError, ValueError) as exc:   # a name too long, an embedded NUL: no such model
        why = getattr(exc, "strerror", None) or exc
        raise InputError(str(path), "job.workload.model", f"{model!r} cannot be a path ({why}); expected a built-in "
                         "name, a config.json path or a Hub id") from None
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", model) or here:
        where = str(local) if (model.endswith(".json") or here) else model
    try:
        cfg, source = load_config(where, offline)
        attached: dict[str, Any] = {"model": model, "config": cfg, "source": source}
        if where != model or here:   # a file beside the profile: printed commands name it from anywhere
            attached["path"] = str(Path(source).resolve())
    except InputError as exc:
        if re.fullmatch(r"[\w.-]+/[\w.-]+", model) and not here:   # a Hub id whose config is not here
            attached = {"model": model, "error": exc.expected}
        else:
            raise InputError(str(path), "job.workload.model", f"{model!r}: {exc.expected}") from None
    job["workload"]["resolved_config"] = attached


def load(refs: list[str], registry: Registry, offline: bool | None = True) -> Profile:
    """Resolve and compose profiles in order (e.g. a machine profile, then a job profile). A job's model
    config is read now (from the Hub too, unless `offline`; not at all when `offline` is None, for commands
    that judge nothing about the model), so that judging reads no file."""
    sources: list[str] = []
    merged: dict[str, Any] = {}
    kinds, descriptions = [], []
    memo: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for ref in refs:
        resolved, head = _resolve(ref, registry, (), sources, offline, memo)
        merged = merge(merged, resolved)
        kinds.append(head.get("kind", "machine"))
        descriptions.append(head.get("description", ""))
    # the merged workload, its DeepSpeed file's settings included: a child's key may complete its parent's
    _check_workload(merged, " + ".join(refs))
    name = " + ".join(Path(r).stem if r.endswith((".yaml", ".yml")) else r for r in refs)
    kind = "machine" if "machine" in kinds else kinds[0]
    return Profile(name, kind, " / ".join(d for d in descriptions if d), merged, list(refs), sources)


def pick_machine_profile(gpu_names: list[str]) -> str | None:
    """The machine profile whose GPU models include every detected GPU, each found in doctor's GPU table by its
    exact NVML name (never a job profile; a GPU the table lacks matches no profile)."""
    from . import refdata

    rows = [refdata.gpu_spec(n) for n in gpu_names]
    if not rows or any(r is None for r in rows):
        return None
    matches_: list[str] = []
    for name, path in available().items():
        try:
            data = read(path)
        except InputError:
            continue
        found, models = lookup(data, "machine.gpu.models")
        if data.get("kind") == "machine" and found and all(r["name"] in models for r in rows):
            matches_.append(name)
    return sorted(matches_)[0] if matches_ else None
