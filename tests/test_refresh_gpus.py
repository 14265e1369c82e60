"""scripts/refresh/gpus.py on small fixture READMEs, and the committed doctor/data/gpus.yaml: exact NVML-name
look-ups, one row per name, sources, and the bench peaks read through it (no network)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "refresh" / "gpus"
sys.path.insert(0, str(REPO / "scripts"))

import refresh_data  # noqa: E402
from refresh import gpus as rg  # noqa: E402

from doctor import refdata  # noqa: E402
from doctor.bench import reference  # noqa: E402

DRIVER_DOC = "NVIDIA Linux driver 999.10.01 README, Appendix A 'Supported NVIDIA GPU Products'"
OLD_DOC = "NVIDIA Linux driver 400.01.02 README, Appendix A 'Supported NVIDIA GPU Products'"
OPEN_DOC = "NVIDIA open GPU kernel modules 999.20.03 README.md, 'Compatible GPUs'"


def products(name: str) -> list[rg.Product]:
    return rg.parse((FIX / name).read_text())[1]


# ------------------------------------------------------------------------------------------------ parsers

def test_driver_readme_rows_sections_and_version():
    doc, ps = rg.parse((FIX / "driver_README.txt").read_text())
    assert doc == DRIVER_DOC
    got = {(p.name, p.pci, p.section) for p in ps}
    assert ("Tesla V100-SXM2-16GB-LS", "1DB1 10DE 1307", "current") in got
    assert ("NVIDIA GeForce RTX 4090 Laptop GPU", "2717", "current") in got
    assert ("Tesla P4", "1BB3", "current") in got                        # VDPAU cell "H 2"
    assert ("Tesla K80", "102D", "legacy 470.xx") in got                 # legacy driver branch
    assert ("GeForce 8800 GT", "0611", "legacy 304.xx") in got           # table without a VDPAU column
    names = {p.name for p in ps}
    assert "Fake Product In Prose" not in names                           # before the appendix itself
    assert "Not A Product" not in names                                   # after it (Appendix B)
    assert len(ps) == 11


def test_old_driver_readme_layout_and_overlong_names():
    doc, ps = rg.parse((FIX / "driver_README_old.txt").read_text())
    assert doc == OLD_DOC
    got = {(p.name, p.pci) for p in ps}
    assert ("GeForce GTX 1660 Ti with Max-Q Design", "2191 103C 87B3") in got   # name runs into the PCI column
    assert ("A100-SXM4-80GB", "20B2 10DE 1463") in got                          # 450-era name, no "NVIDIA "
    assert ("Tesla T4", "1EB8") in got and len(ps) == 3


def test_open_readme_only_the_compatible_gpus_table():
    doc, ps = rg.parse((FIX / "open_README.md").read_text())
    assert doc == OPEN_DOC
    assert [p.name for p in ps][:2] == ["NVIDIA H100 80GB HBM3"] * 2
    assert {p.pci for p in ps if p.name == "NVIDIA H100 80GB HBM3"} == {"2330 10DE 16C0", "2330 10DE 16C1"}
    names = {p.name for p in ps}
    assert "NVIDIA Fake 9999" not in names and "NVIDIA Not Compatible" not in names
    assert len(ps) == 6


@pytest.mark.parametrize("text", ["", "Most Recent Driver Version: 1.2.3\nno appendix here\n",
                                  "open GPU kernel modules, version 1.2.3.\n## Other\n| A | 1234 |\n"])
def test_unparseable_inputs_are_refused(text):
    with pytest.raises(ValueError):
        rg.parse(text)


# ------------------------------------------------------------------------------------------------ compare / record

def lists():
    return [(rg.parse((FIX / n).read_text())[0], products(n), v)
            for n, v in (("driver_README.txt", "fixture copy"), ("driver_README_old.txt", None),
                         ("open_README.md", None))]


def test_compare_found_missing_candidates():
    data = yaml.safe_load((FIX / "table.yaml").read_text())
    rep = rg.compare(data, lists())
    h100 = rep.found["H100 SXM5 80GB"]
    assert {(e["doc"], tuple(e["pci_ids"])) for e in h100} == {
        (DRIVER_DOC, ("2330 10DE 16C0",)), (OPEN_DOC, ("2330 10DE 16C0", "2330 10DE 16C1"))}
    assert next(e for e in h100 if e["doc"] == DRIVER_DOC)["via"] == "fixture copy"
    a100 = {(e["name"], e["doc"]) for e in rep.found["A100 SXM4 80GB"]}
    assert a100 == {("NVIDIA A100-SXM4-80GB", DRIVER_DOC), ("A100-SXM4-80GB", OLD_DOC)}
    assert rep.found["Tesla K80"][0]["section"] == "legacy 470.xx"
    assert rep.missing == {"Mystery": ["NVIDIA Mystery 1"], "Mystery explained": ["NVIDIA Mystery 2"]}
    cands = {p.name for p in rep.candidates}
    assert {"NVIDIA B200", "NVIDIA GB10", "NVIDIA H200", "NVIDIA GeForce RTX 4090 Laptop GPU"} <= cands
    assert "NVIDIA GH200 480GB" not in cands and "a100-sxm4-80gb" not in {c.lower() for c in cands}
    assert rep.duplicates == []


def test_compare_flags_a_name_on_two_rows():
    data = yaml.safe_load((FIX / "table.yaml").read_text())
    data["gpus"][1]["nvml_names"].append("nvidia  h100 80gb hbm3")       # same name, other case and spacing
    assert rg.compare(data, lists()).duplicates == ["nvidia h100 80gb hbm3"]


def test_record_replaces_entries_of_the_same_document_only():
    data = yaml.safe_load((FIX / "table.yaml").read_text())
    ls = lists()
    rg.record(data, rg.compare(data, ls), [doc for doc, _, _ in ls])
    h100 = data["gpus"][0]["nvml_readme"]
    assert {"doc": "an older document", "name": "NVIDIA H100 80GB HBM3", "pci_ids": [2330],
            "section": "current"} in h100                                   # another document: kept
    assert [e["pci_ids"] for e in h100 if e["doc"] == DRIVER_DOC] == [["2330 10DE 16C0"]]   # stale 9999 replaced
    assert "nvml_readme" not in data["gpus"][4]                             # nothing found, nothing recorded


# ------------------------------------------------------------------------------------------------ CLI

def cli_args(table: Path, *extra: str) -> list[str]:
    return ["gpus", "--readme", str(FIX / "driver_README.txt"), "--via", "fixture copy",
            "--readme", str(FIX / "open_README.md"), "--data", str(table), *extra]


def test_cli_write_is_idempotent_and_strict_exit(tmp_path, capsys):
    table = tmp_path / "gpus.yaml"
    shutil.copy(FIX / "table.yaml", table)
    assert refresh_data.main(cli_args(table, "--write")) == 0
    first = table.read_text()
    data = yaml.safe_load(first)
    assert data["gpus"][2]["nvml_readme"][0]["via"] == "fixture copy"
    assert refresh_data.main(cli_args(table, "--write")) == 0
    assert table.read_text() == first
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "  missing Mystery: 'NVIDIA Mystery 1' is in none of the lists given  <- the row gives no reason" in lines
    assert "  missing Mystery explained: 'NVIDIA Mystery 2' is in none of the lists given" in lines   # says why
    assert "  missing A100 SXM4 80GB: 'A100-SXM4-80GB' is in none of the lists given  <- the row gives no reason" \
        in lines                                                            # the 400.xx README was not given
    assert refresh_data.main(cli_args(table, "--strict")) == 1              # Mystery 1 has no reason
    assert refresh_data.main(cli_args(table, "--candidates", "B200|GB10")) == 0
    out = capsys.readouterr().out
    assert "candidate 'NVIDIA B200'" in out and "candidate 'NVIDIA GB10'" in out and "'NVIDIA H200'" not in out


def test_cli_refuses_a_file_that_is_no_list(tmp_path):
    bad = tmp_path / "x.txt"
    bad.write_text("hello\n")
    assert refresh_data.main(["gpus", "--readme", str(bad), "--data", str(FIX / "table.yaml")]) == 2


# ------------------------------------------------------------------------------------------------ the committed table

TABLE = yaml.safe_load((REPO / "doctor" / "data" / "gpus.yaml").read_text())
ROWS = TABLE["gpus"]


def test_table_is_schema_2_and_laid_out_as_the_script_writes_it():
    assert TABLE["schema"] == 2
    assert rg.dump(TABLE) == (REPO / "doctor" / "data" / "gpus.yaml").read_text()


def test_no_two_rows_share_an_nvml_name_or_a_display_name():
    keys = [refdata.gpu_key(n) for r in ROWS for n in r["nvml_names"]]
    assert len(keys) == len(set(keys))
    assert len({r["name"] for r in ROWS}) == len(ROWS)


def test_every_row_has_cc_source_and_a_known_architecture():
    for r in ROWS:
        assert r["nvml_names"] and r["source"].strip() and isinstance(r["cc"], str), r["name"]
        assert r["cc"] in TABLE["architectures"], r["name"]
        assert isinstance(r["memory_gb"], (int, float)) and r["memory_gb"] > 0, r["name"]
        assert r["segment"] in {"data-center", "workstation", "consumer", "embedded"}, r["name"]
        assert isinstance(r["unified_memory"], bool), r["name"]
    for cc, a in TABLE["architectures"].items():
        assert a["name"] and a["source"].strip(), cc
        assert refdata.architecture(cc) == a["name"]


def test_every_nvml_name_is_backed_by_an_nvidia_list_or_the_row_says_why():
    for r in ROWS:
        listed = {refdata.gpu_key(e["name"]) for e in r.get("nvml_readme") or []}
        for n in r["nvml_names"]:
            assert refdata.gpu_key(n) in listed or r.get("unconfirmed"), (r["name"], n)
        for e in r.get("nvml_readme") or []:
            assert e["doc"] and e["pci_ids"] and e["section"], r["name"]


def test_peaks_are_cited_dense_figures():
    for r in ROWS:
        p = r.get("peaks")
        if p:
            assert p["source"].strip() and p.get("fp16_tflops") and p.get("bandwidth_gbs"), r["name"]
            assert p.get("bf16_tflops") is None or float(r["cc"]) >= 8.0, r["name"]   # no bf16 before Ampere


def test_coverage_of_the_gpus_users_meet():
    need = ["NVIDIA B200", "NVIDIA B300 SXM6 AC", "NVIDIA GB200", "NVIDIA GB300", "NVIDIA H100 80GB HBM3",
            "NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H200", "NVIDIA H200 NVL", "NVIDIA GH200 480GB",
            "NVIDIA GH200 144G HBM3e", "NVIDIA H800", "NVIDIA H20", "NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB",
            "NVIDIA A100-PCIE-40GB", "NVIDIA A100 80GB PCIe", "NVIDIA A800-SXM4-80GB", "NVIDIA A800 80GB PCIe",
            "NVIDIA A800-SXM4-40GB", "NVIDIA A30", "NVIDIA A40", "NVIDIA A10", "NVIDIA A10G", "NVIDIA A16", "NVIDIA A2",
            "NVIDIA L4", "NVIDIA L40", "NVIDIA L40S", "NVIDIA L20", "Tesla T4",
            "NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "NVIDIA RTX PRO 6000 Blackwell Server Edition",
            "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", "NVIDIA RTX 6000 Ada Generation",
            "NVIDIA RTX A6000", "NVIDIA RTX A5000", "NVIDIA RTX A4000", "NVIDIA GeForce RTX 5090",
            "NVIDIA GeForce RTX 5080", "NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090 D",
            "NVIDIA GeForce RTX 4090 Laptop GPU", "NVIDIA GeForce RTX 4080", "NVIDIA GeForce RTX 3090",
            "NVIDIA GeForce RTX 3090 Ti", "NVIDIA GeForce RTX 3080", "NVIDIA GB10", "Tesla V100-SXM2-16GB",
            "Tesla V100-SXM2-32GB", "Tesla V100-PCIE-16GB", "Tesla V100-PCIE-32GB", "Tesla V100S-PCIE-32GB",
            "Tesla P100-PCIE-16GB", "Tesla P40", "Tesla P4", "Tesla M60", "Tesla M40", "NVIDIA GeForce GTX 1080 Ti",
            "NVIDIA TITAN V", "NVIDIA TITAN RTX", "Tesla K80"]
    assert [n for n in need if refdata.gpu_spec(n) is None] == []


# ------------------------------------------------------------------------------------------------ exact look-ups

def test_lookups_are_exact_never_a_near_pattern():
    gh = refdata.gpu_spec("NVIDIA GH200 480GB")
    assert gh["name"].startswith("GH200") and gh["memory_gb"] == 96
    assert gh is not refdata.gpu_spec("NVIDIA H200")
    assert refdata.gpu_spec("NVIDIA GB200")["name"] == "GB200" != refdata.gpu_spec("NVIDIA B200")["name"]
    laptop = refdata.gpu_spec("NVIDIA GeForce RTX 4090 Laptop GPU")
    assert laptop["memory_gb"] == 16 and laptop["form"] == "laptop"
    assert refdata.gpu_spec("NVIDIA GeForce RTX 4090")["memory_gb"] == 24
    assert refdata.gpu_spec("Tesla V100S-PCIE-32GB")["name"] != refdata.gpu_spec("Tesla V100-PCIE-32GB")["name"]
    assert refdata.gpu_spec("NVIDIA A100-PCIE-40GB")["form"] == "PCIe"
    assert refdata.gpu_spec("NVIDIA A100-SXM4-40GB")["form"] == "SXM"
    assert refdata.gpu_spec("A100-SXM4-40GB") is refdata.gpu_spec("NVIDIA A100-SXM4-40GB")   # 450.xx driver's name


@pytest.mark.parametrize("name", ["NVIDIA H100", "NVIDIA H100 80GB", "H100", "NVIDIA GH200", "NVIDIA H20-3e",
                                  "NVIDIA GeForce RTX 4090 Ti", "NVIDIA GeForce RTX 5090 D", "mystery", "", None])
def test_unknown_or_partial_names_are_unverified(name):
    assert refdata.gpu_spec(name) is None


def test_case_and_white_space_do_not_matter():
    row = refdata.gpu_spec("NVIDIA H100 80GB HBM3")
    assert refdata.gpu_spec("NVIDIA H100 80GB HBM3 ") is row
    assert refdata.gpu_spec("  nvidia  H100\t80gb hbm3") is row


def test_gb10_is_unified_memory():
    gb10 = refdata.gpu_spec("NVIDIA GB10")
    assert gb10["unified_memory"] is True and gb10["cc"] == "12.1" and refdata.architecture("12.1") == "Blackwell"


# ------------------------------------------------------------------------------------------------ bench peaks

def test_bench_reference_reads_peaks_by_exact_name():
    h100 = reference.gpu_reference("NVIDIA H100 80GB HBM3")
    assert h100["name"] == "H100 SXM5 80GB"
    assert (h100["fp16_tflops"], h100["bf16_tflops"], h100["bandwidth_gbs"]) == (989.4, 989.4, 3350)
    assert h100["source"]
    assert reference.gpu_reference("NVIDIA H100 PCIe")["bandwidth_gbs"] == 2000
    assert reference.gpu_reference("NVIDIA H200")["bandwidth_gbs"] == 4800
    assert reference.gpu_reference("NVIDIA GH200 480GB") is None          # a row, but no peaks: not the H200's
    assert reference.gpu_reference("NVIDIA A10G") is None                 # not the A10's datasheet
    v100 = reference.gpu_reference("Tesla V100-SXM2-32GB")
    assert v100["fp16_tflops"] == 125 and "bf16_tflops" not in v100
    assert reference.gpu_reference("Some Future GPU") is None and reference.gpu_reference(None) is None


def test_bench_levels_and_tolerances_kept():
    assert "gpus" not in reference.data()
    assert reference.level("matmul", "warn_fraction") == 0.6
    assert reference.tolerance("fp16")["rel_error"] == 5.0e-3
