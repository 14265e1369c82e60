"""Check marker and registry. Built-in checks and plugins load through one entry-point group."""
from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from .model import Result

GROUP = "doctor.checks"
OWN_DISTRIBUTION = "preflight-doctor"
BUILTIN_MODULES = ("doctor.checks.gpu", "doctor.checks.torch_stack", "doctor.checks.gpu_health",
                   "doctor.checks.packages", "doctor.checks.toolchain", "doctor.checks.resources",
                   "doctor.checks.storage", "doctor.checks.network", "doctor.checks.env", "doctor.checks.job_config",
                   "doctor.checks.vram", "doctor.checks.bench", "doctor.checks.fleet",
                   "doctor.checks.baseline")
_MISSING = object()


@dataclass(frozen=True)
class Param:
    """A keyword-only check parameter, read from the function signature."""

    name: str
    type: Any
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def type_name(self) -> str:
        return type_name(self.type)


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return f"a list of {type_name(arg)}"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def matches(value: Any, tp: Any) -> bool:
    """Does a YAML value fit the annotation? (bool is not an int here; an int is a number.)"""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(matches(v, arg) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:   # dict[str, Any] and other parameterised generics: the container type
        return isinstance(value, origin)
    return isinstance(value, tp)


@dataclass(frozen=True)
class CheckSpec:
    """A registered check: id, the facts sections it needs, its parameters and profile bindings."""

    id: str
    func: Callable[..., Result]
    needs: tuple[str, ...]
    binds: dict[str, str]
    params: dict[str, Param] = field(default_factory=dict)
    origin: str = ""
    needs_gpu: bool = False   # judged only where a GPU is known: the runner skips it (one cause) when there is none

    @property
    def doc(self) -> dict[str, str]:
        return parse_doc(self.func.__doc__ or "")


def parse_doc(doc: str) -> dict[str, str]:
    """Split a check docstring into what / why / fix."""
    text = inspect.cleandoc(doc)
    parts = re.split(r"^(Why|Fix):\s*", text, flags=re.M)
    out = {"what": parts[0].strip()}
    for label, body in zip(parts[1::2], parts[2::2]):
        out[label.lower()] = " ".join(body.split())
    return out


def check(check_id: str, needs: tuple[str, ...] = (), binds: dict[str, str] | None = None, needs_gpu: bool = False
          ) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Mark `func(facts, *, params...)` as check `check_id`.

    `needs` names the facts sections it reads (a missing one makes it undecided, or skipped when optional).
    `binds` maps a parameter to a profile key path (e.g. "machine.gpu.model") that supplies
    its value unless the profile's check entry sets it explicitly. `needs_gpu`: the check judges GPUs; where
    NVML found none (and CUDA sees none) the runner skips it with the cause "no NVIDIA GPU", so the body
    only meets machines that have one, or where whether they have one is unknown.
    """

    def mark(func: Callable[..., Result]) -> Callable[..., Result]:
        hints = typing.get_type_hints(func)
        params = {}
        for p in inspect.signature(func).parameters.values():
            if p.kind is p.KEYWORD_ONLY:
                params[p.name] = Param(p.name, hints.get(p.name, Any),
                                       _MISSING if p.default is p.empty else p.default)
        for name in binds or {}:
            if name not in params:
                raise TypeError(f"{check_id}: binds unknown parameter {name!r}")
        wanted = tuple(needs) + (("gpu",) if needs_gpu and "gpu" not in needs else ())
        func.__doctor_check__ = CheckSpec(check_id, func, wanted, dict(binds or {}), params,  # type: ignore[attr-defined]
                                          f"{func.__module__}.{func.__qualname__}", needs_gpu)
        return func

    return mark


@dataclass
class LoadError:
    entry_point: str
    package: str
    message: str


@dataclass
class Registry:
    checks: dict[str, CheckSpec] = field(default_factory=dict)
    load_errors: list[LoadError] = field(default_factory=list)

    def add_from(self, obj: Any) -> None:
        candidates = vars(obj).values() if isinstance(obj, types.ModuleType) else [obj]
        for item in candidates:
            spec = getattr(item, "__doctor_check__", None)
            if isinstance(spec, CheckSpec):
                if spec.id in self.checks and self.checks[spec.id].func is not spec.func:
                    raise ValueError(f"check id {spec.id!r} is defined twice "
                                     f"({self.checks[spec.id].origin} and {spec.origin})")
                self.checks[spec.id] = spec


_CACHE: Registry | None = None


def discover(refresh: bool = False) -> Registry:
    """Load every check from the `doctor.checks` entry-point group (sorted, built-ins first)."""
    global _CACHE
    if _CACHE is not None and not refresh:
        return _CACHE
    from importlib import import_module
    from importlib.metadata import entry_points

    reg = Registry()
    eps = sorted(entry_points(group=GROUP),
                 key=lambda ep: (_dist_name(ep) != OWN_DISTRIBUTION, _dist_name(ep), ep.name))
    if not any(_dist_name(ep) == OWN_DISTRIBUTION for ep in eps):
        for mod in BUILTIN_MODULES:  # running from a source tree that was never installed
            reg.add_from(import_module(mod))
    for ep in eps:
        try:
            reg.add_from(ep.load())
        except Exception as exc:
            reg.load_errors.append(LoadError(ep.name, _dist_name(ep) or ep.value, f"{type(exc).__name__}: {exc}"))
    _CACHE = reg
    return reg


def _dist_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else ""
