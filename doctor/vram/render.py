"""Console rendering of an estimate: breakdown table, a bar against the GPU, verdict and what-ifs."""
from __future__ import annotations

from typing import Any

from .arch import Arch
from .estimator import Estimate, Workload, gib
from .workload import describe

LABELS = {
    "weights": "weights", "lora_adapters": "LoRA adapters", "gradients": "gradients",
    "optimizer_states": "optimizer states", "activations": "activations (saved for backward)",
    "logits": "logits + loss (fp32 upcast, gradient)", "kv_cache": "KV cache",
    "ssm_state": "SSM state (conv + ssm, constant in context)", "transient": "transient working set",
    "allocator_rounding": "allocator rounding (2 MiB blocks)", "cuda_context": "CUDA context",
    "cublas_workspace": "cuBLAS workspace",
    # second order (doctor/vram/second_order.py)
    "first_backward_graph": "first backward's graph (create_graph=True)", "pending_gradients":
    "gradients waiting for the forward's nodes", "hvp_vector": "vector v", "hvp_result": "Hv",
    "diagonal_accumulator": "Hutchinson accumulator (sum of z * Hz)", "hessian_matrix": "full Hessian (fp32)",
    "layer_hessians": "layer Hessians H = 2XX^T (fp32)", "calibration_activations": "calibration inputs + outputs",
    "legacy_kv_copy": "previous step's KV cache (legacy tuple cache)",
    "chunked_ce": "fused cross-entropy (one logit chunk, grad_input, loss)",
    "quant_state": "4-bit absmax statistics (whole on every rank)",
    # torchtune 0.1's QLoRA model build on torchao 0.1 (doctor/vram/nf4_build.py)
    "nf4_build_peak": "model build: NF4 weights + one weight's quantization temporaries",
    "step_allocated": "the step's allocated peak (inside the build's segments)",
    "build_fragmentation": "model build: free space left in its segments (reserved)",
    # distributed (doctor/vram/distributed.py): per rank
    "params": "parameters (whole, training dtype)", "grads": "gradients (whole)",
    "grads_partition": "gradients (ZeRO partitions held here)", "master_params_fp32": "fp32 master weights",
    "grads_fp32": "fp32 gradients", "params_partition": "parameters (ZeRO partitions held here)",
    "largest_layer_gathered": "largest layer gathered (params + grads)", "reduce_buckets": "reduce buckets",
    "reduce_bucket": "reduce bucket", "prefetch_bucket": "prefetch bucket (ZeRO-3)",
    "offload_grad_staging": "offload gradient staging", "params_shard": "parameter shard",
    "grads_shard": "gradient shard", "params_unsharded": "unsharded parameters (FSDP)",
    "grads_unsharded": "unsharded gradients (FSDP)", "optimizer_step_temporaries": "optimizer step temporaries",
    "ddp_buckets": "DDP gradient buckets", "model_load": "model as built on the CPU",
    "unpinned_shards": "unpinned shards (until each unit's first forward)",
    "pinned_rounding": "pinned blocks' power-of-two rounding",
    "grad_partitions_flat": "gradient partitions, accumulation dtype (ZeRO-3 offload)",
    "offload_bit16_staging": "pinned parameter staging (offload)", "offload_grad_accumulation":
    "gradient accumulation buffer (offload)", "params_in_cpu": "parameters kept in CPU (NVMe offload)",
    "param_swap_buffers": "parameter swap buffers", "optimizer_swap_buffers": "optimizer swap buffers",
    "param_swap_out_buffer": "parameter swap-out buffer (whole params)",
    "offload_fp32_partition_copy": "fp32 partition copied to the GPU (DeepSpeed < 0.17)",
}


