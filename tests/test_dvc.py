"""DVC as a new user meets it: `dvc repro`, a changed parameter re-runs only what depends on it,
metrics, plots and experiments; and dvc.yaml never drifts from the asset graph."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import REPO, tiny_params_tree

from collab_iu.params import load_params, params_from_dict
from orchestration.dvc_yaml import render

BIN = Path(sys.executable).parent
TINY_GRID = {"methods": ["image_only", "with_cf"], "label_ratios": [1.0], "seeds": [0], "workers": 1}


def test_committed_dvc_yaml_matches_a_fresh_generation():
    committed = (REPO / "dvc.yaml").read_text()
    assert committed == render(load_params(REPO / "params.yaml")), "run `collab-iu dvc-yaml` and commit dvc.yaml"


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "COLLAB_IU_ROOT", "COLLAB_IU_PARAMS")}
    env |= {
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # stage commands call collab-iu
        "PYTHONWARNINGS": "ignore",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A copy of the repository's files in a fresh git repo, with a tiny params.yaml and its dvc.yaml."""
    dest = tmp_path_factory.mktemp("dvc") / "repo"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    for rel in listed:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    tree = tiny_params_tree(Path("data"), experiment=TINY_GRID)
    tree["data"]["root"] = "data"
    full = params_from_dict(tree).model_dump(mode="json")  # DVC needs every key a stage names
    (dest / "params.yaml").write_text(yaml.safe_dump(full, sort_keys=False))
    _run([str(BIN / "collab-iu"), "dvc-yaml"], dest)
    _run(["git", "init", "-q"], dest)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "tiny"], dest)
    return dest


@pytest.mark.e2e
def test_repro_status_partial_rerun_metrics_plots_experiments(repo):
    dvc = str(BIN / "dvc")
    first = _run([dvc, "repro"], repo)
    stages = _stages_run(first.stdout)
    assert {
        "prepare-synthetic",
        "split-synthetic",
        "cf-synthetic",
        "cache-synthetic",
        "evaluate-synthetic",
        "report",
    } <= stages
    assert len([s for s in stages if s.startswith("train-synthetic@")]) == 2
    assert "up to date" in _run([dvc, "status"], repo).stdout
    # compiling the code (any Python run on a machine that writes bytecode) changes no stage
    _run([sys.executable, "-m", "compileall", "-q", "collab_iu", "orchestration"], repo)
    assert list((repo / "collab_iu" / "importers" / "__pycache__").glob("*.pyc"))
    assert "up to date" in _run([dvc, "status"], repo).stdout
    assert (repo / "data/synthetic/evaluation/summary.json").is_file()
    assert (repo / "data/paper_report/main_table.md").is_file()
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "repro"], repo)

    # one CF parameter: only cf and what depends on it runs again
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["cf"]["factors"] = 6
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    second = _run([dvc, "repro"], repo)
    rerun = _stages_run(second.stdout)
    assert rerun == {
        "cf-synthetic",
        *(s for s in stages if s.startswith("train-synthetic@")),
        "evaluate-synthetic",
        "report",
    }
    for cached in ("prepare-synthetic", "split-synthetic", "cache-synthetic"):
        assert f"Stage '{cached}' didn't change, skipping" in second.stdout
    assert "up to date" in _run([dvc, "status"], repo).stdout

    summary = json.loads((repo / "data/synthetic/evaluation/summary.json").read_text())
    metrics = _run([dvc, "metrics", "show"], repo).stdout
    assert "headline.with_cf_map" in metrics and f"{summary['headline']['with_cf_map']:.5f}"[:5] in metrics
    shown = _run([dvc, "plots", "show", "--out", "plots-html"], repo)
    html = (repo / "plots-html" / "index.html").read_text()
    series = pd.read_csv(repo / "data/synthetic/evaluation/map_vs_label_ratio.csv")
    assert str(series["with_cf_w2"].iloc[0])[:6] in html, shown.stdout
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "cf factors 6"], repo)

    # an experiment with one changed value
    _run([dvc, "exp", "run", "-S", "cf.factors=4", "--name", "factors4"], repo)
    shown = _run([dvc, "exp", "show", "--no-pager", "--json"], repo).stdout
    assert "factors4" in shown
    experiments = json.loads(shown)
    assert any(exp.get("name") == "factors4" for entry in experiments for exp in entry.get("experiments") or [])


def test_the_cf_weight_plot_is_registered_only_with_a_sweep():
    tree = tiny_params_tree(Path("data"), experiment=TINY_GRID)
    tree["data"]["root"] = "data"
    plots = yaml.safe_load(render(params_from_dict(tree)))["plots"]
    assert "data/paper_report/map_vs_cf_weight.png" not in plots  # one cf weight: the panel would be empty
    tree["experiment"]["cf_weights"] = [1.0, 2.0]
    plots = yaml.safe_load(render(params_from_dict(tree)))["plots"]
    assert "data/paper_report/map_vs_cf_weight.png" in plots
