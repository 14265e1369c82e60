"""The layering of docs/architecture.md, enforced on the import graph (every import, top-level or inside a
function): commands -> flow -> checks / probes / profiles -> cache library -> data. Nothing imports upwards, probes and
checks never meet, and no command imports another."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "doctor"

# The first prefix that matches a module names its layer (more specific prefixes first).
LAYERS: list[tuple[str, str]] = [
    ("doctor.__main__", "entry"), ("doctor.cli", "entry"), ("doctor.launch", "entry"),
    ("doctor.api", "command"), ("doctor.bench.command", "command"), ("doctor.vram.command", "command"),
    ("doctor.clean.command", "command"), ("doctor.validate", "command"), ("doctor.render", "command"),
    ("doctor.bench.render", "command"), ("doctor.clean.render", "command"), ("doctor.vram.render", "command"),
    ("doctor.vram.bench", "command"), ("doctor.fleet.command", "command"), ("doctor.fleet.render", "command"),
    ("doctor.fleet.capture", "command"), ("doctor.health", "flow"),
    ("doctor.session", "flow"), ("doctor.runner", "flow"), ("doctor.facts", "flow"), ("doctor.probing", "probes"),
    ("doctor.bench.phase", "flow"), ("doctor.bench.runner", "flow"), ("doctor.bench.display", "flow"),
    ("doctor.bench.worker", "flow"), ("doctor.distributed.render", "command"), ("doctor.distributed", "flow"),
    ("doctor.checks", "checks"), ("doctor.probes", "probes"), ("doctor.clean", "cache"), ("doctor.profile", "profiles"),
]
RANK = {"entry": 5, "command": 4, "flow": 3, "checks": 2, "probes": 2, "profiles": 2, "cache": 1, "data": 0}
# Same-rank families that must not import each other: judging never probes, probing never judges. The cache
# library sits below both (the hf probe reads the hub cache with it, the storage check plans a clean-up from
# facts with it) and imports only data.
APART = {frozenset({"checks", "probes"})}
COMMAND_MODULES = ("doctor.api", "doctor.bench.command", "doctor.vram.command", "doctor.clean.command",
                   "doctor.validate.command", "doctor.fleet.command", "doctor.fleet.capture")


def layer(module: str) -> str:
    if module == "doctor":
        return "entry"   # the package's face: `doctor.preflight`, lazily
    for prefix, name in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            if prefix == "doctor.profile" and module.startswith("doctor.profile_schema"):
                return "data"
            return name
    return "data"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every doctor module `path` imports (relative imports resolved; `from . import x` counts x)."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "doctor"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "doctor":
                continue
            for alias in node.names:   # `from doctor import refdata` imports the module doctor.refdata
                sub = f"{target}.{alias.name}"
                out.add(sub if (ROOT.parent / (sub.replace(".", "/") + ".py")).exists()
                        or (ROOT.parent / sub.replace(".", "/")).is_dir() else target)
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(ROOT.rglob("*.py"))}


def violations(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in edges.items():
        for dst in targets:
            if dst in (src, "doctor"):
                continue   # `from doctor import __version__`
            a, b = layer(src), layer(dst)
            if RANK[b] > RANK[a]:
                bad.append(f"{src} ({a}) imports {dst} ({b}): upwards")
            elif frozenset({a, b}) in APART:
                bad.append(f"{src} ({a}) imports {dst} ({b}): {a} and {b} stay apart")
            elif dst in COMMAND_MODULES and src not in ("doctor.cli", "doctor") and not dst.startswith(src + "."):
                if not (src.startswith("doctor.validate") and dst.startswith("doctor.validate")):
                    bad.append(f"{src} imports the command module {dst}: commands never import each other")
    return sorted(bad)


def test_imports_run_one_way():
    assert violations(graph()) == []


@pytest.mark.parametrize("src,dst,why", [
    ("doctor.clean.trees", "doctor.probes.hf", "upwards"),
    ("doctor.clean.hub", "doctor.checks.storage", "upwards"),
    ("doctor.checks.storage", "doctor.probes.hf", "apart"),
    ("doctor.checks.gpu", "doctor.session", "upwards"),
    ("doctor.bench.command", "doctor.vram.command", "commands never import each other"),
    ("doctor.refdata", "doctor.checks.gpu", "upwards"),
])
def test_the_rule_catches_each_kind_of_wrong_import(src, dst, why):
    assert any(why in v for v in violations({src: {dst}}))


def test_every_module_has_a_layer_the_document_names():
    doc = (ROOT.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name in set(RANK):
        assert f"**{name}**" in doc, name
    for prefix, _ in LAYERS:
        assert f"`{prefix}" in doc, prefix
