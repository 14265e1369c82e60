"""Paths no file can have (~unknown-user, an embedded NUL, a name too long) are bad input: one line, exit 2,
never an internal error (exit 3)."""
from __future__ import annotations

import pytest

from doctor.cli import main

BAD = ["~no-such-user-zz/x.json", "a\0b.json", "a" * 300 + ".json"]


def _one_line_exit_2(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "internal error" not in err, (argv, code, err)
    return err


@pytest.mark.parametrize("bad", BAD)
def test_model_and_profile_flags(bad, capsys):
    _one_line_exit_2(capsys, ["estimate", "--model", bad])
    _one_line_exit_2(capsys, ["estimate", "--profile", bad.replace(".json", ".yaml")])
    _one_line_exit_2(capsys, ["check", "--profile", bad.replace(".json", ".yaml"), "--offline", "--no-bench"])


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("key", ["model", "deepspeed"])
def test_paths_inside_a_profile(bad, key, tmp_path, capsys):
    import json

    job = {"workload": {"model": bad if key == "model" else "opt-125m", "method": "full"}}
    if key == "deepspeed":
        job["deepspeed"] = {"config": bad}
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps({"kind": "job", "extends": ["base"], "job": job}))   # JSON is YAML
    err = _one_line_exit_2(capsys, ["check", "--profile", str(path), "--offline", "--no-bench"])
    assert f"job.{'workload.model' if key == 'model' else 'deepspeed.config'}" in err, err


def test_a_relative_path_that_does_not_exist_is_not_read_as_a_hub_id(capsys):
    err = _one_line_exit_2(capsys, ["estimate", "--model", "./no-such-dir-zz"])
    assert "no such file or folder" in err and "HFValidationError" not in err, err
