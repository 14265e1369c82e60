"""Hold the estimator to published measured peaks: `python -m doctor.vram.bench` prints estimate vs measured."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from statistics import mean
from typing import Any

from .. import refdata
from .catalogue import resolve
from .estimator import Workload, estimate

UNIT = {"MiB": 2**20, "GiB": 2**30, "MB": 10**6, "GB": 10**9}


@dataclass(frozen=True)
class Row:
    id: str
    measured_bytes: int
    estimated_bytes: int
    measures: str
    source: str

    @property
    def error(self) -> float:
        return (self.estimated_bytes - self.measured_bytes) / self.measured_bytes


def rows() -> list[Row]:
    data = refdata.load("vram_measured")
    out = []
    for row in data["rows"]:
        fields: dict[str, Any] = dict(data["models"][row["base"]])
        fields.update(row["workload"])
        model = fields.pop("model")
        est = estimate(resolve(model), Workload(**fields))
        value = est.peak_bytes
        if row["measures"] == "reserved":   # the allocator's figure excludes the CUDA context
            value -= est.breakdown["cuda_context"]
        out.append(Row(row["id"], int(row["value"] * UNIT[row["unit"]]), value, row["measures"], row["source"]))
    return out


def main() -> int:
    results = rows()
    print(f"{'row':36} {'measures':9} {'measured':>10} {'estimate':>10} {'error':>7}")
    for r in results:
        print(f"{r.id:36} {r.measures:9} {r.measured_bytes / 2**30:9.2f}G {r.estimated_bytes / 2**30:9.2f}G "
              f"{100 * r.error:+6.1f}%")
    errs = [abs(r.error) for r in results]
    print(f"mean absolute error {100 * mean(errs):.1f}%, worst {100 * max(errs):.1f}% over {len(errs)} rows "
          "(G = GiB)")
    return 0 if mean(errs) <= 0.10 and max(errs) <= 0.20 else 1


if __name__ == "__main__":
    sys.exit(main())
