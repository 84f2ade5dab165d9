"""Reproducible DVC outputs: the same inputs give byte-identical outputs in two fresh clones, whether `dvc
repro` or `collab-iu run` wrote them; outputs of `collab-iu run` are adopted by `dvc commit` (README)."""

from __future__ import annotations

import pytest
import yaml
from helpers import BIN, run_command, stages_run, tiny_dvc_repo

TINY_GRID = {"methods": ["image_only", "with_cf"], "label_ratios": [1.0], "seeds": [0], "workers": 1}


def _output_hashes(repo) -> dict[str, str]:
    """Every output of every stage in dvc.lock: path -> md5 (a directory's md5 covers each of its files)."""
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


@pytest.mark.e2e
def test_two_fresh_clones_write_identical_outputs_and_cli_outputs_are_adopted(tmp_path_factory):
    dvc, cli = str(BIN / "dvc"), str(BIN / "collab-iu")
    by_dvc = tiny_dvc_repo(tmp_path_factory.mktemp("by_dvc") / "repo", TINY_GRID)
    run_command([dvc, "repro"], by_dvc)

    by_cli = tiny_dvc_repo(tmp_path_factory.mktemp("by_cli") / "clone", TINY_GRID)
    said = run_command([cli, "run"], by_cli).stdout
    assert "dvc commit -f --with-deps evaluate-synthetic" in said  # the run says how to adopt its outputs
    run_command([dvc, "commit", "-f", "--with-deps", "evaluate-synthetic"], by_cli)
    status = run_command([dvc, "status"], by_cli).stdout
    assert "report:" in status and "evaluate-synthetic" not in status and "train-" not in status, status
    assert stages_run(run_command([dvc, "repro"], by_cli).stdout) == {"report"}  # only what `run` does not make
    assert "up to date" in run_command([dvc, "status"], by_cli).stdout

    expected, got = _output_hashes(by_dvc), _output_hashes(by_cli)
    assert len(expected) >= 8 and set(got) == set(expected)
    assert {path for path in expected if got[path] != expected[path]} == set()
