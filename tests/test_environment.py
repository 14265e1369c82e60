"""Environment probes and checks: cgroups from recorded files, Xid lines, loopback network servers,
a real HF cache layout, fake NVML health, env variables, toolchain, known-issue rules."""
from __future__ import annotations

import http.server
import json
import os
import socket
import threading
from pathlib import Path

import pytest
import factsbuilder as fb
from factsbuilder import GIB, autodl_box, edit

from doctor.model import Status

RECORDED_CGROUP = Path(__file__).parent / "facts" / "cgroup" / "v1-docker-unlimited"


# --- memory, cgroups, shm, ulimits -------------------------------------------------------------

def test_cgroup_v1_recorded_files_unlimited():
    from doctor.probes.resources import cgroup_cpus, cgroup_memory

    mem = cgroup_memory(RECORDED_CGROUP)
    assert mem["version"] == 1 and mem["limit_bytes"] is None and mem["usage_bytes"] > 0
    assert cgroup_cpus(RECORDED_CGROUP)["quota_cpus"] is None


def _v2(root: Path, files: dict[str, str]) -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text("0::/job/step\n")
    for rel, text in {"sys/fs/cgroup/cgroup.controllers": "cpu memory", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_cgroup_v2_effective_limit_is_the_smallest_on_the_path(tmp_path):
    """LITERAL v2 files: the job's own memory.max is 'max', its parent caps it at 100 GiB."""
    from doctor.probes.resources import cgroup_cpus, cgroup_memory

    root = _v2(tmp_path, {"sys/fs/cgroup/job/memory.max": str(100 * GIB),
                          "sys/fs/cgroup/job/step/memory.max": "max",
                          "sys/fs/cgroup/job/step/memory.current": str(3 * GIB),
                          "sys/fs/cgroup/job/step/cpu.max": "800000 100000"})
    mem = cgroup_memory(root)
    assert mem == {"version": 2, "limit_bytes": 100 * GIB, "source": str(root / "sys/fs/cgroup/job/memory.max"),
                   "usage_bytes": 3 * GIB, "inactive_file_bytes": None, "swap_limit_bytes": None, "swap_room_bytes": None,
                   "swap_unlimited": None}
    assert cgroup_cpus(root)["quota_cpus"] == 8.0


def test_cgroup_inactive_page_cache_is_read_and_not_counted_as_used(tmp_path):
    """LITERAL v2 memory.stat: 30 GiB used, 20 GiB of it inactive page cache (a model just downloaded): memory.ram
    counts the working set, 10 GiB, so 90 of the container's 100 GiB are available."""
    from doctor.checks.resources import effective_memory
    from doctor.probes.resources import cgroup_memory

    root = _v2(tmp_path, {"sys/fs/cgroup/job/memory.max": str(100 * GIB),
                          "sys/fs/cgroup/job/step/memory.current": str(30 * GIB),
                          "sys/fs/cgroup/job/step/memory.stat": f"anon {10 * GIB}\nfile {20 * GIB}\n"
                                                                f"active_file 0\ninactive_file {20 * GIB}\n"})
    mem = cgroup_memory(root)
    assert mem["inactive_file_bytes"] == 20 * GIB and mem["usage_bytes"] == 30 * GIB
    res = {"memory": {"host_total_bytes": 1024 * GIB, "host_available_bytes": 900 * GIB, "cgroup": mem}}
    assert effective_memory(res) == (100 * GIB, 100 * GIB, 90 * GIB)
    mem["inactive_file_bytes"] = None     # not read: the whole usage counts, as before facts 1.4
    assert effective_memory(res)[2] == 70 * GIB


@pytest.mark.parametrize("files, limit, room, unlimited", [
    ({"job/step/memory.swap.max": "max", "job/memory.swap.max": "max"}, None, None, True),
    # the parent caps the swap at 8 GiB, 3 GiB of it in use; the child's own 16 GiB leaves more room
    ({"job/memory.swap.max": str(8 * GIB), "job/memory.swap.current": str(3 * GIB),
      "job/step/memory.swap.max": str(16 * GIB), "job/step/memory.swap.current": str(3 * GIB)},
     8 * GIB, 5 * GIB, False),
    ({"job/step/memory.swap.max": "0"}, 0, None, False),     # capped, swap.current unreadable: room unknown
    ({}, None, None, None),                                  # no swap.max anywhere: swap accounting off
    ({"job/step/memory.swap.max": "max", "job/memory.swap.max": "lots"}, None, None, None),   # unreadable: unknown
])
def test_cgroup_v2_swap_along_the_path(tmp_path, files, limit, room, unlimited):
    """LITERAL v2 files: memory.swap.max / memory.swap.current at each level of the job's cgroup path."""
    from doctor.probes.resources import cgroup_memory

    root = _v2(tmp_path, {f"sys/fs/cgroup/{k}": v for k, v in files.items()})
    mem = cgroup_memory(root)
    assert (mem["swap_limit_bytes"], mem["swap_room_bytes"], mem["swap_unlimited"]) == (limit, room, unlimited)


def test_memory_judged_on_the_container_limit(recorded, judge):
    res = json.loads(json.dumps(recorded["resources"]))
    res["memory"]["cgroup"].update(limit_bytes=16 * GIB, usage_bytes=GIB)
    r = judge(edit(recorded, "cgroup limit 16 GiB", resources=res), "memory.ram", "autodl-a800")
    assert r.status is Status.FAIL and r.summary == "16.0 GiB effective (the container limit, not the host's RAM); the profile expects 100 GiB"
    r = judge(recorded, "memory.ram", "autodl-a800")  # this machine really has 23.5 GiB
    assert r.status is Status.FAIL and "expects 100 GiB" in r.summary
    assert judge(recorded, "memory.ram", "base").status is Status.PASS


def test_shm_docker_default_fails_with_workers_warns_without(recorded):
    from doctor.checks.resources import shm_size

    facts = edit(recorded, "64 MiB /dev/shm", resources={**recorded["resources"],
                 "shm": {"path": "/dev/shm", "total_bytes": 64 * 2**20, "free_bytes": 64 * 2**20}})
    r = shm_size(facts, workers=4)
    assert r.status is Status.FAIL and "64 MiB" in r.summary and "--ipc=host" in r.remediation.commands[0]
    assert shm_size(facts).status is Status.WARN
    assert shm_size(recorded, workers=4).status is Status.PASS  # 23.5 GiB here


def test_ulimits(recorded):
    from doctor.checks.resources import limits_ulimits

    res = {**recorded["resources"], "ulimits": {"nofile": [1024, 4096], "memlock_bytes": [65536, 65536]},
           "rdma_devices": ["mlx5_0"]}
    r = limits_ulimits(edit(recorded, "ulimits", resources=res))
    assert r.status is Status.WARN and "open files limit 1024" in r.summary and "RDMA" in r.summary
    assert limits_ulimits(recorded).status is Status.PASS


# --- kernel log / Xid ----------------------------------------------------------------------------

XID_LINES = [  # the NVRM formats of r535 and r570 drivers
    "[ 1234.5] NVRM: Xid (PCI:0000:17:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
    "NVRM: Xid (PCI:0000:18:00): 13, pid=4242, name=python, Graphics Exception: ESR 0x404600=0x80000001",
    "usb 1-1: new high-speed USB device number 2",
]


def test_xid_parsing_and_verdicts(tmp_path):
    from doctor.probes.kernel import collect, parse_xid

    events = parse_xid(XID_LINES)
    assert [(e["code"], e["pci"]) for e in events] == [(79, "17:00"), (13, "18:00")]
    log = tmp_path / "kern.log"
    log.write_text("\n".join(XID_LINES))
    data = collect(kmsg=str(tmp_path / "no-kmsg"), files=(str(log),))
    assert data["readable"] and data["source"] == str(log) and len(data["xid_events"]) == 2
    unreadable = collect(kmsg=str(tmp_path / "none"), files=(str(tmp_path / "none2"),))
    assert unreadable["readable"] is False and "none" in unreadable["reason"]


def test_gpu_xid_check(judge):
    from doctor.probes.kernel import parse_xid

    facts = fb.gpu_box(count=2)
    facts["kernel"] = {"readable": True, "source": "/dev/kmsg", "xid_events": parse_xid(XID_LINES)}
    r = judge(facts, "gpu.xid", "base")
    assert r.status is Status.FAIL
    assert "Xid 79 ×1 on GPU 0 (00000000:17:00.0" in r.summary and "fallen off the bus [fail]" in r.summary
    facts["kernel"]["xid_events"] = parse_xid(XID_LINES[1:])
    assert judge(facts, "gpu.xid", "base").status is Status.WARN
    facts["kernel"] = {"readable": False, "xid_events": [], "reason": "/dev/kmsg: Operation not permitted"}
    r = judge(facts, "gpu.xid", "base")
    assert r.status is Status.SKIP and "Operation not permitted" in r.summary


# --- GPU health through the fake NVML -----------------------------------------------------------

def test_health_from_fake_nvml_judged(monkeypatch, judge):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fake_pynvml", Path(__file__).parent / "fakes/nvml/pynvml.py")
    fake = importlib.util.module_from_spec(spec)
    monkeypatch.setenv("FAKE_NVML", "partial")
    spec.loader.exec_module(fake)
    from doctor.probes import gpu as gpu_probe

    facts = fb.gpu_box(count=2)
    facts["gpu"] = gpu_probe.collect(lambda: fake)
    h1 = facts["gpu"]["devices"][1]["health"]
    assert h1["row_remap"]["pending"] is True and h1["retired_pages_pending"] is None
    assert not any("retired" in e for e in facts["gpu"]["devices"][1]["errors"])  # "not supported" is no error
    remap = judge(facts, "gpu.memory_remap", "base")
    assert remap.status is Status.FAIL and remap.summary.startswith("GPU 1 (00000000:18:00.0, GPU-fake-1): row remap pending")
    assert remap.remediation.commands == ("nvidia-smi --gpu-reset -i 1  # as root, with no process on the GPU; or reboot the node",)
    assert judge(facts, "gpu.ecc", "base").status is Status.WARN
    nvlink = judge(facts, "gpu.nvlink", "base")
    assert nvlink.status is Status.FAIL and "link(s) 3 down of 4" in nvlink.summary
    assert judge(facts, "gpu.pcie", "base").status is Status.PASS  # gen 1 of 4 at idle is not judged
    assert judge(facts, "gpu.clocks", "base").status is Status.PASS  # idle reason ignored
    assert judge(facts, "gpu.fabric", "base").status is Status.SKIP
    assert judge(facts, "gpu.persistence", "base").status is Status.PASS


def test_health_findings_on_literal_facts(judge):
    facts = fb.gpu_box()
    h = fb.healthy()
    h.update(clocks_event_reasons=0x1 | 0x40, pcie={"gen_current": 4, "gen_max": 4, "width_current": 8, "width_max": 16},
             persistence_mode=False, processes=[{"pid": 77, "used_mib": 50000}],
             fabric={"state": 1, "status": 0})
    h["ecc"]["volatile_uncorrected"] = 3
    facts["gpu"]["devices"][0]["health"] = h
    expect = {"gpu.clocks": (Status.FAIL, "HW thermal slowdown"), "gpu.pcie": (Status.WARN, "x8 of x16"),
              "gpu.persistence": (Status.WARN, "off"), "gpu.processes": (Status.FAIL, "50000 MiB held by processes 77"),
              "gpu.fabric": (Status.FAIL, "not started"), "gpu.ecc": (Status.FAIL, "3 uncorrected ECC errors")}
    for cid, (status, text) in expect.items():
        r = judge(facts, cid, "base")
        assert r.status is status and text in r.summary, (cid, r)


def test_health_checks_skip_without_gpu_and_on_old_snapshots(recorded, judge):
    skip = judge(recorded, "gpu.ecc", "base")
    assert skip.status is Status.SKIP and skip.cause == "no NVIDIA GPU" and "libnvidia-ml.so.1" in skip.summary
    old = judge(fb.gpu_box(), "gpu.ecc", "base")        # a snapshot without health facts: undecided, not passed
    assert old.status is Status.ERROR and "no health facts" in old.summary


# --- environment variables ------------------------------------------------------------------------

@pytest.mark.parametrize("value,status,text", [
    ("4,5", Status.FAIL, "index 4 does not exist (2 GPUs: 0..1); the job sees no GPU"),
    ("0,7,1", Status.FAIL, "CUDA keeps only the 1 GPU(s) before it"),
    ("GPU-00000000-0000-0000-0000-000000000001", Status.PASS, "resolves"),
    ("GPU-0000", Status.FAIL, "matches several GPUs"),
    ("MIG-1234", Status.FAIL, "no GPU has MIG mode enabled"),
    ("0,0", Status.FAIL, "names a GPU twice"),
    ("", Status.FAIL, "set but empty, which hides every GPU"),
    ("abcd", Status.FAIL, "'abcd' matches no GPU UUID"),
    ("1", Status.PASS, "resolves"),
])
def test_cuda_visible_devices(value, status, text):
    from doctor.checks.env import env_cuda_visible_devices

    facts = fb.gpu_box(count=2)
    facts["env"] = {"variables": {"CUDA_VISIBLE_DEVICES": value}}
    r = env_cuda_visible_devices(facts)
    assert r.status is status and text in r.summary, r.summary


def test_mixed_gpus_need_pci_bus_order():
    from doctor.checks.env import env_cuda_visible_devices

    facts = fb.gpu_box(count=2)
    facts["gpu"]["devices"][1] = fb.nvml_device(1, "NVIDIA A100-SXM4-40GB", 40960)
    facts["env"] = {"variables": {}}
    r = env_cuda_visible_devices(facts)
    assert r.status is Status.WARN and r.remediation.commands == ("export CUDA_DEVICE_ORDER=PCI_BUS_ID",)
    facts["env"]["variables"]["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    assert env_cuda_visible_devices(facts).status is Status.PASS


@pytest.mark.parametrize("value,problem", [
    ("expandable_segments:True,max_split_size_mb:512", None),  # seed 003
    ("max_split_size_mb:32", None),  # seed 004
    ("expandable_segment:True", "unknown option 'expandable_segment'"),
    ("max_split_size_mb:16", "must be > 20"),
    ("garbage_collection_threshold:1.5", "between 0 and 1"),
    ("expandable_segments:yes", "not a valid value"),
    ("roundup_power2_divisions:[256:1,512:2,>:8],backend:native", None),
])
def test_alloc_conf(value, problem, recorded):
    from doctor.checks.env import env_alloc_conf

    r = env_alloc_conf(edit(recorded, "alloc conf", env={"variables": {"PYTORCH_CUDA_ALLOC_CONF": value}}))
    if problem:
        assert r.status is Status.FAIL and problem in r.summary
    else:
        assert r.status is Status.PASS, r.summary


def test_env_probe_reads_only_the_allow_list():
    from doctor.probes.env import collect

    data = collect({"HF_TOKEN": "hf_secret", "CUDA_VISIBLE_DEVICES": "0", "AWS_SECRET_ACCESS_KEY": "x",
                    "PIP_INDEX_URL": "https://user:tok@mirror.example/simple"})
    assert data["variables"] == {"CUDA_VISIBLE_DEVICES": "0", "PIP_INDEX_URL": "https://mirror.example/simple"}


# --- network against loopback servers -----------------------------------------------------------

@pytest.fixture
def servers():
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    ok = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=ok.serve_forever, daemon=True).start()
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(1)  # accepts, never answers
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    yield {"ok": f"http://127.0.0.1:{ok.server_address[1]}/", "hang": f"http://127.0.0.1:{hang.getsockname()[1]}/",
           "refused": f"http://127.0.0.1:{refused_port}/"}
    ok.shutdown()
    hang.close()


def test_reach_answers_refuses_hangs(servers):
    from doctor.probes.network import reach

    assert reach(servers["ok"], 2)["outcome"] == "ok"
    assert reach(servers["refused"], 2)["outcome"] == "refused"
    hung = reach(servers["hang"], 0.5)
    assert hung["outcome"] == "timeout" and hung["elapsed_s"] < 2


def test_network_probe_and_checks_on_loopback(servers, recorded, judge):
    from doctor.probes.network import collect

    net = collect({"HF_ENDPOINT": servers["hang"], "PIP_INDEX_URL": servers["ok"]}, timeout_s=0.5)
    assert net["hub"]["outcome"] == "timeout" and net["index"]["outcome"] == "ok"
    facts = edit(recorded, "network from loopback servers", network=net)
    r = judge(facts, "network.hub", "qwen3-vl-32b-qlora")
    assert r.status is Status.FAIL and "the job must download Qwen/Qwen3-VL-32B-Instruct" in r.summary
    assert r.remediation.commands == ("unset HF_ENDPOINT",)  # a custom endpoint is named, not replaced
    assert judge(facts, "network.pypi", "qwen3-vl-32b-qlora").status is Status.PASS
    net = collect({"PIP_INDEX_URL": servers["refused"]}, offline=False, timeout_s=0.5)
    p = judge(edit(recorded, "refused index", network=net), "network.pypi", "qwen3-vl-32b-qlora")
    assert p.status is Status.FAIL and "connection is refused" in p.summary
    off = collect({}, offline=True)
    assert judge(edit(recorded, "offline", network=off), "network.hub", "base").status is Status.SKIP


def test_pip_index_from_config_and_credentials_stripped(tmp_path):
    from doctor.probes.network import pip_index, safe_url

    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://pypi.tuna.tsinghua.edu.cn/simple\n")
    assert pip_index({"PIP_CONFIG_FILE": str(conf)}, home=str(tmp_path)) == (
        "https://pypi.tuna.tsinghua.edu.cn/simple", str(conf))
    assert pip_index({}, home=str(tmp_path))[1] in ("pip default", "/etc/pip.conf")
    assert safe_url("https://u:p@host:8443/simple") == "https://host:8443/simple"


# --- Hugging Face cache -------------------------------------------------------------------------

def _hf_repo(hub: Path, shards: list[str], present: list[str]) -> None:
    repo = hub / "models--org--m"
    sha = "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    snap = repo / "snapshots" / sha
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    files = {"config.json": "{}", "model.safetensors.index.json":
             json.dumps({"weight_map": {f"w{i}": s for i, s in enumerate(shards)}}), **{s: "x" * 10 for s in present}}
    for i, (name, text) in enumerate(files.items()):
        blob = repo / "blobs" / f"blob{i}"
        blob.write_text(text)
        os.symlink(os.path.relpath(blob, snap), snap / name)


def test_hf_probe_scans_a_real_cache_layout_and_model_cached_judges_it(tmp_path, recorded, judge):
    from doctor.probes.hf import collect

    hub = tmp_path / "hub"
    _hf_repo(hub, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],
             ["model-00001-of-00002.safetensors"])
    data = collect({"HF_HUB_CACHE": str(hub), "HF_HOME": str(tmp_path)})
    assert data["hf_hub_cache"] == str(hub) and data["hf_datasets_cache"] == str(tmp_path / "datasets")
    rev = data["hub"]["repos"][0]["revisions"][0]
    assert rev["missing_shards"] == ["model-00002-of-00002.safetensors"] and rev["has_config"]
    facts = edit(recorded, "hf section from a tmp cache", hf=data)
    job = tmp_path / "job.yaml"
    job.write_text("kind: job\nextends: [base]\njob:\n  workload:\n    model: org/m\n")
    r = judge(facts, "hf.model_cached", str(job))
    assert r.status is Status.WARN and "1 shards missing (model-00002-of-00002.safetensors)" in r.summary
    assert r.remediation.commands == ("hf download org/m",)
    assert judge(edit(facts, "offline", hf={**data, "offline": True}), "hf.model_cached", str(job)).status is Status.FAIL
    _hf_repo(tmp_path / "hub2", ["model-00001-of-00002.safetensors"], ["model-00001-of-00002.safetensors"])
    full = collect({"HF_HUB_CACHE": str(tmp_path / "hub2")})
    r = judge(edit(recorded, "complete cache", hf=full), "hf.model_cached", str(job))
    assert r.status is Status.PASS and "complete in the cache" in r.summary


