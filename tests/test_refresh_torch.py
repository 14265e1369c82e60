"""scripts/refresh/torch_wheels.py (`refresh_data.py torch`): parsers on fixture copies of each source shape, the
whole table on the fixture, and the committed doctor/data/torch_wheels.yaml. No network."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "refresh" / "torch"
sys.path.insert(0, str(ROOT / "scripts"))
tw = importlib.import_module("refresh.torch_wheels")
refresh_data = importlib.import_module("refresh_data")

SRC = FIX / "sources"


def _text(path: Path) -> str:
    return path.read_text()


# ------------------------------------------------------------------------------------------ source shapes

def test_build_cuda_sh_case_statement():
    text = _text(SRC / "2.10/pytorch+pytorch/.ci/manywheel/build_cuda.sh")
    assert tw.arch_from_build_cuda_sh(text, "12.8", "x86_64") == ["7.0", "7.5", "8.0", "8.6", "9.0", "10.0", "12.0"]
    # the libtorch-only branch is not the wheel's
    assert tw.arch_from_build_cuda_sh(text, "12.6", "x86_64") == ["5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0"]
    # inline $([[ "$ARCH" == "aarch64" ]] && echo ... || echo ...)
    assert tw.arch_from_build_cuda_sh(text, "13.0", "x86_64") == ["7.5", "8.0", "8.6", "9.0", "10.0", "12.0"]
    assert tw.arch_from_build_cuda_sh(text, "13.0", "aarch64") == ["7.5", "8.0", "8.6", "9.0", "10.0", "11.0",
                                                                    "12.0"]
    # an arm that does not tell aarch64 apart is not the aarch64 list; a version with only `*)` has none
    assert tw.arch_from_build_cuda_sh(text, "12.8", "aarch64") is None
    assert tw.arch_from_build_cuda_sh(text, "12.9", "x86_64") is None


def test_builder_build_cuda_sh_base_and_appends():
    text = _text(FIX / "shapes/builder_build_cuda.sh")
    assert tw.arch_from_build_cuda_sh(text, "11.8", "x86_64") == ["3.7", "5.0", "6.0", "7.0", "7.5", "8.0", "8.6",
                                                                   "9.0"]
    assert tw.arch_from_build_cuda_sh(text, "12.4", "x86_64") == ["5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0"]
    assert tw.arch_from_build_cuda_sh(text, "12.4", "aarch64") == ["9.0"]
    assert tw.arch_from_build_cuda_sh(text, "11.7", "x86_64")[0] == "3.7"   # glob arm 11.[67]


def test_unknown_condition_is_refused_not_guessed():
    with pytest.raises(tw.ParseError, match="condition not understood"):
        tw.arch_from_build_cuda_sh(_text(FIX / "shapes/unknown_condition_build_cuda.sh"), "12.8", "x86_64")


def test_aarch64_ci_build_if_chain():
    text = _text(SRC / "2.10/pytorch+pytorch/.ci/aarch64_linux/aarch64_ci_build.sh")
    assert tw.arch_from_aarch64_ci_build(text, "12.6") == ["8.0", "9.0"]
    assert tw.arch_from_aarch64_ci_build(text, "12.9") == ["8.0", "9.0", "10.0", "12.0"]
    assert tw.arch_from_aarch64_ci_build(text, "13.0") is None


def test_build_env_setup_table():
    text = _text(SRC / "2.11/pytorch+pytorch/.ci/manywheel/build_env_setup.py")
    arch, note = tw.arch_from_env_setup_table(text, "13.0", "aarch64")
    assert arch == ["8.0", "9.0", "10.0", "11.0", "12.0"]          # _PTX_ARCHES dropped: release builds
    assert "_is_release_build" in note
    assert tw.arch_from_env_setup_table(text, "12.8", "aarch64")[0] is None
    no_release_rule = text.replace("def _is_release_build", "def _other")
    assert tw.arch_from_env_setup_table(no_release_rule, "13.0", "x86_64")[0][-1] == "12.0+PTX"
    win = _text(SRC / "2.11/pytorch+pytorch/.ci/pytorch/windows/build_env_setup.py")
    assert tw.arch_from_env_setup_table(win, "12.6", None)[0] == ["5.0", "6.0", "6.1", "7.0", "7.5", "8.0", "8.6",
                                                                  "9.0"]
    assert tw.arch_from_env_setup_table(win, "12.8", None)[0] is None


def test_windows_bat_files():
    bat = _text(SRC / "2.10/pytorch+pytorch/.ci/pytorch/windows/cuda128.bat")
    assert tw.arch_from_windows_bat(bat) == ["7.0", "7.5", "8.0", "8.6", "9.0", "10.0", "12.0"]
    config = _text(FIX / "shapes/cuda_config.bat")
    assert tw.arch_from_windows_bat(config) is None          # `%CUDA_ARCH_LIST%` is a reference, not a list
    assert tw.arch_from_cuda_config_bat(config, "13.0") == ["7.5", "8.0", "8.6", "9.0", "10.0", "12.0"]
    assert tw.arch_from_cuda_config_bat(config, "12.8") is None


def test_test_infra_matrix():
    values = tw.py_literals(_text(SRC / "2.10/pytorch+test-infra/tools/scripts/generate_binary_build_matrix.py"))
    assert values["CURRENT_STABLE_VERSION"] == "2.10.0"
    assert tw.matrix_cuda_by_platform(values, "release") == {
        "linux-x86_64": ["12.6", "12.8", "13.0"], "linux-aarch64": ["12.6", "12.8", "13.0"],
        "windows-x86_64": ["12.6", "12.8", "13.0"]}
    values["CUDA_ARCHES_NO_WINDOWS"] = ["13.0"]
    assert tw.matrix_cuda_by_platform(values, "release")["windows-x86_64"] == ["12.6", "12.8"]
    rc = tw.py_literals(_text(SRC / "2.11/pytorch+test-infra/tools/scripts/generate_binary_build_matrix.py"))
    assert tw.matrix_cuda_by_platform(rc, "test")["linux-aarch64"] == ["12.6", "13.0"]   # the channel's own list


def test_matrix_additions_made_in_code():
    text = _text(FIX / "shapes/release_branch_matrix.py")
    values = tw.py_literals(text)
    assert tw.matrix_cuda_by_platform(values, "test", text) == {
        "linux-x86_64": ["12.6", "13.0", "13.2", "12.9"], "linux-aarch64": ["12.6", "12.9", "13.0", "13.2"],
        "windows-x86_64": ["12.6", "13.0", "13.2"]}
    assert tw.matrix_cuda_by_platform(values, "release", text)["linux-x86_64"] == ["12.6", "13.0", "13.2"]
    odd = text.replace("if channel == TEST and os == LINUX:", "if channel == TEST and os in (LINUX,):")
    with pytest.raises(tw.ParseError, match="condition not understood"):
        tw.matrix_cuda_by_platform(values, "test", odd)


def test_release_md_matrix_row():
    text = _text(SRC / "2.10/pytorch+pytorch/RELEASE.md")
    assert tw.release_matrix_row(text, "2.10") == {
        "python": ">=3.10, <=(3.14, 3.14t experimental)", "stable_cuda": ["12.6", "12.8"],
        "experimental_cuda": ["13.0"]}
    assert tw.release_matrix_row(text, "2.11") is None


def test_wheel_filenames_and_requires_dist():
    assert tw.wheel_tags("torch-2.10.0-3-cp311-cp311-manylinux_2_28_x86_64.whl") == [("linux-x86_64", "3.11")]
    assert tw.wheel_build_tag("torch-2.10.0-3-cp311-cp311-manylinux_2_28_x86_64.whl") == 3
    assert tw.wheel_tags("torch-2.11.0-cp314-cp314t-win_amd64.whl") == [("windows-x86_64", "3.14t")]
    assert tw.wheel_tags("torch-2.10.0-cp311-none-macosx_11_0_arm64.whl") == []
    toolkit = ['cuda-toolkit[cublas,cudart]==13.0.2; platform_system == "Linux"']
    assert tw.cuda_from_requires(toolkit, "linux-aarch64", "3.12")[0] == "cu130"
    assert tw.cuda_from_requires(toolkit, "windows-x86_64", "3.12")[0] == "cpu"
    cu12 = ['nvidia-cuda-runtime-cu12==12.8.90; platform_system == "Linux" and platform_machine == "x86_64"']
    assert tw.cuda_from_requires(cu12, "linux-x86_64", "3.11")[0] == "cu128"
    assert tw.cuda_from_requires(cu12, "linux-aarch64", "3.11")[0] == "cpu"
    old = ['nvidia-cuda-runtime-cu12 (==12.1.105) ; platform_system == "Linux" and platform_machine == "x86_64"']
    assert tw.cuda_from_requires(old, "linux-x86_64", "3.8")[0] == "cu121"


def test_wheel_picked_is_the_one_pip_installs_and_saved_documents_load_back(tmp_path):
    versions = tw.load_pypi_dir(FIX / "pypi", tw.Version("2.4"))
    assert [pv.version for pv in versions] == ["2.10.0", "2.11.0"]
    picks = tw._pick_wheels(versions[0].files)
    assert picks["linux-x86_64"]["filename"] == "torch-2.10.0-3-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert "torch-2.10.0-cp39-cp39-manylinux_2_28_x86_64.whl" not in {f["filename"] for f in versions[0].files}
    for pv in versions:
        tw._save_pypi(tmp_path, pv)
    again = tw.load_pypi_dir(tmp_path, tw.Version("2.4"))
    assert [pv.doc["info"] for pv in again] == [pv.doc["info"] for pv in versions]
    assert set(again[1].wheels) == {"torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl"}
    assert tw.load_pypi_dir(FIX / "pypi", tw.Version("2.11"))[0].version == "2.11.0"


def test_wheel_arch_flags():
    assert tw.arch_from_wheel_flags("sm_50 sm_60 sm_90 sm_90a") == ["5.0", "6.0", "9.0", "9.0a"]
    assert tw.arch_from_wheel_flags("sm_75 sm_120 compute_120") == ["7.5", "12.0+PTX"]
    assert tw.af_targets(["9.0", "9.0a", "10.0f", "12.0+PTX"]) == ["9.0a", "10.0f"]
    with pytest.raises(tw.ParseError):
        tw.arch_from_wheel_flags("sm_75 compute_90")
    blob = b"\x00ipc_hsm_70 sm_75 sm_120 compute_120\x00sm_80\x00"
    assert [m.group(1) for m in tw._FLAGS.finditer(blob)] == [b"sm_70 sm_75 sm_120 compute_120"]


def test_releases_code_cc_from_torch_cuda_init():
    got = tw.releases_code_cc(_text(FIX / "shapes/torch_cuda_init.py"))
    assert got["releases_code_cc"] == {"12.6": {"x86_64": [50, 60, 70, 75, 80, 86, 90], "aarch64": [80, 90]},
                                       "13.2": {"x86_64": [75, 80, 86, 90, 100, 120],
                                                "aarch64": [80, 90, 100, 110, 120]}}
    assert got["releases_code_cc_comment"].startswith("TORCH_CUDA_ARCH_LIST for PyTorch releases, keyed by host")
    assert "validator" in got["releases_code_cc_comment"]
    assert tw.releases_code_cc("X = 1\n") == {}


# ------------------------------------------------------------------------------------------ the whole table

def _generate(tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "torch_wheels.yaml"
    code = refresh_data.main(["torch", "--pypi-dir", str(FIX / "pypi"), "--sources", str(SRC),
                              "--out", str(out), "--date", "2026-11-27", *extra])
    assert code == 0
    return out


def test_fixture_table_matches_expected(tmp_path):
    out = _generate(tmp_path)
    got = yaml.safe_load(out.read_text())
    expected = yaml.safe_load((FIX / "expected.yaml").read_text())
    got["generated"]["by"] = expected["generated"]["by"] = "<command>"
    assert got == expected
    assert out.read_text().startswith("# PyTorch wheels per release")


def test_missing_arch_source_is_unconfirmed_not_copied(tmp_path):
    table = yaml.safe_load(_generate(tmp_path).read_text())
    r210, r211 = table["releases"]["2.10"], table["releases"]["2.11"]
    # 2.10 has a cu128 Windows list; 2.11 builds cu128 for Windows too but no 2.11 file sets it
    assert r210["variants"]["cu128"]["arch"]["windows-x86_64"][0] == "7.0"
    assert "windows-x86_64" in r211["variants"]["cu128"]["platforms"]
    assert "windows-x86_64" not in r211["variants"]["cu128"]["arch"]
    assert any(u.startswith("cu128 windows-x86_64 arch list") for u in r211["unconfirmed"])
    # no RELEASE.md for 2.11: no matrix row, and it says so
    assert "matrix" not in r211 and any(u.startswith("matrix:") for u in r211["unconfirmed"])


def test_release_code_cc_fills_cubins_only_when_validated_and_never_over_a_disagreement(tmp_path):
    table = yaml.safe_load(_generate(tmp_path).read_text())
    r210, r211 = table["releases"]["2.10"], table["releases"]["2.11"]
    # 2.10: validated per-host table; cu128 aarch64 has no build file, so the table gives its cubins, PTX unknown
    assert r210["variants"]["cu128"]["arch"]["linux-aarch64"] == ["8.0", "9.0", "10.0", "12.0"]
    assert "PYTORCH_RELEASES_CODE_CC['12.8']['aarch64']" in r210["variants"]["cu128"]["source"]["linux-aarch64"]
    assert any(u.startswith("cu128 linux-aarch64 PTX:") for u in r210["unconfirmed"])
    # cu130 aarch64: build_cuda.sh and the table disagree -> neither is written
    assert "linux-aarch64" not in r210["variants"]["cu130"]["arch"]
    assert any(u.startswith("cu130 linux-aarch64 arch list:") and "says" in u for u in r210["unconfirmed"])
    # 2.11: the older union-of-hosts table is recorded, not used
    assert r211["code_cc"]["form"] == "union of hosts"
    assert "windows-x86_64" not in r211["variants"]["cu128"]["arch"]


def test_wheel_reading_is_used_and_cited(tmp_path):
    r211 = yaml.safe_load(_generate(tmp_path).read_text())["releases"]["2.11"]
    assert r211["pypi"] == {"linux-x86_64": "cu130", "linux-aarch64": "cu130", "windows-x86_64": "cpu"}
    source = r211["variants"]["cu130"]["source"]["linux-x86_64"]
    assert source.startswith("PyPI wheel torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl")
    assert "agrees with pytorch/pytorch@cccc" in source


def test_check_mode(tmp_path):
    out = _generate(tmp_path)
    args = ["torch", "--pypi-dir", str(FIX / "pypi"), "--sources", str(SRC), "--out", str(out),
            "--date", "2026-11-27", "--check"]
    assert refresh_data.main(args) == 0
    out.write_text(out.read_text() + "# edited\n")
    assert refresh_data.main(args) == 1


def _git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout


def test_git_mode_picks_the_go_live_commit_and_the_tag(tmp_path):
    matrix = _text(SRC / "2.10/pytorch+test-infra/tools/scripts/generate_binary_build_matrix.py")
    ti = tmp_path / "test-infra"
    (ti / "tools/scripts").mkdir(parents=True)
    _git(ti, "init", "-q", "-b", "main")
    shas = []
    for stable, cudas in (("2.9.1", '["12.6", "12.8", "13.0"]'), ("2.10.0", '["12.6", "12.8", "13.0"]'),
                          ("2.10.0", '["12.6", "13.0"]')):
        text = matrix.replace('CURRENT_STABLE_VERSION = "2.10.0"', f'CURRENT_STABLE_VERSION = "{stable}"')
        text = text.replace('"release": ["12.6", "12.8", "13.0"]', f'"release": {cudas}')
        (ti / tw.MATRIX_PATH).write_text(text)
        _git(ti, "add", "-A")
        _git(ti, "commit", "-q", "-m", stable)
        shas.append(_git(ti, "rev-parse", "HEAD").strip())
    pt = tmp_path / "pytorch"
    (pt / ".ci/manywheel").mkdir(parents=True)
    _git(pt, "init", "-q", "-b", "main")
    (pt / ".ci/manywheel/build_cuda.sh").write_text(_text(SRC / "2.10/pytorch+pytorch/.ci/manywheel/build_cuda.sh"))
    _git(pt, "add", "-A")
    _git(pt, "commit", "-q", "-m", "x")
    _git(pt, "tag", "v2.10.0")
    sources = tw.SourceSet(pytorch=pt, test_infra=ti)
    got = sources.matrix("2.10")
    assert got.channel == "release" and shas[1] in got.cite and shas[2] not in got.cite
    assert tw.matrix_cuda_by_platform(tw.py_literals(got.text), "release")["linux-x86_64"] == ["12.6", "12.8", "13.0"]
    assert sources.matrix("2.11") is None
    read = sources.read("2.10", "pytorch/pytorch", ".ci/manywheel/build_cuda.sh")
    assert read.cite.endswith(".ci/manywheel/build_cuda.sh (v2.10.0)") and "case ${CUDA_VERSION}" in read.text
    assert sources.read("2.11", "pytorch/pytorch", ".ci/manywheel/build_cuda.sh") is None


# ------------------------------------------------------------------------------------ the committed table

COMMITTED = ROOT / "doctor" / "data" / "torch_wheels.yaml"


def test_committed_table_covers_every_release_with_sources():
    table = yaml.safe_load(COMMITTED.read_text())
    assert table["schema"] == 2
    assert table["platforms"] == list(tw.PLATFORMS)
    assert table["generated"]["by"].startswith("python scripts/refresh_data.py torch")
    releases = table["releases"]
    minors = [Version(r) for r in releases]
    assert minors == sorted(minors, reverse=True), "newest first"
    for minor in range(4, 16):
        assert f"2.{minor}" in releases, f"2.{minor} missing"
    for name, rel in releases.items():
        assert rel["versions"] and all(v.startswith(name + ".") for v in rel["versions"])
        assert rel["sources"]["pypi"], name
        assert rel["sources"].get("variants") or any(u.startswith("variants:") for u in rel.get("unconfirmed", []))
        assert rel["pypi"]["linux-x86_64"].startswith(("cu", "cpu"))
        for variant, entry in rel["variants"].items():
            assert variant == tw.variant_of(entry["cuda"])
            for platform in entry["platforms"]:
                if platform in entry.get("arch", {}):
                    arch = entry["arch"][platform]
                    assert arch == sorted(arch, key=tw.arch_sort_key)
                    assert entry["source"][platform]
                else:
                    assert any(u.startswith(f"{variant} {platform} arch list") for u in rel["unconfirmed"]), \
                        (name, variant, platform)


def test_committed_table_pypi_default_has_its_arch_list():
    """Every CUDA wheel PyPI serves has the arch list it was built with (read from the wheel itself)."""
    releases = yaml.safe_load(COMMITTED.read_text())["releases"]
    for name, rel in releases.items():
        for platform, variant in rel["pypi"].items():
            if variant != "cpu":
                assert platform in rel["variants"][variant].get("arch", {}), (name, platform, variant)
