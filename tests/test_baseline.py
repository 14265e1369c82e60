"""`doctor baseline capture`: a known-good node's report -> a profile (provenance on every value, missing facts left
out with why) that loads with `doctor check --profile`, passes the node it came from and fails a node with an
older driver, fewer GPUs, a slower GPU or another torch; bad input is one line and exit 2."""
from __future__ import annotations

import json
import math
import os
import re
import shlex
from pathlib import Path

import pytest
from benchfacts import device
from factsbuilder import QWEN_QLORA_ENV, autodl_box, edit, recorded

from doctor.errors import InputError
from doctor.fleet.baseline import FIGURES, build, parse_tolerance

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "fleet.md"
A800 = "NVIDIA A800-SXM4-80GB"
FP16 = [280.0, 281.0, 279.0, 282.0, 280.5, 278.0, 283.0, 281.5]   # median 280.75
GBPS = [1800.0, 1810.0, 1790.0, 1805.0, 1795.0, 1808.0, 1802.0, 1799.0]


def a800_node(host: str = "gpu01", count: int = 8, fp16: list[float] | None = None, **gpu) -> dict:
    """LITERAL 8x A800 facts (tests/factsbuilder) with a LITERAL bench section (tests/benchfacts) per GPU."""
    facts = autodl_box(dict(QWEN_QLORA_ENV), hf_home="/root/autodl-tmp/huggingface", count=count, **gpu)
    facts["provenance"]["hostname"] = host
    rates = (fp16 or FP16)[:count]
    facts["bench"] = {"status": "ok", "device_type": "cuda", "timeout_s": 180.0, "duration_s": 30.0,
                      "devices": [device(i, A800, fp16=rates[i], bf16=rates[i] + 2, gbps=GBPS[i], hvp_rate=10.0)
                                  for i in range(count)]}
    facts["provenance"]["edited"] += f" LITERAL bench section ({count}x {A800})."
    return facts


def report_of(cli, facts: dict, tmp: Path, name: str, *profiles: str) -> Path:
    """The real `doctor check --format json` report of `facts`."""
    src, out = tmp / f"{name}.facts.json", tmp / f"{name}.json"
    src.write_text(json.dumps(facts))
    refs = [a for p in (profiles or ("base",)) for a in ("-p", p)]
    code, _, err = cli("check", "--facts", str(src), *refs, "--format", "json", "--output", str(out))
    assert code in (0, 1, 3) and out.is_file(), err
    return out


def check_with(cli, profile: Path, facts: dict, tmp: Path) -> tuple[int, dict[str, dict]]:
    src = tmp / "node.facts.json"
    src.write_text(json.dumps(facts))
    out = tmp / "node.report.json"
    code, _, err = cli("check", "--facts", str(src), "-p", str(profile), "--format", "json", "--output", str(out))
    assert code in (0, 1, 3), err
    return code, {r["id"]: r for r in json.loads(out.read_text())["results"]}


@pytest.fixture
def captured(cli, tmp_path) -> Path:
    report = report_of(cli, a800_node(), tmp_path, "gpu01")
    out = tmp_path / "site-baseline.yaml"
    code, stdout, err = cli("baseline", "capture", "--from-report", str(report), "--output", str(out),
                            "--name", "lab-a800")
    assert code == 0 and out.is_file(), err
    assert f"wrote {out}" in stdout and f"doctor check --profile {out}" in stdout
    return out


def test_capture_writes_every_value_with_its_source(captured):
    text = captured.read_text()
    assert re.search(r"^# Source: .*gpu01\.json; host gpu01; report created \S+ by doctor 0\.1\.0; profiles judged: "
                     r"base; verdict exit 0\.$", text, re.MULTILINE), text
    assert "written by `doctor baseline capture` (doctor " in text and "Site baseline lab-a800" in text
    body = [line for line in text.splitlines() if not line.startswith("#")]
    leaves = [line for line in body if re.match(r"\s+\S+: \S", line) and "id:" not in line]
    assert leaves and all("# " in line for line in leaves), [line for line in leaves if "# " not in line]
    assert re.search(r'^    count: 8 +# facts\.gpu\.devices: 8 GPU\(s\) on gpu01$', text, re.MULTILINE)
    assert 'models: ["A800 SXM4 80GB"]' in text
    assert re.search(r'params: \{minimum: "570\.124\.06"\} +# facts\.gpu\.driver_version', text)
    assert re.search(r'torch: "==2\.9\.0\+cu128" +# facts\.torch\.version', text)
    assert re.search(r'transformers: "==4\.57\.1" +# facts\.python\.distributions\.transformers', text)
    # floors: the median over the 8 GPUs x (1 - 10%), rounded down to 4 significant digits
    median = sorted(FP16)[3] / 2 + sorted(FP16)[4] / 2
    floor = math.floor(median * 0.9 * 10) / 10
    assert re.search(rf"matmul_fp16_tflops: {floor:g} +# fp16 matmul: median {median:g} TFLOPS of 8 GPU\(s\)", text)
    assert set(re.findall(r"^        (\w+): ", text, re.MULTILINE)) == set(FIGURES)


