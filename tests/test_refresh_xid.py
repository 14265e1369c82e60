"""scripts/refresh/xid.py on a small fixture page in the rendered shape of NVIDIA's Xid catalog, and the committed
doctor/data/xid.yaml (no network)."""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "refresh" / "xid"
sys.path.insert(0, str(REPO / "scripts"))

import refresh_data  # noqa: E402
from refresh import xid  # noqa: E402


def parsed() -> xid.Catalog:
    return xid.parse_catalog((FIX / "catalog.txt").read_text(encoding="utf-8"))


def test_rows_and_cells_placed_by_content():
    cat = parsed()
    rows = {r["code"]: r for r in cat.rows}
    assert sorted(rows) == [2, 13, 48, 79, 92, 150, 163, 171]
    assert rows[13]["action"] == "RESTART_APP" and rows[13]["investigatory"] == "WORKFLOW_XID_13"
    assert rows[13]["trigger"].startswith("Fixture prose: an application fault")
    assert rows[48]["xid154_linkage"] == "CUDA 12.7; GPU driver R565" and rows[48]["trigger"].startswith("Fixture")
    assert rows[79]["applies_to"] == ["A100", "H100", "GB200"]          # the B100 cell says NO
    assert rows[2]["investigatory"] == "N/A; Unused" and rows[2]["applies_to"] == []
    assert rows[163]["action"] is None and "prose" in rows[163]["unconfirmed"]
    assert rows[171]["action"] is None and rows[171]["unconfirmed"] == "the catalog row gives no Immediate Action"
    assert cat.url == "https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html"
    assert cat.guidance["RESTART_BM"] == "Fixture: restart the machine"


def test_severity_mapping_from_nvidia_action():
    doc = xid.build(parsed())
    sev = {c: e["severity"] for c, e in doc["codes"].items()}
    assert sev == {2: "warn", 13: "warn", 48: "fail", 79: "fail", 92: "info", 150: "warn", 163: "warn", 171: "warn"}
    assert doc["codes"][150]["unconfirmed"] == "immediate action 'DRAIN_THE_RACK' is not in doctor's severity mapping"
    assert doc["actions"]["RESTART_BM"] == "Fixture: restart the machine"
    assert all(e["source"].startswith("https://docs.nvidia.com/deploy/xid-errors/") for e in doc["codes"].values())


def test_cli_writes_and_checks(tmp_path, capsys):
    out = tmp_path / "xid.yaml"
    args = ["xid", "--catalog", str(FIX / "catalog.txt"), "--out", str(out)]
    assert refresh_data.main(args) == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["codes"][79]["action"] == "RESTART_BM" and doc["schema"] == 2
    assert "DRAIN_THE_RACK" in capsys.readouterr().err             # an unmapped action is reported
    assert refresh_data.main(args + ["--check"]) == 0
    out.write_text(out.read_text().replace("RESTART_BM", "IGNORE", 1))
    assert refresh_data.main(args + ["--check"]) == 1


def test_no_rows_is_an_error(tmp_path):
    page = tmp_path / "empty.txt"
    page.write_text("source: https://docs.nvidia.com/deploy/xid-errors/\nnothing here\n")
    assert refresh_data.main(["xid", "--catalog", str(page), "--out", str(tmp_path / "x.yaml")]) == 2
    assert not (tmp_path / "x.yaml").exists()


def test_committed_table_is_generated_and_complete():
    doc = yaml.safe_load((REPO / "doctor" / "data" / "xid.yaml").read_text())
    codes = doc["codes"]
    assert set(range(1, 173)) <= set(codes)                          # NVIDIA's catalog runs 1..172
    for code, e in codes.items():
        assert e["severity"] in ("fail", "warn", "info") and e["source"].startswith("https://docs.nvidia.com/"), code
        assert e["severity"] == xid.severity(e["action"]), code       # derived, never hand-set
    assert codes[79]["action"] == "RESTART_BM" and codes[79]["severity"] == "fail"
    assert codes[13]["action"] == "RESTART_APP" and codes[43]["action"] == "IGNORE"
    assert codes[154]["action"] == "XID_154" and codes[145]["action"] == "WORKFLOW_NVLINK5_ERR"
    assert doc["actions"]["RESTART_BM"].startswith("Restart bare metal")


# ------------------------------------------------------------------------------------------------ the gpu.xid check

def _xid_facts(*lines: str):
    import factsbuilder as fb
    from doctor.probes.kernel import parse_xid

    facts = fb.gpu_box(count=2)
    facts["kernel"] = {"readable": True, "source": "/dev/kmsg", "xid_events": parse_xid(lines)}
    return facts


def test_gpu_xid_uses_nvidia_action_in_the_remediation():
    from doctor.checks.gpu_health import gpu_xid
    from doctor.model import Status

    r = gpu_xid(_xid_facts("NVRM: Xid (PCI:0000:17:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."))
    assert r.status is Status.FAIL and "(NVIDIA immediate action: RESTART_BM)" in r.summary
    assert "Restart bare metal" in r.remediation.text
    assert r.remediation.url == "https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html"
    r = gpu_xid(_xid_facts("NVRM: Xid (PCI:0000:18:00): 95, pid=1, name=python, Uncontained ECC error"))
    assert r.status is Status.FAIL and any("--gpu-reset -i 1" in c for c in r.remediation.commands)
    r = gpu_xid(_xid_facts("NVRM: Xid (PCI:0000:18:00): 13, pid=4242, name=python, Graphics Exception"))
    assert r.status is Status.WARN and "The application should be restarted" in r.remediation.text


def test_gpu_xid_ignore_passes_and_xid_154_reads_its_text():
    from doctor.checks.gpu_health import gpu_xid
    from doctor.model import Status

    r = gpu_xid(_xid_facts("NVRM: Xid (PCI:0000:17:00): 43, pid=7, name=python, Ch 00000010"))
    assert r.status is Status.PASS and "need no action" in r.summary and "[info]" in r.details[0]
    reboot = ("NVRM: Xid (PCI:0000:17:00): 154, GPU recovery action changed from 0x0 (None) to 0x2 "
              "(Node Reboot Required)")
    r = gpu_xid(_xid_facts(reboot))
    assert r.status is Status.FAIL and "XID_154: Node Reboot Required" in r.summary
    none = "NVRM: Xid (PCI:0000:17:00): 154, GPU recovery action changed from 0x2 (Node Reboot Required) to 0x0 (None)"
    assert gpu_xid(_xid_facts(none)).status is Status.PASS
    assert gpu_xid(_xid_facts("NVRM: Xid (PCI:0000:17:00): 9999, made up")).status is Status.WARN