def test_hf_locations_follow_the_libraries_precedence():
    from doctor.probes.hf import locations

    assert locations({"XDG_CACHE_HOME": "/x"})["hf_hub_cache"] == "/x/huggingface/hub"
    assert locations({"HF_HOME": "/d/hf", "HUGGINGFACE_HUB_CACHE": "/old"})["hf_hub_cache"] == "/old"
    assert locations({"HF_HOME": "/d/hf", "HF_HUB_CACHE": "/new", "HUGGINGFACE_HUB_CACHE": "/old"})["hf_hub_cache"] == "/new"
    assert locations({"HF_HOME": "/d/hf"})["hf_datasets_cache"] == "/d/hf/datasets"


# --- disk --------------------------------------------------------------------------------------

def test_disk_probe_places_paths_that_do_not_exist_yet(tmp_path):
    from doctor.probes.disk import collect

    data = collect({"storage.ckpt": str(tmp_path / "not" / "yet")}, {"HF_HOME": str(tmp_path / "hf")})
    entry = data["paths"]["storage.ckpt"]
    assert entry["exists"] is False and entry["probe_path"] == str(tmp_path) and entry["free_bytes"] > 0
    assert data["paths"]["hf_hub_cache"]["path"] == str(tmp_path / "hf" / "hub")