def test_same_node_passes_and_drifted_nodes_fail(cli, captured, tmp_path):
    code, results = check_with(cli, captured, a800_node(), tmp_path)
    assert code == 0, {k: v["summary"] for k, v in results.items() if v["status"] in ("fail", "error")}
    for cid in ("gpu.count", "gpu.model", "driver.minimum", "bench.baseline", "packages.required", "python.version"):
        assert results[cid]["status"] == "pass", (cid, results[cid]["summary"])
    drifted = {
        "driver.minimum": a800_node("gpu02", driver="550.54.15", max_cuda="12.4"),
        "gpu.count": a800_node("gpu03", count=7),
        "bench.baseline": a800_node("gpu04", fp16=[*FP16[:5], 200.0, *FP16[6:]]),
        "packages.required": edit(a800_node("gpu05"), "another transformers",
                                  python={**recorded()["python"], "distributions": {
                                      **a800_node()["python"]["distributions"], "transformers": "4.56.0"}}),
    }
    for failing, facts in drifted.items():
        code, results = check_with(cli, captured, facts, tmp_path)
        bad = {k for k, v in results.items() if v["status"] == "fail"}
        assert code == 1 and failing in bad, (failing, bad)
        assert bad <= {failing, "driver.torch_cuda", "bench.siblings"}, (failing, bad)   # also true: cu128, siblings
    summary = check_with(cli, captured, drifted["bench.baseline"], tmp_path)[1]["bench.baseline"]["summary"]
    assert summary.startswith(f"GPU 5 ({A800}): fp16 matmul 200 TFLOPS is below the baseline floor"), summary
    assert check_with(cli, captured, drifted["driver.minimum"], tmp_path)[1]["driver.minimum"]["summary"] == \
        "driver 550.54.15 is older than the minimum 570.124.06"


def test_missing_facts_are_left_out_with_the_reason(cli, tmp_path):
    """The recorded CPU container: no GPU (NVML says why), no bench section. Nothing is invented for them."""
    report = report_of(cli, recorded(), tmp_path, "cpu", "cpu-ci")
    out = tmp_path / "cpu.yaml"
    code, stdout, err = cli("baseline", "capture", "--from-report", str(report), "-o", str(out))
    assert code == 0, err
    text = out.read_text()
    assert "# Left out: machine.gpu (count, models) and driver.minimum: no GPU in the report (NVML library" in text
    assert "# Left out: bench.baseline: the report has no bench section" in text
    assert "required: false" in text and "facts.gpu.available is false" in text
    assert "driver.minimum" not in text.split("# Check a node")[1] and "bench.baseline" not in text.split("# Check")[1]
    assert "left out: bench.baseline" in stdout
    code, results = check_with(cli, out, recorded(), tmp_path)
    assert code == 0 and results["gpu.present"]["status"] == "skip"


def test_versions_modes(cli, tmp_path):
    report = report_of(cli, a800_node(), tmp_path, "gpu01")
    for mode, want in (("minimum", 'torch: ">=2.9.0"'), ("none", None)):
        out = tmp_path / f"{mode}.yaml"
        assert cli("baseline", "capture", "--from-report", str(report), "-o", str(out), "--versions", mode)[0] == 0
        text = out.read_text()
        assert (want in text) if want else ("job:" not in text and "Left out: job.software: --versions none" in text)


def one_line_exit_2(cli, *argv: str) -> str:
    code, _, err = cli(*argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, code, err)
    return err


