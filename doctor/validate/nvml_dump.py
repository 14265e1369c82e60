"""Every NVML call doctor's GPU probe makes, with what it returned or raised, plus clocks and power (read only).

Run as `python -m doctor.validate.nvml_dump` (doctor validate does, under a timeout, before and after the load):
prints one JSON document. A recording proxy stands in for `pynvml` at the probe's own seam, so the dump lists
exactly the fields the probe reads, which ones the GPU does not support, and what the probe made of them.
"""
from __future__ import annotations

import ctypes
import json
import sys
from typing import Any, Callable

NOT_SUPPORTED = 3  # NVML_ERROR_NOT_SUPPORTED
# Calls whose failure the probe expects and turns into data: nvmlInit's is the probe's `reason` (no driver,
# no library), and NvLink state raises for every link index past the GPU's link count.
EXPECTED_FAILURES = ("nvmlInit", "nvmlDeviceGetNvLinkState")


def plain(value: Any, depth: int = 0) -> Any:
    """A JSON-native copy of an NVML return value (ctypes structures become mappings)."""
    if depth > 4:
        return repr(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    fields = getattr(value, "_fields_", None)
    if fields:
        return {name: plain(getattr(value, name, None), depth + 1) for name, *_ in fields}
    if isinstance(value, ctypes.Array):
        return [plain(v, depth + 1) for v in value]
    attrs = {k: v for k, v in vars(value).items() if not k.startswith("_")} if hasattr(value, "__dict__") else None
    return {k: plain(v, depth + 1) for k, v in attrs.items()} if attrs else repr(value)


def _arg(value: Any) -> Any:
    return value if isinstance(value, (int, float, str)) else "<handle>"


class Recorder:
    """Wraps the pynvml module: each nvml* call is recorded as {call, args, result | error, not_supported}."""

    def __init__(self, module: Any):
        self._module = module
        self.calls: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._module, name)
        if not (name.startswith("nvml") and callable(attr)):
            return attr

        def call(*args: Any) -> Any:
            entry: dict[str, Any] = {"call": name, "args": [_arg(a) for a in args]}
            self.calls.append(entry)
            try:
                result = attr(*args)
            except Exception as exc:
                code = getattr(exc, "value", None)
                entry.update(error=f"{type(exc).__name__}: {exc}", code=code, not_supported=code == NOT_SUPPORTED)
                raise
            if name not in ("nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByUUID"):
                entry["result"] = plain(result)
            return result

        return call


def _read(out: dict[str, Any], label: str, fn: Callable[..., Any], *args: Any) -> None:
    try:
        out[label] = plain(fn(*args))
    except Exception as exc:
        code = getattr(exc, "value", None)
        out[label] = {"error": f"{type(exc).__name__}: {exc}", "not_supported": code == NOT_SUPPORTED}


def clocks_and_power(nvml: Any) -> list[dict[str, Any]]:
    """Per GPU: current, maximum and application clocks, power limits and draw, temperature, P-state."""
    out = []
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        row: dict[str, Any] = {"nvml_index": i}
        for clock in ("SM", "MEM", "GRAPHICS"):
            kind = getattr(nvml, f"NVML_CLOCK_{clock}", None)
            if kind is not None:
                _read(row, f"clock_{clock.lower()}_mhz", nvml.nvmlDeviceGetClockInfo, h, kind)
                _read(row, f"max_clock_{clock.lower()}_mhz", nvml.nvmlDeviceGetMaxClockInfo, h, kind)
                _read(row, f"applications_clock_{clock.lower()}_mhz", nvml.nvmlDeviceGetApplicationsClock, h, kind)
        _read(row, "power_limit_mw", nvml.nvmlDeviceGetPowerManagementLimit, h)
        _read(row, "enforced_power_limit_mw", nvml.nvmlDeviceGetEnforcedPowerLimit, h)
        _read(row, "default_power_limit_mw", nvml.nvmlDeviceGetPowerManagementDefaultLimit, h)
        _read(row, "power_usage_mw", nvml.nvmlDeviceGetPowerUsage, h)
        _read(row, "temperature_c", nvml.nvmlDeviceGetTemperature, h, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
        _read(row, "performance_state", nvml.nvmlDeviceGetPerformanceState, h)
        _read(row, "clocks_event_reasons", nvml.nvmlDeviceGetCurrentClocksEventReasons, h)
        out.append(row)
    return out


def dump(module: Any | None = None) -> dict[str, Any]:
    """The probe's view through the recorder, then the clock and power readings."""
    from ..probes import gpu

    try:
        nvml = module if module is not None else gpu.load_nvml()
    except ImportError as exc:
        return {"available": False, "reason": f"nvidia-ml-py is not importable: {exc}", "calls": []}
    recorder = Recorder(nvml)
    probe = gpu.collect(nvml_loader=lambda: recorder)
    doc: dict[str, Any] = {"probe": probe, "calls": recorder.calls,
                           "not_supported": sorted({c["call"] for c in recorder.calls if c.get("not_supported")}),
                           "errors": [c for c in recorder.calls if "error" in c and not c.get("not_supported")
                                      and c["call"] not in EXPECTED_FAILURES]}
    try:
        import importlib.metadata as md

        doc["nvidia_ml_py"] = md.version("nvidia-ml-py")
    except Exception:
        doc["nvidia_ml_py"] = None
    if probe.get("available"):
        try:
            nvml.nvmlInit()
            try:
                _read(doc, "nvml_version", nvml.nvmlSystemGetNVMLVersion)
                doc["clocks_power"] = clocks_and_power(nvml)
            finally:
                nvml.nvmlShutdown()
        except Exception as exc:
            doc["clocks_power_error"] = f"{type(exc).__name__}: {exc}"
    return doc


def main() -> int:
    sys.stdout.write(json.dumps(dump(), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
