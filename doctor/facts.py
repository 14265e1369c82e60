"""Facts snapshots: collect (probe once), save, load (judge many times)."""
from __future__ import annotations

import datetime as _dt
import json
import socket
from typing import Any

from . import __version__
from .errors import InputError
from .interpreter import Interpreter

SCHEMA_VERSION = "1.4"
SECTIONS = ("host", "gpu", "python", "torch", "resources", "disk", "hf", "toolchain", "network", "kernel", "env", "bench")
OPTIONAL = ("bench",)   # absent by design when the bench phase did not run; any other absent section is unknown


class MissingSection(Exception):
    """A check needs a section the snapshot lacks; `reason` says why."""

    def __init__(self, section: str, reason: str, is_error: bool):
        self.section, self.reason, self.is_error = section, reason, is_error
        super().__init__(reason)


def context(target: Interpreter, paths: dict[str, str] | None = None, offline: bool = False) -> Any:
    from .probing import ProbeContext

    return ProbeContext(target, dict(paths or {}), offline)


def start(target: Interpreter, timeouts: dict[str, float] | None = None,
          names: list[str] | None = None, paths: dict[str, str] | None = None, offline: bool = False) -> Any:
    """Start the probes now (a ProbeRun); pass `run.collect()` to `assemble` later."""
    from .probing import ProbeRun

    return ProbeRun(context(target, paths, offline), names, timeouts)


def collect(target: Interpreter, timeouts: dict[str, float] | None = None,
            names: list[str] | None = None, paths: dict[str, str] | None = None,
            offline: bool = False) -> dict[str, Any]:
    """Run the probes and return a JSON-native snapshot."""
    return assemble(target, *start(target, timeouts, names, paths, offline).collect())


def assemble(target: Interpreter, sections: dict[str, Any], records: dict[str, Any]) -> dict[str, Any]:
    """The snapshot: schema version, provenance, probe records, then one key per section; no secrets in it."""
    from .secrets import scrub_obj

    snapshot: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "provenance": {
            "doctor_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "hostname": socket.gethostname(),
            "redacted": False,
            "inspected_python": target.to_dict(),
        },
        "probes": records,
    }
    snapshot.update(sections)
    return scrub_obj(snapshot)


def section(facts: dict[str, Any], name: str) -> dict[str, Any]:
    """The section `name`, or MissingSection saying why it is absent."""
    data = facts.get(name)
    if isinstance(data, dict):
        return data
    record = (facts.get("probes") or {}).get(name)
    if record and record.get("status") in ("error", "timeout"):
        raise MissingSection(name, f"the {name} probe failed: {record.get('message')}", True)
    if name in OPTIONAL:
        raise MissingSection(name, f"the facts snapshot has no '{name}' section", False)
    raise MissingSection(name, f"could not decide: the facts snapshot has no '{name}' section", True)


def gpu_absence(facts: dict[str, Any]) -> tuple[bool, str] | None:
    """Is there no GPU to judge? None when there is one (NVML lists it, or CUDA sees one through torch);
    (True, NVML's reason) when NVML says there is none and CUDA sees none; (False, why) when NVML lists no
    device but does not say there is none: then whether there is a GPU is unknown."""
    gpu = facts.get("gpu") if isinstance(facts.get("gpu"), dict) else {}
    runtime = ((facts.get("torch") or {}).get("runtime") or {})
    if gpu.get("devices") or (runtime.get("is_available") and runtime.get("device_count")):
        return None
    if gpu.get("available") is False:
        return True, str(gpu.get("reason") or "NVML reports no device")
    return False, "the facts list no GPU device and no reason NVML found none"


def redacted(facts: dict[str, Any], ids: Any = None) -> dict[str, Any]:
    """A copy without host and user names, IP addresses or GPU identifiers (`ids`: a shared redact.Ids)."""
    from .redact import Ids, redact

    out = redact(facts, ids=ids if ids is not None else Ids())
    out["provenance"].pop("hostname", None)
    out["provenance"]["redacted"] = True
    return out


def dump(facts: dict[str, Any]) -> str:
    return json.dumps(facts, indent=2, sort_keys=False) + "\n"


def load(path: str) -> dict[str, Any]:
    """Read a saved snapshot (or a JSON report embedding one); bad input is an InputError (bounded: size,
    nesting, string length, no NaN)."""
    from .loading import FACTS_BYTES, read_json

    data = read_json(path, FACTS_BYTES, "`doctor facts` snapshot (JSON)")
    if isinstance(data, dict) and isinstance(data.get("facts"), dict) and "results" in data:
        data = data["facts"]  # a JSON report: re-judge the facts it embeds
    validate(data, path)
    return data


def validate(data: Any, source: str) -> None:
    """Structural check of a snapshot: what the judges rely on, with a one-line message."""
    if not isinstance(data, dict):
        raise InputError(source, None, "expected a JSON object (a `doctor facts` snapshot)")
    version = data.get("schema_version")
    if not isinstance(version, str):
        raise InputError(source, "schema_version", "missing; expected a string such as \"1.0\"")
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise InputError(source, "schema_version",
                         f"is {version!r}; this doctor reads schema {SCHEMA_VERSION.split('.')[0]}.x")
    for name in SECTIONS:
        if name in data and not isinstance(data[name], dict):
            raise InputError(source, name, f"expected an object, got {type(data[name]).__name__}")
    probes = data.get("probes", {})
    if not isinstance(probes, dict):
        raise InputError(source, "probes", "expected an object of probe records")
    gpu = data.get("gpu")
    if isinstance(gpu, dict) and not isinstance(gpu.get("devices", []), list):
        raise InputError(source, "gpu.devices", "expected a list")
    _check_types(data, source)


def _types_only(node: Any, record: bool = False) -> Any:
    """The facts schema without `required` and closed objects: a snapshot may lack any fact (then the checks
    that need it cannot decide) or carry facts a newer doctor added, but what it has must have its type. The
    items of an array are records (an Xid event, a mount): those keep their required keys, since a record
    without its key is garbage rather than an unknown."""
    if isinstance(node, dict):
        out = {k: _types_only(v, record=k == "items") for k, v in node.items() if k != "required" or record}
        if out.get("additionalProperties") is False:
            out.pop("additionalProperties")
        return out
    if isinstance(node, list):
        return [_types_only(v) for v in node]
    return node


def _check_types(data: dict[str, Any], source: str) -> None:
    """Every fact present has the type the checks read it as (doctor/schemas/facts.schema.json); the first one
    that does not is bad input, named by its key path."""
    from importlib import resources

    import jsonschema

    schema = _types_only(json.loads(resources.files("doctor").joinpath("schemas", "facts.schema.json")
                                    .read_text(encoding="utf-8")))
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or None
        shown = repr(error.instance)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        expected = error.validator_value if error.validator in ("type", "enum", "const") else error.validator
        if error.validator == "minimum":
            expected = f"at least {error.validator_value}"
        raise InputError(source, where, f"is {shown}; expected {expected} (doctor's facts schema)")
    for i, dev in enumerate((data.get("gpu") or {}).get("devices") or []):
        mem = dev.get("memory") if isinstance(dev, dict) else None
        total, used = (mem.get("total_bytes"), mem.get("used_mib")) if isinstance(mem, dict) else (None, None)
        if isinstance(total, int) and isinstance(used, int) and used * 2**20 > total:
            raise InputError(source, f"gpu.devices.{i}.memory.used_mib",
                             f"is {used}; expected at most the total ({total / 2**20:.0f} MiB)")