def test_disk_space_sums_per_filesystem_and_inodes(judge):
    facts = autodl_box(hf_home="/root/autodl-tmp/huggingface")
    facts["disk"]["mounts"][1].update(free_bytes=100 * GIB, inodes_free=50)
    r = judge(facts, "disk.space", "qwen3-vl-32b-qlora")
    # the plan: 67 GiB of model and data entries + 5 checkpoints of 6.40 GiB computed from the workload (LoRA r=64
    # adapter, 572,520,448 params x (4 B weights + 8 B AdamW states): tests/test_storage_checkpoints.py) = 99.0 GiB
    assert r.status is Status.WARN and "/root/autodl-tmp would be left with 1.0 GiB" in r.summary
    assert any("by mount point" in d for d in r.details)
    i = judge(facts, "disk.inodes", "qwen3-vl-32b-qlora")
    assert i.status is Status.FAIL and "/root/autodl-tmp has 50 free inodes" in i.summary


# --- toolchain, packages, known issues --------------------------------------------------------

def test_toolchain_probe_reads_nvcc_and_cuda_home(tmp_path):
    from doctor.probes.toolchain import collect, cuda_home

    bin_dir = tmp_path / "cuda" / "bin"
    bin_dir.mkdir(parents=True)
    nvcc = bin_dir / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.8, V12.8.93'\n")
    nvcc.chmod(0o755)
    data = collect(None, {"PATH": str(bin_dir)})
    assert data["nvcc"]["version"] == "12.8" and data["cuda_home"] == str(tmp_path / "cuda")
    assert data["gcc"] is None and data["ninja"] is None
    assert cuda_home({"CUDA_HOME": "/opt/cuda"}, lambda _: None) == ("/opt/cuda", "$CUDA_HOME")


