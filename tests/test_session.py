"""One flow: `doctor check` and `doctor.preflight()` give the same verdict, check by check, for the same
arguments: every shipped profile, with and without a profile, on recorded snapshots and on this machine."""
from __future__ import annotations

import json

import pytest

import doctor
import factsbuilder as fb
from doctor.profile import available

PROFILES = sorted(available())
SNAPSHOTS = {"no-gpu": fb.recorded, "a800": fb.autodl_box, "two-gpus": lambda: fb.gpu_box(count=2)}


def _api(*profiles: str, **kw):
    try:
        report = doctor.preflight(*profiles, **kw)
    except doctor.NotReady as exc:
        report = exc.report
    return int(report.exit_code), [(r.check_id, r.status.value, r.summary) for r in report.results], report


def _cli(cli, *args: str):
    code, out, err = cli("check", "--format", "json", *args)
    doc = json.loads(out)
    return code, [(r["id"], r["status"], r["summary"]) for r in doc["results"]], doc


@pytest.mark.parametrize("snapshot", sorted(SNAPSHOTS))
@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_cli_and_api_agree_on_every_shipped_profile(cli, facts_file, snapshot, profile):
    path = facts_file(SNAPSHOTS[snapshot]())
    refs = [profile] if profile else []
    code, results, doc = _cli(cli, *[a for p in refs for a in ("-p", p)], "--facts", path)
    api_code, api_results, report = _api(*refs, facts=path)
    assert (code, results) == (api_code, api_results)
    assert doc["profiles"] == report.profiles and doc["notes"] == report.notes


def test_without_a_profile_both_pick_the_machine_profile_of_the_gpus(cli, facts_file):
    path = facts_file(fb.autodl_box())
    _, _, doc = _cli(cli, "--facts", path)
    _, _, report = _api(facts=path)
    assert doc["target"] == report.target != "base"
    assert any("the machine profile matching" in n for n in report.notes)


def test_a_live_run_agrees_too(cli):
    """The real probes on this machine (no bench: the CPU box has no GPU to gate it anyway)."""
    code, results, _ = _cli(cli, "-p", "cpu-ci", "--offline", "--no-bench")
    api_code, api_results, _ = _api("cpu-ci", offline=True, bench=False)
    assert code == api_code
    # live facts differ run to run in figures (free disk, import time), never in which checks ran or their status
    assert [(i, s) for i, s, _ in results] == [(i, s) for i, s, _ in api_results]


def test_each_check_is_judged_once(monkeypatch, facts_file):
    import doctor.runner as runner

    calls: list[str] = []
    real = runner.run_check

    def counting(spec, *a, **k):
        calls.append(spec.id)
        return real(spec, *a, **k)

    monkeypatch.setattr(runner, "run_check", counting)
    _api("autodl-a800", "qwen3-vl-32b-qlora", facts=facts_file(fb.autodl_box()))
    assert calls and len(calls) == len(set(calls))
