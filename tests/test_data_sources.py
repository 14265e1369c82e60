"""Every row of every reference table cites where it comes from (doctor/data/*.yaml)."""
from __future__ import annotations

from typing import Any

import pytest

from doctor import refdata


def cited(row: dict[str, Any]) -> bool:
    """A row names its source: `source`, `sources` (text or per-key mapping), or a generated row's inputs."""
    for key in ("source", "sources"):
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return True
        if isinstance(value, (list, tuple)) and value and all(str(v).strip() for v in value):
            return True
        if isinstance(value, dict) and value and all(str(v).strip() for v in value.values() if v is not None):
            return True
    return False


TABLES = {
    "gpus": lambda d: [(r["name"], r) for r in d["gpus"]],
    "gpus.architectures": lambda d: [(k, v) for k, v in d["architectures"].items()],
    "cuda.toolkits": lambda d: [(k, v) for k, v in d["toolkits"].items()],
    "cuda.minor_version_compatibility": lambda d: [(k, v) for k, v in d["minor_version_compatibility"].items()
                                                   if isinstance(v, dict) and "min" in v],
    "torch_wheels": lambda d: [(k, v) for k, v in d["releases"].items()],
    "known_issues": lambda d: [(r["id"], r) for r in d["rows"]],
    "xid": lambda d: [(str(k), v) for k, v in d["codes"].items()],
    "vram_measured": lambda d: [(r["id"], {"source": d["sources"].get(r["source"], "")}) for r in d["rows"]],
}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_row_cites_its_source(table):
    name = table.split(".")[0]
    rows = TABLES[table](refdata.load(name))
    assert rows, f"{table} is empty"
    missing = [key for key, row in rows if not cited(row)]
    assert not missing, f"{table}: rows without a source: {missing}"


def test_torch_wheel_arch_lists_each_cite_the_file_they_were_read_from():
    for release, row in refdata.load("torch_wheels")["releases"].items():
        for variant, spec in (row.get("variants") or {}).items():
            for platform in spec.get("arch") or {}:
                assert (spec.get("source") or {}).get(platform), (release, variant, platform)
            for platform in spec.get("platforms") or []:
                if platform not in (spec.get("arch") or {}):   # built, list not read: said, never filled in
                    assert any(variant in u and platform in u for u in row.get("unconfirmed") or []), \
                        (release, variant, platform)