def test_toolchain_check_missing_tools_and_skip(judge, recorded):
    facts = autodl_box()
    facts["toolchain"].update(nvcc=None, ninja=None)
    job = "mamba-7b-zero2"
    r = judge(facts, "toolchain.cuda", "a800-80g", job)
    assert r.status is Status.FAIL and "nvcc not found" in r.summary and "ninja not found" in r.summary
    assert "pip install ninja" in r.remediation.commands
    assert judge(recorded, "toolchain.cuda", "qwen3-vl-32b-qlora").status is Status.SKIP


def test_deepspeed_ops_read_without_importing_deepspeed(tmp_path, monkeypatch):
    from doctor.probes.dists_script import deepspeed_ops

    pkg = tmp_path / "deepspeed"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "git_version_info_installed.py").write_text(
        "version='0.17.5'\ngit_hash='abc'\ninstalled_ops={'cpu_adam': False, 'fused_adam': True}\n"
        "torch_info={'version': '2.8', 'cuda_version': '12.8'}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = deepspeed_ops()
    assert data["installed_ops"] == {"cpu_adam": False, "fused_adam": True} and data["version"] == "0.17.5"


def test_compiled_extension_abi_mismatch_fails(recorded):
    from doctor.checks.packages import packages_compiled

    torch = {**fb.torch_cuda(), "extensions": {"flash-attn": {
        "version": "2.8.3", "module": "flash_attn_2_cuda", "ok": False,
        "error": "ImportError: flash_attn_2_cuda.so: undefined symbol: _ZN3c105ErrorC2ENS_14SourceLocationE"}}}
    r = packages_compiled(edit(recorded, "flash-attn built for another torch", torch=torch))
    assert r.status is Status.FAIL and "undefined symbol" in r.summary
    assert r.remediation.commands == ("pip install --no-build-isolation --force-reinstall 'flash-attn==2.8.3'",)


def test_python_version(recorded):
    from doctor.checks.packages import python_version

    assert python_version(recorded, spec=">=3.10").status is Status.PASS
    r = python_version(recorded, spec="<3.11")
    assert r.status is Status.FAIL and "needs <3.11" in r.summary


@pytest.mark.parametrize("job,row,forced", [
    (">=0.41.0", "<0.45.3", False),  # pip installs the newest bitsandbytes, not the floor
    (">=4.57.0", ">=4.57", True),
    (">=0.1.8", "*", True),
    ("==0.45.0", "<0.45.3", True),
    ("", ">=4.57", False),
])
def test_known_issue_rows_judge_uninstalled_packages_on_the_whole_range(job, row, forced):
    from doctor.known_issues import forced as forced_fn

    assert forced_fn(job, row)[0] is forced


def test_flash_attn_on_turing_warns_and_fails_when_the_job_asks_for_it(tmp_path, judge):
    facts = fb.gpu_box(name="Tesla T4", total_mib=15360, cc="7.5")
    facts["python"]["distributions"]["flash-attn"] = "2.8.3"
    r = judge(facts, "packages.known_issues", "base")
    assert r.status is Status.WARN and "attn_implementation=\"sdpa\"" in r.remediation.text
    job = tmp_path / "fa2.yaml"
    job.write_text("kind: job\nextends: [base]\njob:\n  workload:\n    attn_implementation: flash_attention_2\n")
    assert judge(facts, "packages.known_issues", str(job)).status is Status.FAIL
