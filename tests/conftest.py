from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from doctor.cli import main  # noqa: E402
from doctor.profile import load  # noqa: E402
from doctor.registry import discover  # noqa: E402
from doctor.runner import evaluate  # noqa: E402
import factsbuilder  # noqa: E402


@pytest.fixture(scope="session")
def registry():
    return discover()


@pytest.fixture
def judge(registry):
    """judge(facts, check_id, *profiles) -> Result of that check."""

    def run(facts: dict[str, Any], check_id: str, *profiles: str):
        report = evaluate(facts, load(list(profiles) or ["base"], registry), registry)
        return next(r for r in report.results if r.check_id == check_id)

    return run


@pytest.fixture
def cli(capsys):
    """cli(*args) -> (exit code, stdout, stderr), in-process."""

    def run(*args: str):
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture
def facts_file(tmp_path):
    def write(facts: dict[str, Any], name: str = "facts.json") -> str:
        path = tmp_path / name
        path.write_text(json.dumps(facts))
        return str(path)

    return write


@pytest.fixture
def recorded():
    return factsbuilder.recorded()
