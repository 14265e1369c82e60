"""Never guess: a fact that was not collected makes a check undecided (or skipped), never a fail read from a
missing value and never a pass read from a missing test. Every leaf of rich snapshots is removed in turn (and
set to null); no check may move to FAIL or to PASS because of it."""
from __future__ import annotations

import copy
from typing import Any, Iterator

import pytest
from factsbuilder import QWEN_QLORA_ENV, autodl_box, nvml_device

from doctor.model import Status
from doctor.profile import load
from doctor.runner import evaluate

SECTIONS = ("gpu", "torch", "python", "resources", "disk", "hf", "network", "kernel", "env", "toolchain")


# Keys whose null is itself a fact (a CPU-only torch has cuda_build null; a probe that succeeded has error null).
NULL_IS_DATA = {"torch.cuda_build", "torch.hip_build", "torch.cudnn_version", "gpu.reason", "error",
                "torch_cuda_arch_list", "fabric", "retired_pages_pending", "swap_limit_bytes", "memlock_bytes",
                # NVML answered "not supported" for the whole feature (e.g. no ECC on GeForce)
                "ecc", "row_remap", "aggregate_uncorrected", "clocks_event_reasons", "pcie", "mig", "processes"}


# Mappings whose keys are members, not fields: one package fewer in `distributions` means "not installed",
# another fact, not a missing one. The whole mapping may still go missing.
COLLECTIONS = {"python.distributions", "env.variables", "hf.env", "network.proxy", "disk.paths", "torch.extensions",
               "gpu.env"}


def leaves(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Paths of every mapping key below `value` (list items are not removed one by one: a shorter list is
    another fact, not a missing one; the dictionaries inside the first items are walked)."""
    if isinstance(value, dict):
        if ".".join(map(str, path)) in COLLECTIONS:
            return
        for k, v in value.items():
            yield path + (k,)
            yield from leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:2]):
            if isinstance(v, (dict, list)):
                yield from leaves(v, path + (i,))


def null_is_data(path: tuple) -> bool:
    dotted = ".".join(map(str, path))
    return dotted in NULL_IS_DATA or str(path[-1]) in NULL_IS_DATA


def without(facts: dict[str, Any], path: tuple, mode: str) -> dict[str, Any]:
    out = copy.deepcopy(facts)
    node = out
    for key in path[:-1]:
        node = node[key]
    if mode == "null":
        node[path[-1]] = None
    else:
        del node[path[-1]]
    return out


def boxes() -> dict[str, tuple[dict[str, Any], list[str]]]:
    healthy = autodl_box(packages=QWEN_QLORA_ENV)
    sick = autodl_box(packages=QWEN_QLORA_ENV, driver="535.104.05", name="Tesla V100-SXM2-32GB", total_mib=32768,
                      cc="7.0")
    two = autodl_box(packages=QWEN_QLORA_ENV, count=2)
    two["gpu"]["devices"][1] = dict(nvml_device(1), health=copy.deepcopy(two["gpu"]["devices"][0]["health"]))
    two["gpu"]["devices"][1]["health"]["ecc"]["volatile_uncorrected"] = 3
    two["gpu"]["devices"][1]["health"]["row_remap"]["pending"] = True
    return {"healthy-a800-qlora": (healthy, ["autodl-a800", "qwen3-vl-32b-qlora"]),
            "v100-old-driver": (sick, ["autodl-a800", "qwen3-vl-32b-qlora"]),
            "a800-pair-one-sick": (two, ["a800-80g", "opt-hessian"])}


def statuses(facts: dict[str, Any], profile: Any, registry: Any) -> dict[str, Status]:
    return {r.check_id: r.status for r in evaluate(facts, profile, registry).results}


@pytest.mark.parametrize("box", sorted(boxes()))
def test_a_missing_fact_never_decides_a_verdict(box, registry):
    facts, refs = boxes()[box]
    profile = load(refs, registry)
    before = statuses(facts, profile, registry)
    violations = []
    for section in SECTIONS:
        for path in leaves(facts.get(section), (section,)):
            for mode in ("absent",) if null_is_data(path) else ("absent", "null"):
                after = statuses(without(facts, path, mode), profile, registry)
                for check_id, status in after.items():
                    was = before[check_id]
                    # a check that was skipped as not applicable may pass on what it did measure
                    if status in (Status.FAIL, Status.PASS) and status is not was and was is not Status.SKIP:
                        violations.append(f"{'.'.join(map(str, path))} {mode}: {check_id} {was.value} -> {status.value}")
    assert not violations, f"{len(violations)} verdicts read from a missing fact:\n" + "\n".join(violations[:60])


@pytest.mark.parametrize("memory,key", [({"total_bytes": -1}, "total_bytes"), ({"used_mib": -5}, "used_mib"),
                                        ({"used_mib": 200000}, "used_mib")])
def test_impossible_gpu_memory_figures_in_a_snapshot_are_bad_input(tmp_path, capsys, memory, key):
    """A negative size, or more in use than the card has, is refused with the key named (exit 2), not judged."""
    import json as _json

    from factsbuilder import gpu_box

    from doctor.cli import main

    facts = gpu_box()
    facts["gpu"]["devices"][0]["memory"].update(memory)
    path = tmp_path / "facts.json"
    path.write_text(_json.dumps(facts))
    assert main(["estimate", "--model", "opt-125m", "--facts", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"gpu.devices.0.memory.{key}" in err and len(err.splitlines()) == 1, err
