"""doctor's benchmark worker, run by the inspected interpreter on one device.

Standalone (imports nothing of doctor): the job's environment need not have doctor installed.
Prints one JSON line per event on stdout: `progress` while it runs, `stage` with each stage's figures
as it finishes, so a hang or a crash still leaves the stages before it. Changes no GPU setting.
"""
import argparse
import json
import os
import platform
import sys
import time
import traceback


def emit(event, **data):
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


def progress(stage, label):
    emit("progress", stage=stage, label=label)


def classify(exc):
    text = "%s: %s" % (type(exc).__name__, exc)
    if isinstance(exc, ImportError):
        return "missing_dependency"
    if "out of memory" in text.lower():
        return "oom"
    if "CUDA" in text or "cuda" in type(exc).__module__:
        return "cuda"
    return "other"


def device_info(torch, device):
    info = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "python": platform.python_version(),
            "type": device.type}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        uuid = str(getattr(p, "uuid", "") or "")
        info.update(name=p.name, uuid=("GPU-" + uuid) if uuid and not uuid.startswith("GPU-") else (uuid or None),
                    compute_capability="%d.%d" % (p.major, p.minor), total_memory_bytes=p.total_memory,
                    sm_count=p.multi_processor_count, l2_bytes=getattr(p, "L2_cache_size", None),
                    bf16=p.major >= 8,  # bf16 tensor cores from compute capability 8.0 (Ampere)
                    visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
    else:
        info.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads(), bf16=True)
    return info


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=("cuda", "cpu"), required=True)
    ap.add_argument("--ordinal", type=int, default=0)
    ap.add_argument("--stages", default="matmul,bandwidth,hvp")
    ap.add_argument("--size", choices=("auto", "small", "full"), default="auto")
    ap.add_argument("--opt-config", required=True)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    progress("setup", "import torch")
    try:
        import torch
    except Exception as exc:
        emit("stage", stage="setup", error="%s: %s" % (type(exc).__name__, exc), kind="missing_dependency")
        return 0
    try:
        device = torch.device("cuda", args.ordinal) if args.device == "cuda" else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
            torch.ones(1, device=device).add_(1).item()  # create the context before timing anything
        info = device_info(torch, device)
    except Exception as exc:
        emit("stage", stage="setup", error="%s: %s" % (type(exc).__name__, exc), kind=classify(exc))
        return 0
    small = args.size == "small" or (args.size == "auto" and device.type == "cpu")
    info["size"] = "small" if small else "full"
    info["setup_s"] = round(time.perf_counter() - t0, 3)
    emit("stage", stage="setup", data=info)

    import bench_bandwidth
    import bench_hvp
    import bench_matmul

    total_mem = info.get("total_memory_bytes") or 0
    work = {
        "matmul": lambda: bench_matmul.run(
            device, ["fp16", "bf16"] if info.get("bf16") else ["fp16"],
            bench_matmul.CPU_SHAPES if small else bench_matmul.GPU_SHAPES, 0.05 if small else 0.15, progress),
        "bandwidth": lambda: bench_bandwidth.run(
            device, (64 << 20) if small else min(1 << 30, max(64 << 20, int(0.1 * torch.cuda.mem_get_info(device)[0]))),
            0.1 if small else 0.3, progress),
        "hvp": lambda: bench_hvp.run(
            device, args.opt_config, small, 1 if small else (4 if total_mem >= 20 * 2**30 else 1),
            32 if small else 512, 0.3 if small else 1.0, progress),
    }
    for stage in args.stages.split(","):
        t1 = time.perf_counter()
        try:
            data = work[stage]()
            data["duration_s"] = round(time.perf_counter() - t1, 3)
            emit("stage", stage=stage, data=data)
        except Exception as exc:
            emit("stage", stage=stage, error=("%s: %s" % (type(exc).__name__, exc))[:600], kind=classify(exc),
                 trace=traceback.format_exc(limit=3)[-800:])
        if device.type == "cuda":
            torch.cuda.empty_cache()
    emit("done", duration_s=round(time.perf_counter() - t0, 3))
    return 0


def exit_now(code):
    """Leave without interpreter teardown once the output is flushed: unloading torch and the CUDA context
    costs 0.4-0.7 s the bench phase would wait for, per device; the kernel releases the process's memory and
    GPU context at exit anyway, and every figure is already in the pipe."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":
    try:
        code = main()
    except SystemExit as exc:  # argparse: bad arguments
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    exit_now(code or 0)