def render(model: str, arch: Arch, wl: Workload, est: Estimate, capacity: int | None, label: str,
           verdict: str | None, options: list[Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..output import printable

    model = escape(printable(model))   # a path or a Hub id the user typed: no markup, no control characters
    con = Console(highlight=False)
    con.print(f"[bold]{model}[/]: {arch.params / 1e9:.2f}B parameters ({arch.family}), "
              f"{est.trainable / 1e6:,.1f}M trainable")
    con.print(f"workload: {describe(wl)}")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("component")
    table.add_column("GiB", justify="right")
    table.add_column("share", justify="right")
    for key, value in est.breakdown.items():
        name = "logits (last position, fp32 upcast)" if key == "logits" and wl.method == "inference" else \
            LABELS.get(key, key)
        table.add_row(name, f"{value / 2**30:.2f}", f"{100 * value / est.peak_bytes:.0f}%")
    table.add_row("[bold]peak[/] (" + est.phase + ")", f"[bold]{est.peak_bytes / 2**30:.2f}[/]", "")
    con.print(table)
    con.print(f"range {gib(est.low_bytes)} .. {gib(est.high_bytes)} (CUDA context and allocator rounding measured "
              "elsewhere; see doctor/data/vram.yaml)")
    for note in est.notes:
        con.print(f"  - {escape(printable(note))}")
    if est.cpu:
        _render_cpu(con, est.cpu)
    if capacity:
        width = 50
        used = min(width, round(width * est.peak_bytes / capacity))
        colour = {"fits": "green", "tight": "yellow"}.get(verdict or "", "red")
        con.print(f"[{colour}]{'#' * used}[/]{'.' * (width - used)} {gib(est.peak_bytes)} of {label}")
        con.print(f"[bold {colour}]{verdict}[/]" + (f": {100 * est.peak_bytes / capacity:.0f}% of the GPU" if verdict else ""))
        if verdict == "does not fit" and est.paged_bytes and est.peak_bytes - est.paged_bytes <= capacity:
            con.print(f"[yellow]fits only by paging {gib(est.peak_bytes - capacity)} of the paged optimizer's state "
                      "to CPU RAM (slower steps)[/]")
    if options:
        con.print("[bold]what-ifs[/] (each re-estimated):")
        for w in options:
            ok = "" if capacity is None else (" [green]fits[/]" if w.estimate.peak_bytes <= capacity else " still too big")
            con.print(f"  {w.change}: {gib(w.estimate.peak_bytes)}{ok}  [dim]{w.flag}; cost: {w.cost}[/]")


def _render_cpu(con: Any, cpu: dict[str, Any]) -> None:
    """The CPU RAM per node of a distributed job, by term, with DeepSpeed's estimator figure beside it."""
    from rich.table import Table

    when = {"model load": "while the model loads", "training": "during training",
            "FSDP lazy init": "at FSDP's lazy init (before the first forward)"}.get(cpu["peak_moment"], "")
    con.print(f"[bold]CPU RAM per node[/] ({cpu['sharding']}): {gib(cpu['per_node_bytes'])} {when}")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("component")
    table.add_column("GiB", justify="right")
    for key, value in cpu["breakdown"].items():
        table.add_row(LABELS.get(key, key), f"{value / 2**30:.2f}")
    con.print(table)
    moments = {"training": cpu["training_bytes"], "model load": cpu["load_bytes"],
               "FSDP lazy init": cpu.get("init_bytes", 0)}
    others = "; ".join(f"{k}: {gib(v)}" for k, v in moments.items()
                       if k != cpu["peak_moment"] and (v or k != "FSDP lazy init"))
    con.print(f"  {others}; pinned {gib(cpu['pinned_bytes'])}" + (
        f"; NVMe {gib(cpu['nvme_per_node_bytes'])} " + (f"on {cpu['nvme_path']}" if cpu["nvme_path"] else
                                                         "(no nvme_path given)") if cpu["nvme_per_node_bytes"] else ""))
    ds = cpu.get("deepspeed_estimator")
    if ds:
        con.print(f"  DeepSpeed's estimator ({ds['function']}): CPU {gib(ds['cpu_per_node_bytes'])} per node "
                  f"+ {gib(ds['buffer_bytes'])} buffer (x{ds['buffer_factor']:g}) = "
                  f"{gib(ds['cpu_per_node_with_buffer_bytes'])}; GPU {gib(ds['gpu_per_rank_bytes'])} per rank "
                  "(model states only)")
