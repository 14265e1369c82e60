"""scripts/refresh/packages.py on small fixtures in the shape of the bitsandbytes repository at a few tags, PyPI's
JSON document and a wheel inventory; a synthetic wheel for --inspect-wheel (no network)."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "refresh" / "packages"
sys.path.insert(0, str(REPO / "scripts"))

import refresh_data  # noqa: E402
from refresh import packages as pk  # noqa: E402


def collected() -> dict[str, pk.Release]:
    releases, _ = pk.collect(pk.Tree(folder=FIX / "tree"), json.loads((FIX / "pypi.json").read_text()),
                             [json.loads((FIX / "inventory-0.50.2-linux.json").read_text())])
    return {r.version: r for r in releases}


# ------------------------------------------------------------------------------------------------ pieces

def test_matrix_include_exclude():
    combos = pk.expand_matrix({"os": ["u", "w"], "arch": ["x", "a"], "cuda_version": ["1"],
                               "exclude": [{"os": "w", "arch": "a"}]})
    assert sorted((c["os"], c["arch"]) for c in combos) == [("u", "a"), ("u", "x"), ("w", "x")]
    combos = pk.expand_matrix({"os": ["u", "u-arm"], "cuda_version": ["1"],
                               "include": [{"os": "u", "arch": "x86_64"}, {"os": "w-arm", "cuda_version": "2"}]})
    assert {"os": "u", "cuda_version": "1", "arch": "x86_64"} in combos
    assert {"os": "w-arm", "cuda_version": "2"} in combos and len(combos) == 3


@pytest.mark.parametrize("combo,plat", [
    ({"os": "ubuntu-latest", "arch": "aarch64"}, "linux-aarch64"), ({"os": "ubuntu-22.04-arm"}, "linux-aarch64"),
    ({"os": "windows-11-vs2026-arm"}, "win32-arm64"), ({"os": "windows-2025"}, "win32-x86_64"),
    ({"os": "macos-15"}, None)])
def test_platform_of(combo, plat):
    assert pk.platform_of(combo) == plat


def test_shell_forms():
    script = (FIX / "tree" / "0.45.1" / ".github" / "scripts" / "build-cuda.sh").read_text()
    assert pk.build_capability(script, {"cuda_version": "11.7.1"}) == [50, 60, 70, 80]
    assert pk.build_capability(script, {"cuda_version": "12.6.3"}) == [50, 60, 70, 80, 90]
    assert pk.build_capability(script, {"cuda_version": "12.8.0"}) == [50, 60, 70, 80, 90, 100, 120]
    sh = pk.Shell({"v": "ubuntu-latest"})
    assert sh.test('[ "${v:0:6}" == ubuntu ]') and not sh.test('[[ "${v}" == windows-* ]]')
    assert sh.test('[[ "${v}" == ubuntu-* || "${v}" == x ]]') and not sh.test("[[ -v missing ]]")
    with pytest.raises(pk.Unsupported):
        pk.build_capability('build_capability=$(python3 pick.py)', {})
    with pytest.raises(pk.Unsupported):
        pk.build_capability('if [ -f x ]; then\nbuild_capability="1"\nfi', {})


def test_wheel_platforms_and_pypi():
    assert pk.wheel_platform("b-0.46.0-py3-none-manylinux_2_24_aarch64.whl") == "linux-aarch64"
    assert pk.wheel_platform("b-0.50.1-py3-none-macosx_14_0_arm64.whl") == "darwin-arm64"
    assert pk.wheel_platform("b-0.46.0.tar.gz") is None and pk.wheel_platform("b-0.42.0-py3-none-any.whl") == "any"
    rel = pk.pypi_releases(json.loads((FIX / "pypi.json").read_text()))
    assert rel["0.46.0"]["wheels"] == ["linux-aarch64", "linux-x86_64", "win32-x86_64"]
    assert rel["0.49.9"]["yanked"] and rel["0.45.0"]["date"] == "2024-12-05"


# ------------------------------------------------------------------------------------------------ releases

def test_releases_from_tags_pypi_and_inventory():
    r = collected()
    assert sorted(r) == ["0.45.0", "0.45.1", "0.46.0", "0.49.9", "0.50.1", "0.50.2"]   # no 0.42 (< 0.43), no rc
    b = r["0.45.0"].binaries
    assert set(b) == {"linux-x86_64", "win32-x86_64"}                         # aarch64 excluded in the matrix
    assert b["linux-x86_64"]["11.7"] == [50, 52, 60, 61, 70, 75, 80, 86] and b["win32-x86_64"]["12.6"][-1] == 90
    assert set(r["0.45.1"].binaries) == {"linux-x86_64"}                      # no Windows wheel published
    b = r["0.46.0"].binaries
    assert b["linux-aarch64"] == {"12.6": [75, 80, 90], "12.8": [75, 80, 90, 100]}
    assert b["linux-x86_64"]["12.8"] == [75, 80, 86, 89, 90, 100, 120] and 50 in b["win32-x86_64"]["12.6"]
    b = r["0.50.1"].binaries
    assert b["win32-arm64"] == {"13.4": [121]} and b["linux-aarch64"]["13.2"][-1] == 121
    assert b["darwin-arm64"] == {}                                            # a wheel, but no CUDA build
    assert r["0.50.1"].commit.startswith("501") and r["0.50.1"].date == "2026-08-13"
    assert not r["0.50.1"].unconfirmed and r["0.50.1"].ptx == {}


def test_untagged_release_unknown_shell_form_and_yanked_are_unconfirmed():
    r = collected()
    new = r["0.50.2"]
    assert new.binaries["linux-x86_64"]["13.2"][0] == 75 and new.ptx == {"linux-x86_64": "none"}  # from the wheel
    text = "; ".join(new.unconfirmed)
    assert "no tag 0.50.2" in text and "win32-x86_64: a wheel is published but no source" in text
    odd = r["0.49.9"]
    assert odd.binaries["linux-x86_64"]["12.8"] is None
    assert any("arch list not read" in u for u in odd.unconfirmed) and any("yanked" in u for u in odd.unconfirmed)


def test_inventory_disagreeing_with_the_matrix_is_reported():
    rel = pk.Release("1.0", wheels=["linux-x86_64"], binaries={"linux-x86_64": {"12.8": [70, 80], "12.9": [80]}})
    pk.apply_inventory(rel, {"wheel": "bitsandbytes-1.0-py3-none-manylinux_2_24_x86_64.whl", "platform": "linux-x86_64",
                             "binaries": {"12.8": {"cubin": [80], "ptx": [90]}}})
    assert rel.binaries["linux-x86_64"] == {"12.8": [80]} and rel.ptx == {"linux-x86_64": "present"}
    assert any("lists CUDA 12.9" in u for u in rel.unconfirmed) and any("holds sm [80]" in u for u in rel.unconfirmed)


# ------------------------------------------------------------------------------------------------ wheels

def _fake_elf(fatbin: bytes) -> bytes:
    """A minimal 64-bit little-endian ELF with sections '', .shstrtab, .nv_fatbin."""
    names = b"\0.shstrtab\0.nv_fatbin\0"
    body_off = 64
    names_off, fat_off = body_off, body_off + len(names)
    sh_off = fat_off + len(fatbin)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, sh_off)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 1)
    sections = [struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
                struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, names_off, len(names), 0, 0, 1, 0),
                struct.pack("<IIQQQQIIQQ", 11, 1, 0, 0, fat_off, len(fatbin), 0, 0, 8, 0)]
    return bytes(header) + names + fatbin + b"".join(sections)


def _fatbin(entries: list[tuple[int, int]]) -> bytes:
    body = b""
    for kind, sm in entries:
        entry = bytearray(64)
        struct.pack_into("<HHII", entry, 0, kind, 0x101, 64, 16)
        struct.pack_into("<I", entry, 28, sm)
        body += bytes(entry) + b"\0" * 16
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def test_inspect_wheel_reads_fatbin_targets(tmp_path):
    wheel = tmp_path / "bitsandbytes-9.9.9-py3-none-manylinux_2_24_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("bitsandbytes/libbitsandbytes_cuda128.so", _fake_elf(_fatbin([(2, 75), (2, 120), (1, 120)])))
        z.writestr("bitsandbytes/libbitsandbytes_cuda132.so", b"not an elf")
        z.writestr("bitsandbytes/libbitsandbytes_cpu.so", b"")
    inv = pk.inspect_wheel(wheel)
    assert inv["platform"] == "linux-x86_64"
    assert inv["binaries"] == {"12.8": {"cubin": [75, 120], "ptx": [120]}, "13.2": None}
    out = tmp_path / "inv"
    assert refresh_data.main(["packages", "--inspect-wheel", str(wheel), "--inventory-dir", str(out)]) == 0
    assert json.loads((out / (wheel.name + ".json")).read_text())["binaries"]["12.8"]["cubin"] == [75, 120]


# ------------------------------------------------------------------------------------------------ the command

def test_cli_keeps_the_hand_part_and_checks(tmp_path):
    out = tmp_path / "known_issues.yaml"
    shutil.copy(FIX / "known_issues_hand.yaml", out)
    args = ["packages", "--bnb-tree", str(FIX / "tree"), "--pypi-json", str(FIX / "pypi.json"),
            "--wheel-inventory", str(FIX / "inventory-0.50.2-linux.json"), "--out", str(out), "--date", "2030-01-01"]
    assert refresh_data.main(args) == 0
    text = out.read_text()
    assert text.startswith("# hand-kept part of a fixture") and pk.GENERATED_MARKER in text
    doc = yaml.safe_load(text)
    assert doc["rows"] == [] and doc["binaries"]["bitsandbytes"]["generated"] == "2030-01-01"
    assert doc["binaries"]["bitsandbytes"]["releases"]["0.46.0"]["binaries"]["linux-aarch64"]["12.8"][-1] == 100
    assert refresh_data.main(args[:-2] + ["--date", "2031-01-01", "--check"]) == 0   # same content, another day
    assert refresh_data.main(args) == 0 and out.read_text() == text                   # idempotent
    out.write_text(text.replace("[75, 80, 90, 100]", "[75, 80, 90]", 1))
    assert refresh_data.main(args + ["--check"]) == 1
    assert refresh_data.main(["packages", "--out", str(out)]) == 2                   # no sources given


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_repository_mode(tmp_path):
    """The same fixture tree committed and tagged in a throwaway repository, read back with --bnb-repo."""
    work = tmp_path / "work"
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "GIT_AUTHOR_DATE": "2025-05-27T00:00:00", "GIT_COMMITTER_DATE": "2025-05-27T00:00:00", "HOME": str(tmp_path)}
    run = lambda *a: subprocess.run(["git", *a], cwd=work, env=env, check=True, capture_output=True)
    work.mkdir()
    run("init", "-q")
    for tag in ("0.45.0", "0.46.0"):
        shutil.rmtree(work / ".github", ignore_errors=True)
        shutil.copytree(FIX / "tree" / tag / ".github", work / ".github")
        run("add", "-A")
        run("commit", "-q", "-m", tag)
        run("tag", tag)
    tree = pk.Tree(git_dir=work / ".git")
    assert sorted(tree.tags()) == ["0.45.0", "0.46.0"] and tree.commit("0.46.0")[1] == "2025-05-27"
    releases, _ = pk.collect(tree, json.loads((FIX / "pypi.json").read_text()), [])
    by = {r.version: r for r in releases}
    assert by["0.46.0"].binaries["linux-aarch64"]["12.8"] == [75, 80, 90, 100]
    assert by["0.46.0"].sources[1].startswith(f"{pk.REPO_NAME}@{by['0.46.0'].commit[:12]}")
