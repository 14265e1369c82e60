"""Third-party checks load through the same entry-point group; a broken plugin is an error result.
The wheel ships checks and profiles inside `doctor`, with no generic top-level module."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORDED = Path(__file__).parent / "facts" / "cpu-container-no-gpu.json"


def make_dist(site: Path, name: str, module: str, source: str) -> None:
    (site / f"{module}.py").write_text(source)
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[doctor.checks]\n{module} = {module}\n")


GOOD = '''
from doctor.registry import check
from doctor.model import passed

@check("site.hello", needs=("host",))
def hello(facts, *, greeting: str = "hi"):
    """Says hello.

    Why: shows plugins work.
    Fix: nothing to fix.
    """
    return passed(f"{greeting} from {facts['host']['os']}")
'''


def run(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "doctor", *args], capture_output=True, text=True, env=env, timeout=60)


def test_plugin_checks_load_and_broken_plugins_are_errors(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_dist(site, "doctor-hello", "doctor_hello", GOOD)
    make_dist(site, "doctor-broken", "doctor_broken", "import not_a_real_module_xyz\n")
    listing = run(site, "checks")
    assert "site.hello" in listing.stdout
    assert "plugin.doctor_broken" in listing.stdout and "package 'doctor-broken'" in listing.stdout
    profile = tmp_path / "p.yaml"
    profile.write_text("extends: [cpu-ci]\nchecks:\n  - {id: site.hello, params: {greeting: hey}}\n")
    done = run(site, "check", "-p", str(profile), "--facts", str(RECORDED), "--format", "json")
    results = {r["id"]: r for r in json.loads(done.stdout)["results"]}
    assert results["site.hello"]["status"] == "pass" and results["site.hello"]["summary"] == "hey from Linux"
    broken = results["plugin.doctor_broken"]
    assert broken["status"] == "error" and "doctor-broken" in broken["summary"]
    assert "ModuleNotFoundError" in broken["summary"] and done.returncode == 3


@pytest.mark.slow
def test_wheel_contents(tmp_path):
    import shutil

    src = tmp_path / "src"  # a copy without build/: a stale build/lib would hide a package left out of pyproject
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns("build", ".venv", ".git", "__pycache__", "*.egg-info"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("preflight_doctor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"doctor", wheel.name.split("-py")[0] + ".dist-info"}, tops
    for must in ("doctor/checks/gpu.py", "doctor/checks/torch_stack.py", "doctor/profiles/autodl-a800.yaml",
                 "doctor/data/gpus.yaml", "doctor/schemas/report.schema.json", "doctor/probes/torch_script.py"):
        assert must in names, must
    for src in (ROOT / "doctor").rglob("*"):  # every module and data file of the source tree ships
        if src.is_dir() or "__pycache__" in src.parts:
            continue
        rel = "doctor/" + src.relative_to(ROOT / "doctor").as_posix()
        assert rel in names, f"{rel} is not in the wheel: a folder without __init__.py needs a package-data entry"
    meta = zipfile.ZipFile(wheel)
    eps = next(n for n in names if n.endswith("entry_points.txt"))
    text = meta.read(eps).decode()
    assert "[doctor.checks]" in text and "doctor = doctor.launch:main" in text
