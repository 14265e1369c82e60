"""A fake `pynvml` put first on PYTHONPATH by tests: the one NVML seam, driven by $FAKE_NVML.

raise   -> nvmlInit raises NVMLError(9) (driver not loaded)
hang    -> nvmlInit never returns
partial -> 2 GPUs; GPU 1's memory and compute capability raise NVMLError(3) (not supported)
"""
import os
import time


class NVMLError(Exception):
    def __init__(self, value):
        self.value = value
        super().__init__({3: "Not Supported", 9: "Driver Not Loaded"}.get(value, "Unknown Error"))


MODE = os.environ.get("FAKE_NVML", "partial")


class _Mem:
    def __init__(self, total):
        self.total, self.used, self.free = total, 600 * 2**20, total - 600 * 2**20


class _Pci:
    def __init__(self, i):
        self.busId = ("00000000:%02X:00.0" % (0x17 + i)).encode()


def nvmlInit():
    if MODE == "raise":
        raise NVMLError(9)
    if MODE == "hang":
        while True:
            time.sleep(3600)


def nvmlShutdown():
    pass


def nvmlSystemGetDriverVersion():
    return "570.124.06"


def nvmlSystemGetCudaDriverVersion_v2():
    return 12080


def nvmlDeviceGetCount():
    return 2


def nvmlDeviceGetHandleByIndex(i):
    return i


def nvmlDeviceGetName(h):
    return "NVIDIA A800-SXM4-80GB"


def nvmlDeviceGetUUID(h):
    return "GPU-fake-%d" % h


def nvmlDeviceGetPciInfo(h):
    return _Pci(h)


def nvmlDeviceGetMemoryInfo(h):
    if h == 1:
        raise NVMLError(3)
    return _Mem(81920 * 2**20)


def nvmlDeviceGetCudaComputeCapability(h):
    if h == 1:
        raise NVMLError(3)
    return (8, 0)


def nvmlDeviceGetMigMode(h):
    raise NVMLError(3)