def test_bad_input_is_one_line_exit_2(cli, captured, tmp_path):
    report = report_of(cli, a800_node(), tmp_path, "gpu01")
    err = one_line_exit_2(cli, "baseline", "capture", "--from-report", str(report), "-o", str(captured))
    assert f"{captured}: exists; pass --force to overwrite it" in err
    before = captured.read_text()
    assert cli("baseline", "capture", "--from-report", str(report), "-o", str(captured), "--force",
               "--tolerance", "5%")[0] == 0
    assert captured.read_text() != before and "x (1 - 5%)" in captured.read_text()
    new = str(tmp_path / "new.yaml")
    for tol in ("100%", "abc", "-5", ""):
        assert "--tolerance" in one_line_exit_2(cli, "baseline", "capture", "--from-report", str(report), "-o", new,
                                                "--tolerance", tol)
    facts = tmp_path / "snap.json"
    facts.write_text(json.dumps(a800_node()))
    assert "`doctor facts` snapshot" in one_line_exit_2(cli, "baseline", "capture", "--from-report", str(facts), "-o", new)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert str(garbage) in one_line_exit_2(cli, "baseline", "capture", "--from-report", str(garbage), "-o", new)
    sick = report_of(cli, a800_node(count=7), tmp_path, "gpu07", str(captured))
    err = one_line_exit_2(cli, "baseline", "capture", "--from-report", str(sick), "-o", new)
    assert "the node is not ready (exit 1; first: gpu.count: found 7 GPUs" in err and "known-good node" in err
    assert "--profile" in one_line_exit_2(cli, "baseline", "capture", "--from-report", str(report), "-o", new,
                                          "-p", "base")
    assert "is a directory" in one_line_exit_2(cli, "baseline", "capture", "--from-report", str(report), "-o",
                                               str(tmp_path))
    assert not Path(new).exists() and not list(tmp_path.glob(".new.yaml.*"))


def test_tolerance_parsing_and_floors():
    assert [parse_tolerance(t) for t in ("10%", "10", " 2.5 % ", "0")] == [10.0, 10.0, 2.5, 0.0]
    for bad in ("100", "1e1", "ten", "10%%"):
        with pytest.raises(InputError):
            parse_tolerance(bad)
    facts = a800_node(count=1, fp16=[123.456789])
    report = {"schema_version": "1.1", "doctor_version": "0.1.0", "created": "2026-11-27T00:00:00+00:00",
              "profiles": ["base"], "verdict": {"exit_code": 0}, "results": [], "facts": facts}
    for tol, want in ((0, 123.4), (25, 92.59)):   # 123.456789 x 0.75 = 92.5925...: rounded down, never up
        text = build(report, "r.json", tolerance_pct=tol).text
        assert re.search(rf"matmul_fp16_tflops: {want:g} ", text), text


def test_bench_baseline_never_guesses(judge, tmp_path):
    from doctor.checks.baseline import bench_baseline, driver_minimum

    facts = a800_node(count=2)
    assert bench_baseline(facts, figures={"matmul_fp16_tflops": 250}).status.value == "pass"
    for figures in ({"matmul_fp8_tflops": 1}, {"bandwidth_gbps": "fast"}, {"hvp_per_s": 0}, {}):
        assert bench_baseline(facts, figures=figures).summary.startswith("could not decide"), figures
    hung = a800_node(count=2)
    hung["bench"]["devices"][1] = {**hung["bench"]["devices"][1], "status": "timeout", "matmul": None}
    res = bench_baseline(hung, figures={"matmul_fp16_tflops": 250})
    assert res.status.value == "error" and "its benchmark stopped (timeout)" in res.summary
    assert bench_baseline({**facts, "bench": {"status": "skipped", "reason": "no NVIDIA GPU"}},
                          figures={"hvp_per_s": 1}).status.value == "skip"
    assert driver_minimum(facts, minimum="570.124.06").status.value == "pass"
    assert driver_minimum(facts, minimum="580").status.value == "fail"
    assert driver_minimum(facts, minimum="latest").summary.startswith("could not decide")
    assert driver_minimum({**facts, "gpu": {**facts["gpu"], "driver_version": None}},
                          minimum="570").summary.startswith("could not decide")


def docs_block(name: str) -> str:
    return DOC.read_text().split(f"<!-- {name}:begin -->")[1].split("```bash\n")[1].split("```")[0]


def test_docs_baseline_commands_run_as_printed(cli, tmp_path, monkeypatch):
    """The docs' block, line by line, in a folder holding reports/gpu01.json. The fresh capture runs for real on this
    machine (no GPU: refused, the node is not ready); the check line judges recorded nodes (--facts appended, as the
    prolog test does)."""
    lines = [shlex.split(line) for line in docs_block("baseline").splitlines() if line.startswith("doctor ")]
    assert [argv[1:3] for argv in lines] == [["baseline", "capture"], ["baseline", "capture"], ["check", "--profile"]]
    (tmp_path / "reports").mkdir()
    report_of(cli, a800_node(), tmp_path / "reports", "gpu01")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*lines[0][1:])
    assert code == 0 or (code == 2 and "not ready" in err), err   # 0 on a healthy GPU node; here: no GPU
    Path("site-baseline.yaml").unlink(missing_ok=True)
    code, _, err = cli(*lines[1][1:])
    assert code == 0 and os.path.isfile("site-baseline.yaml"), err
    for facts, want in ((a800_node(), 0), (a800_node(count=7), 1)):
        Path("node.json").write_text(json.dumps(facts))
        assert cli(*lines[2][1:], "--facts", "node.json")[0] == want
