"""scripts/refresh/cuda_drivers.py on small fixture pages, and the committed doctor/data/cuda.yaml (no network)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "refresh" / "cuda"
sys.path.insert(0, str(REPO / "scripts"))

import refresh_data  # noqa: E402
from refresh import cuda_drivers as cd  # noqa: E402

ARGS = ["cuda",
        "--release-notes", str(FIX / "notes_pipes.txt"), str(FIX / "notes_lines.txt"), str(FIX / "notes_old.html"),
        "--compat", str(FIX / "compat_forward.txt"), str(FIX / "compat_minor.txt"),
        "--ptx-isa", str(FIX / "ptx_history.html"), str(FIX / "ptx_history.txt"),
        "--redistrib", str(FIX / "redistrib_12.8.0.json"),
        "--known-toolkits", "13.5", "--date", "2030-01-01"]


def rows_of(name: str) -> dict:
    return {r.release: r for r in cd.parse_driver_rows(cd.read_page(FIX / name).tokens)}


# ------------------------------------------------------------------------------------------------ parsers

def test_pipe_rows_ga_update_na_and_footnotes():
    rows = rows_of("notes_pipes.txt")
    assert rows["12.8 Update 1"].linux == "512.81.01" and rows["12.8 Update 1"].windows == "512.82"
    assert rows["12.8 Update 1"].version == "12.8.1" and rows["12.8 GA"].version == "12.8.0"
    assert rows["13.2 GA"].linux == "513.20.01"            # ">=513.20.01*": footnote mark dropped
    assert rows["13.2 GA"].cells[0] == ">=513.20.01*"      # ... but kept in the raw cell
    assert rows["13.2 Update 1"].windows is None and rows["13.2 Update 1"].cells[1] == "N/A**"
    assert rows["11.4.0 GA"].version == "11.4.0"           # label with its own patch number
    assert not any("RC" in r for r in rows)                # "CUDA 11.0.1 RC" is not a release row
    assert not any(r.startswith("10.2") for r in rows)     # "CUDA 10.2.89" has no GA/Update label


def test_one_cell_per_line_and_html_shapes_give_the_same_rows():
    lines, pipes, html = rows_of("notes_lines.txt"), rows_of("notes_pipes.txt"), rows_of("notes_old.html")
    assert set(lines) == {"12.8 GA", "12.8 Update 1"}
    for rel in lines:
        assert (lines[rel].linux, lines[rel].windows) == (pipes[rel].linux, pipes[rel].windows)
    assert html["12.0 GA"].linux == pipes["12.0 GA"].linux == "512.00.01"
    assert "12.1 GA" in html  # the <script> copy of "CUDA 12.1 GA" is not a second row
    assert len([r for r in cd.parse_driver_rows(cd.read_page(FIX / "notes_old.html").tokens)
                if r.release == "12.1 GA"]) == 1


def test_page_source_and_title():
    page = cd.read_page(FIX / "notes_old.html")
    assert page.url == "https://docs.nvidia.com/cuda/archive/12.1.0/cuda-toolkit-release-notes/index.html"
    assert page.title == "CUDA 12.1 Release Notes"
    page = cd.read_page(FIX / "notes_pipes.txt")
    assert page.url.endswith("/archive/13.2.2/cuda-toolkit-release-notes/index.html") and page.read_via == "fixture"
    assert page.title == "CUDA Toolkit 13.2 Update 2 - Release Notes"
    assert not any(t.startswith(("source:", "read_via:")) for t in page.tokens)


def test_branch_rows():
    assert cd.parse_branch_rows(cd.read_page(FIX / "notes_lines.txt").tokens) == {"13.4": "515", "13.2": "513",
                                                                                  "13.0": "513"}
    assert cd.parse_branch_rows(cd.read_page(FIX / "notes_pipes.txt").tokens) == {}


def test_minor_version_ranges_both_shapes():
    new = cd.parse_minor_ranges(cd.read_page(FIX / "notes_pipes.txt").tokens)
    assert new["13"]["min"] == "580" and new["13"]["max_exclusive"] is None
    assert (new["12"]["min"], new["12"]["max_exclusive"]) == ("525", "580")
    guide = cd.parse_minor_ranges(cd.read_page(FIX / "compat_minor.txt").tokens)
    assert guide["11"]["max_exclusive"] == "525"           # "< 525 (newer drivers still supported ...)"
    old = cd.parse_minor_ranges(cd.read_page(FIX / "notes_old.html").tokens)
    assert (old["12"]["linux_exact"], old["12"]["windows_exact"]) == ("525.10.01", "525.15")


def test_exact_floors_in_prose():
    assert cd.parse_exact_floors(cd.read_page(FIX / "notes_pipes.txt").text)["11"]["windows"] == "502.02"
    lines = cd.parse_exact_floors(cd.read_page(FIX / "notes_lines.txt").text)["11"]
    assert (lines["linux"], lines["windows"]) == ("501.01.01", "502.02")
    fwd = cd.parse_exact_floors(cd.read_page(FIX / "compat_forward.txt").text)
    assert fwd["12"]["linux"] == "525.10.01" and fwd["12"]["quote"].startswith("For example")


def test_forward_compat_matrix():
    cols, rows = cd.parse_compat_matrix(cd.read_page(FIX / "compat_forward.txt").tokens)
    assert cols == [("511", "12.2"), ("512", "12.8"), ("513", "13.0")]
    assert rows["13.0"] == {"511": "compatible", "512": "compatible", "513": "not_applicable"}
    assert rows["12.8"]["513"] == "not_compatible"


def test_ptx_history_html_rowspan_and_duplicates():
    rows = cd.parse_ptx_history(cd.read_page(FIX / "ptx_history.html").tokens)
    by_cuda = {r["cuda"]: r for r in rows}
    assert by_cuda["12.6"]["ptx_isa"] == "8.5" and by_cuda["12.6"]["driver_branch"] == "560"
    assert by_cuda["12.6"]["targets"] == by_cuda["12.5"]["targets"]      # rowspan: shared targets cell
    assert by_cuda["12.8"]["targets"].count("sm_100") == 1               # "sm_{100,100,...}" as printed
    assert "sm_100a" not in by_cuda["12.8"]["targets"]
    assert len(rows) == 6                                                 # Table 72 cells are not rows


def test_ptx_history_text_shape():
    rows = cd.parse_ptx_history(cd.read_page(FIX / "ptx_history.txt").tokens)
    assert [(r["ptx_isa"], r["cuda"]) for r in rows] == [("8.4", "12.4"), ("8.5", "12.5"), ("8.5", "12.6"),
                                                          ("8.6", "12.7")]
    assert "sm_101a" in rows[-1]["targets"] and rows[2]["targets"] == rows[1]["targets"]


# ------------------------------------------------------------------------------------------------ whole run

@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "cuda.yaml"
    shutil.copy(FIX / "existing.yaml", path)
    return path


def test_fixture_run_matches_expected(out: Path):
    assert refresh_data.main(ARGS + ["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (FIX / "expected.yaml").read_text(encoding="utf-8")


def test_generated_data_semantics(out: Path):
    refresh_data.main(ARGS + ["--out", str(out)])
    data = yaml.safe_load(out.read_text(encoding="utf-8"))
    tk = data["toolkits"]
    assert list(tk) == sorted(tk, key=Version) and "11.7" not in tk and "11.4" not in tk
    assert tk["12.8"]["released"] == "2030-02" and tk["12.8"]["drivers"][0]["released"] == "2030-02-03"
    assert len(tk["12.8"]["sources"]) == 3                          # two pages agree + the manifest
    assert tk["13.2"]["driver_branch"] == "513" and tk["13.2"]["drivers"][1]["windows_cell"] == "N/A**"
    assert tk["13.4"]["drivers"] == [] and "unconfirmed" in tk["13.4"]
    assert "nor its driver branch" in tk["13.5"]["unconfirmed"]
    mvc = data["minor_version_compatibility"]
    assert (mvc["11"]["linux"], mvc["11"]["windows"]) == ("501.01.01", "502.02")
    assert (mvc["12"]["linux"], mvc["12"]["windows"]) == ("525.10.01", "525.15")
    assert mvc["13"]["min"] == "580" and mvc["13"]["linux"] is None
    ptx = data["ptx_isa"]
    assert ptx["targets_first_listed"]["sm_110"] == {"ptx_isa": "9.0", "cuda": "13.0"}
    assert ptx["targets_last_listed"]["sm_101a"] == {"ptx_isa": "8.7", "cuda": "12.8"}
    assert "sm_100" not in ptx["targets_last_listed"]
    assert data["forward_compatibility_matrix"]["packages"]["cuda-compat-12-8"]["512"] == "not_applicable"


def test_hand_kept_part_is_carried_over_verbatim_and_check_mode(out: Path):
    refresh_data.main(ARGS + ["--out", str(out)])
    text = out.read_text(encoding="utf-8")
    kept = (FIX / "existing.yaml").read_text(encoding="utf-8").split(cd.HAND_KEPT_MARKER, 1)[1]
    assert text.endswith(kept)
    assert refresh_data.main(ARGS + ["--out", str(out), "--check"]) == 0
    out.write_text(text.replace("512.81.01", "512.81.02"), encoding="utf-8")
    assert refresh_data.main(ARGS + ["--out", str(out), "--check"]) == 1


def test_disagreeing_pages_are_marked_not_merged(out: Path):
    args = ["cuda", "--release-notes", str(FIX / "notes_pipes.txt"), str(FIX / "notes_conflict.txt"),
            "--date", "2030-01-01", "--out", str(out)]
    assert refresh_data.main(args) == 0
    rows = {r["release"]: r for r in yaml.safe_load(out.read_text(encoding="utf-8"))["toolkits"]["12.8"]["drivers"]}
    assert "disagree" in rows["12.8 GA"]["unconfirmed"] and "512.80.99" in rows["12.8 GA"]["unconfirmed"]
    assert "unconfirmed" not in rows["12.8 Update 1"]


def test_hand_kept_cannot_shadow_generated_keys(tmp_path: Path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("toolkits: {}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="redefines generated keys"):
        refresh_data.main(ARGS + ["--out", str(tmp_path / "x.yaml"), "--hand-kept-from", str(bad)])


def test_known_toolkit_keeps_its_evidence(out: Path):
    args = ARGS[:-4] + ["--known-toolkits", "13.6=seen on page X", "11.2", "--date", "2030-01-01", "--out", str(out)]
    assert refresh_data.main(args) == 0
    tk = yaml.safe_load(out.read_text(encoding="utf-8"))["toolkits"]
    assert tk["13.6"]["sources"] == ["seen on page X"] and tk["13.6"]["drivers"] == []
    assert "11.2" not in tk                                              # below --min-toolkit


def test_no_driver_table_is_an_error(tmp_path: Path):
    assert refresh_data.main(["cuda", "--release-notes", str(FIX / "compat_minor.txt"),
                              "--out", str(tmp_path / "x.yaml")]) == 2
    assert not (tmp_path / "x.yaml").exists()


# ------------------------------------------------------------------------------------------------ committed data

COMMITTED = REPO / "doctor" / "data" / "cuda.yaml"
EXPECTED_TOOLKITS = ["11.6", "11.7", "11.8", "12.0", "12.1", "12.2", "12.3", "12.4", "12.5", "12.6", "12.8", "12.9",
                     "13.0", "13.1", "13.2", "13.3", "13.4", "13.5"]


@pytest.fixture(scope="module")
def committed() -> dict:
    text = COMMITTED.read_text(encoding="utf-8")
    assert cd.HAND_KEPT_MARKER in text and text.startswith("# CUDA toolkit <-> NVIDIA driver")
    return yaml.safe_load(text)


def test_committed_covers_every_toolkit_with_sources(committed: dict):
    tk = committed["toolkits"]
    assert committed["schema"] == 2 and list(tk) == EXPECTED_TOOLKITS
    for name, entry in tk.items():
        assert entry["sources"] and all(s.strip() for s in entry["sources"]), name
        assert entry["drivers"] or entry.get("unconfirmed"), name      # no rows without saying why
        if entry["drivers"]:
            assert entry["drivers"][0]["release"] == f"{name} GA", name
    for name in EXPECTED_TOOLKITS[:15]:                                  # 11.6 .. 13.2: rows read from NVIDIA
        assert tk[name]["drivers"] and all(s.startswith("https://docs.nvidia.com/")
                                           for s in tk[name]["sources"] if "redist" not in s), name


def _driver_strings(committed: dict):
    for entry in committed["toolkits"].values():
        for row in entry["drivers"]:
            for os_ in ("linux", "windows"):
                if row[os_] is None:
                    assert row.get(f"{os_}_cell"), row                  # N/A kept as printed, never guessed
                else:
                    yield row[os_]
    for row in committed["minor_version_compatibility"].values():
        for key in ("min", "max_exclusive", "linux", "windows"):
            if row.get(key):
                yield row[key]
    for row in committed["ptx_isa"]["versions"]:
        yield row["driver_branch"]


def test_committed_driver_strings_parse(committed: dict):
    strings = list(_driver_strings(committed))
    assert len(strings) > 60
    for s in strings:
        assert isinstance(s, str) and Version(s), s


def test_committed_known_rows(committed: dict):
    tk = committed["toolkits"]
    ga = {n: e["drivers"][0] for n, e in tk.items() if e["drivers"]}
    assert (ga["12.8"]["linux"], ga["12.8"]["windows"]) == ("570.26", "570.65")
    assert tk["12.8"]["drivers"][1]["linux"] == "570.124.06"
    assert ga["13.0"]["linux"] == "580.65.06" and ga["13.0"]["windows"] is None
    assert tk["13.4"]["driver_branch"] == "615" and tk["13.3"]["driver_branch"] == "610"
    for name, entry in tk.items():                                      # update rows never below their GA
        versions = [Version(r["linux"]) for r in entry["drivers"]]
        assert versions == sorted(versions), name
    mvc = committed["minor_version_compatibility"]
    assert (mvc["11"]["linux"], mvc["11"]["windows"]) == ("450.80.02", "452.39")
    assert mvc["12"]["linux"] == "525.60.13" and mvc["12"]["max_exclusive"] == "580"
    assert mvc["13"]["min"] == "580"


def test_committed_rules(committed: dict):
    t = committed["targets"]
    assert t["family_specific"]["runs_on"]["compute_100f"] == ["10.0", "10.3"]
    assert t["arch_specific"]["runs_on"] == "exact_cc" and t["arch_specific"]["since_cc"] == "9.0"
    assert committed["ptx_isa"]["targets_first_listed"]["sm_90a"]["cuda"] == "12.0"
    assert committed["ptx_isa"]["targets_first_listed"]["sm_110"]["cuda"] == "13.0"
    assert set(committed["ptx_isa"]["targets_last_listed"]) == {"sm_101", "sm_101a", "sm_101f"}
    for rng in t["compile_range"]:
        SpecifierSet(rng["toolkits"])
        assert rng["quote"] and rng["sources"] and Version(rng["min_cc"])
    fc = committed["forward_compatibility"]
    assert "{major}" in fc["install"]["apt"] and fc["applies_to"]["gpus"]
    assert committed["forward_compatibility_matrix"]["packages"]["cuda-compat-13-0"]["535"] == "compatible"
    for limit in committed["minor_version_limits"]["limits"]:
        assert limit["quote"].strip()
