"""Real environment failures reported in public issue threads (tests/scenarios/scenarios.yaml, each citing its
report and the rule that decides it): doctor must give the status a correct doctor gives, and its text must name
what the fix needs. The facts are partial snapshots used as given: an absent fact is unknown."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from doctor.profile import load
from doctor.runner import evaluate

SCENARIOS = yaml.safe_load((Path(__file__).parent / "scenarios" / "scenarios.yaml").read_text(encoding="utf-8"))


def snapshot(scenario: dict[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {"schema_version": "1.3", "probes": {},
                             "provenance": {"doctor_version": "0", "created": "2026-11-27T00:00:00+00:00",
                                            "redacted": True, "edited": f"scenario {scenario['id']}: {scenario['source']}"}}
    facts.update(copy.deepcopy(scenario["facts"]))
    return facts


def profiles(scenario: dict[str, Any], tmp: Path) -> list[str]:
    refs = list(scenario.get("profiles") or ["base"])
    for kind in ("machine", "job"):
        if kind in scenario:
            path = tmp / f"{kind}.yaml"
            path.write_text(yaml.safe_dump({"kind": kind, "description": f"inline {kind} of {scenario['id']}",
                                            "extends": ["base"], kind: scenario[kind]}), encoding="utf-8")
            refs.append(str(path))
    return refs


def text_of(result: Any) -> str:
    rem = result.remediation
    parts = [result.summary] + ([rem.text, *rem.commands] if rem else [])
    return " ".join(parts).lower()


def test_the_table_is_large_and_sourced():
    rows = SCENARIOS["scenarios"]
    assert len(rows) >= 40 and len({r["id"] for r in rows}) == len(rows)
    assert all(r["source"].startswith("https://") and r["expect"] for r in rows)


@pytest.mark.parametrize("scenario", SCENARIOS["scenarios"], ids=[s["id"] for s in SCENARIOS["scenarios"]])
def test_scenario(scenario, registry, tmp_path):
    report = evaluate(snapshot(scenario), load(profiles(scenario, tmp_path), registry), registry)
    results = {r.check_id: r for r in report.results}
    problems = []
    for check_id, want in scenario["expect"].items():
        result = results.get(check_id)
        if result is None:
            problems.append(f"{check_id}: not run")
            continue
        allowed = want["status"] if isinstance(want["status"], list) else [want["status"]]
        text = text_of(result)
        if result.status.value not in allowed:
            problems.append(f"{check_id}: {result.status.value}, expected {'/'.join(allowed)}: {result.summary}")
        for words in want.get("remedy", []):
            options = [words] if isinstance(words, str) else words
            if not any(w.lower() in text for w in options):
                problems.append(f"{check_id}: the verdict or its fix does not mention {' or '.join(options)}: {text}")
        for word in want.get("absent", []):
            if word.lower() in text:
                problems.append(f"{check_id}: mentions {word!r}, which a correct fix must not: {text}")
    assert not problems, f"{scenario['source']}\n" + "\n".join(problems)
