"""Run by the inspected interpreter: print torch's build and CUDA state as JSON.

Standalone (imports nothing of doctor): the inspected environment need not have doctor.
Prints one JSON line per stage, so a hang in CUDA init still leaves the import facts.
"""
import json
import os
import sys
import time


def emit(stage, data):
    sys.stdout.write(json.dumps({"stage": stage, "data": data}) + "\n")
    sys.stdout.flush()


# Compiled extensions built against one torch ABI; importing them after `import torch` is how a
# mismatch ("undefined symbol") shows. distribution -> (its Python package, extension module).
EXTENSIONS = {"flash-attn": ("flash_attn", "flash_attn_2_cuda"), "mamba-ssm": ("mamba_ssm", "selective_scan_cuda"),
              "causal-conv1d": ("causal_conv1d", "causal_conv1d_cuda")}


def extensions():
    import importlib
    import importlib.util
    from importlib import metadata

    out = {}
    for dist, (package, module) in EXTENSIONS.items():
        if importlib.util.find_spec(package) is None:  # cheap; metadata lookups scan every path entry
            continue
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = None
        t0 = time.perf_counter()
        entry = {"version": version, "module": module, "ok": True, "error": None}
        try:
            importlib.import_module(module)
        except Exception as exc:  # ImportError, OSError (undefined symbol), RuntimeError
            entry["ok"] = False
            entry["error"] = ("%s: %s" % (type(exc).__name__, exc))[:400]
        entry["import_s"] = round(time.perf_counter() - t0, 3)
        out[dist] = entry
    return out


def main():
    t0 = time.perf_counter()
    try:
        import torch
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            emit("import", {"installed": False})
            return
        emit("import", {"installed": True, "import_error": "%s: %s" % (type(exc).__name__, exc)})
        return
    except Exception as exc:  # a broken install is a finding
        emit("import", {"installed": True, "import_error": "%s: %s" % (type(exc).__name__, exc)})
        return
    arch_flags = None
    try:
        arch_flags = torch._C._cuda_getArchFlags()  # compiled arch list; needs no driver
    except Exception:
        pass
    mps_built = False
    try:
        mps_built = bool(torch.backends.mps.is_built())
    except Exception:
        pass
    cudnn = None
    try:
        cudnn = torch.backends.cudnn.version() if torch.version.cuda else None
    except Exception:
        pass
    emit("import", {
        "installed": True,
        "version": torch.__version__,
        "location": getattr(torch, "__file__", None),
        "cuda_build": torch.version.cuda,
        "hip_build": getattr(torch.version, "hip", None),
        "cudnn_version": cudnn,
        "mps_built": mps_built,
        "arch_flags": arch_flags.split() if arch_flags else [],
        "import_s": round(time.perf_counter() - t0, 3),
    })
    t1 = time.perf_counter()
    runtime = {"is_available": False, "device_count": 0, "devices": []}
    try:
        runtime["is_available"] = bool(torch.cuda.is_available())
        runtime["device_count"] = torch.cuda.device_count() if runtime["is_available"] else 0
        for i in range(runtime["device_count"]):
            p = torch.cuda.get_device_properties(i)
            runtime["devices"].append({
                "ordinal": i, "name": p.name, "total_memory_bytes": p.total_memory,
                "memory_source": "torch.cuda.get_device_properties",
                "compute_capability": "%d.%d" % (p.major, p.minor),
                "uuid": str(getattr(p, "uuid", "")) or None,
                "pci_bus_id": getattr(p, "pci_bus_id", None),
            })
        if runtime["is_available"]:
            try:
                runtime["bf16_hardware"] = bool(torch.cuda.is_bf16_supported(including_emulation=False))
            except TypeError:  # torch < 2.3 has no including_emulation
                runtime["bf16_hardware"] = None
            x = torch.ones(8, device="cuda:0")  # a real context and kernel launch
            runtime["smoke_test"] = {"ok": float((x + 1).sum().item()) == 16.0, "device": 0}
    except Exception as exc:
        runtime["error"] = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    runtime["init_s"] = round(time.perf_counter() - t1, 3)
    emit("runtime", runtime)
    emit("extensions", extensions())


def exit_now(code):
    """Leave without interpreter teardown once the output is flushed: unloading torch (and a CUDA context)
    costs 0.4-0.7 s that the check would wait for, and the kernel releases the process's memory, files and
    GPU context at exit anyway. Nothing this script writes lives in a buffer os._exit would lose."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":
    try:
        main()
        emit("done", {})   # all said: doctor need not wait for the exit (doctor/probes/torch_env.py LAST_LINE)
    except SystemExit as exc:
        exit_now(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
    except BaseException:
        import traceback

        traceback.print_exc()
        exit_now(1)
    exit_now(0)
