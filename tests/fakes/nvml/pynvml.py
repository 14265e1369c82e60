"""A fake `pynvml` put first on PYTHONPATH by tests: the one NVML seam, driven by $FAKE_NVML.

raise   -> nvmlInit raises NVMLError(9) (driver not loaded)
hang    -> nvmlInit never returns
partial -> 2 GPUs; GPU 1's memory and compute capability raise NVMLError(3) (not supported);
           GPU 0 healthy; GPU 1 has a pending row remap, 2 aggregate uncorrected ECC errors, NVLink 3 down
"""
import ctypes
import os
import time


class NVMLError(Exception):
    def __init__(self, value):
        self.value = value
        super().__init__({3: "Not Supported", 9: "Driver Not Loaded"}.get(value, "Unknown Error"))


MODE = os.environ.get("FAKE_NVML", "partial")
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_NVLINK_MAX_LINKS = 6


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


def nvmlDeviceGetEccMode(h):
    return (1, 1)


def nvmlDeviceGetTotalEccErrors(h, kind, counter):
    return 2 if (h == 1 and counter == NVML_AGGREGATE_ECC) else 0


def nvmlDeviceGetRetiredPagesPendingStatus(h):
    raise NVMLError(3)  # Ampere and later remap rows instead of retiring pages


def nvmlDeviceGetRemappedRows(h):
    return (0, 0, 0, 0) if h == 0 else (0, 1, 1, 0)


def nvmlDeviceGetCurrentClocksEventReasons(h):
    return 0x1  # GPU idle


def nvmlDeviceGetCurrPcieLinkGeneration(h):
    return 1  # an idle GPU drops its link generation by design


def nvmlDeviceGetMaxPcieLinkGeneration(h):
    return 4


def nvmlDeviceGetCurrPcieLinkWidth(h):
    return 16


def nvmlDeviceGetMaxPcieLinkWidth(h):
    return 16


def nvmlDeviceGetNvLinkState(h, link):
    if link >= 4:
        raise NVMLError(2)
    return 0 if (h == 1 and link == 3) else 1


class c_nvmlGpuFabricInfo_t(ctypes.Structure):  # noqa: N801 (nvidia-ml-py's name and layout, abridged)
    _fields_ = [("status", ctypes.c_uint), ("state", ctypes.c_uint8)]


def nvmlDeviceGetGpuFabricInfo(h, info):   # the caller passes the structure to fill, as in nvidia-ml-py
    raise NVMLError(3)


def nvmlDeviceGetPersistenceMode(h):
    return 1


def nvmlDeviceGetComputeRunningProcesses(h):
    return []


class _Util:
    gpu = 0


def nvmlDeviceGetUtilizationRates(h):
    return _Util()
