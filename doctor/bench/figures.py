"""The headline figures of a bench section, per device: what scripts read from `doctor bench --format json`."""
from __future__ import annotations

from typing import Any

from .reference import gpu_reference

METHODS = ("double_backward", "forward_over_reverse")


def figures(section: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for dev in section.get("devices") or []:
        ref = gpu_reference(dev.get("name")) if dev.get("key") != "cpu" else None
        row: dict[str, Any] = {"key": dev.get("key"), "label": dev.get("label"), "name": dev.get("name"),
                               "status": dev.get("status"), "reference": (ref or {}).get("name")}
        matmul = dev.get("matmul") or {}
        row["matmul_tflops"] = {d: f["tflops"] for d, f in matmul.items() if isinstance(f, dict) and "tflops" in f}
        row["matmul_fraction_of_peak"] = {d: v / ref[f"{d}_tflops"] for d, v in row["matmul_tflops"].items()
                                          if ref and ref.get(f"{d}_tflops")}
        bw = dev.get("bandwidth") or {}
        row["bandwidth_gbps"] = bw.get("gbps")
        row["bandwidth_fraction_of_spec"] = (bw["gbps"] / ref["bandwidth_gbs"]
                                             if ref and ref.get("bandwidth_gbs") and "gbps" in bw else None)
        tr = (dev.get("hvp") or {}).get("transformer") or {}
        row["hvp_per_s"] = {m: tr[m]["per_s"] for m in METHODS if "per_s" in (tr.get(m) or {})}
        row["hvp_grad_ratio"] = {m: tr[m]["grad_ratio"] for m in METHODS if "grad_ratio" in (tr.get(m) or {})}
        row["hvp_peak_bytes"] = {m: tr[m].get("peak_bytes") for m in METHODS if m in tr}
        row["hvp_rel_disagreement"] = tr.get("methods_rel_disagreement")
        row["hvp_known_hessian_rel_error"] = (dev.get("hvp") or {}).get("known_hessian_rel_error")
        row["hutchinson_samples_per_s"] = (tr.get("hutchinson") or {}).get("samples_per_s")
        out.append(row)
    return out
