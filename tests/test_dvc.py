"""DVC as a new user meets it: `dvc repro`, a changed parameter re-runs only what depends on it,
metrics, plots and experiments; and dvc.yaml never drifts from the asset graph."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import BIN, REPO, run_command, stages_run, tiny_dvc_repo, tiny_params_tree

from collab_iu.params import load_params, params_from_dict
from orchestration.dvc_yaml import render

REFERENCES = ("with_cf_val_selected", "popularity", "random")
TINY_GRID = {"methods": ["image_only", "with_cf"], "label_ratios": [1.0], "seeds": [0], "workers": 1}


def test_committed_dvc_yaml_matches_a_fresh_generation():
    committed = (REPO / "dvc.yaml").read_text()
    assert committed == render(load_params(REPO / "params.yaml")), "run `collab-iu dvc-yaml` and commit dvc.yaml"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A copy of the repository's files in a fresh git repo, with a tiny params.yaml and its dvc.yaml."""
    return tiny_dvc_repo(tmp_path_factory.mktemp("dvc") / "repo", TINY_GRID)


@pytest.mark.e2e
def test_repro_status_partial_rerun_metrics_plots_experiments(repo):
    dvc = str(BIN / "dvc")
    first = run_command([dvc, "repro"], repo)
    stages = stages_run(first.stdout)
    assert {
        "prepare-synthetic",
        "split-synthetic",
        "cf-synthetic",
        "cache-synthetic",
        "evaluate-synthetic",
        "report",
    } <= stages
    assert {s for s in stages if s.startswith("train-")} == {
        "train-synthetic@image_only-r1-w0-s0",  # reads no CF output
        "train-synthetic-cf@with_cf-r1-w2-s0",
    }
    for key in ("image_only-r1-w0-s0", "with_cf-r1-w2-s0"):  # progress: a line per epoch in DVC's output
        assert re.search(rf"{key} epoch 2/2: loss_label [0-9.]+.*val_map [0-9.]+, [0-9]+ img/s", first.stdout), key
    assert "up to date" in run_command([dvc, "status"], repo).stdout
    # compiling the code (any Python run on a machine that writes bytecode) changes no stage
    run_command([sys.executable, "-m", "compileall", "-q", "collab_iu", "orchestration"], repo)
    assert list((repo / "collab_iu" / "importers" / "__pycache__").glob("*.pyc"))
    assert "up to date" in run_command([dvc, "status"], repo).stdout
    assert (repo / "data/synthetic/evaluation/summary.json").is_file()
    assert (repo / "data/paper_report/main_table.md").is_file()
    run_command(["git", "add", "-A"], repo)
    run_command(["git", "commit", "-qm", "repro"], repo)

    # one CF parameter: only cf and what depends on it runs again
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["cf"]["factors"] = 6
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    second = run_command([dvc, "repro"], repo)
    rerun = stages_run(second.stdout)
    assert rerun == {"cf-synthetic", "train-synthetic-cf@with_cf-r1-w2-s0", "evaluate-synthetic", "report"}
    for cached in ("prepare-synthetic", "split-synthetic", "cache-synthetic", "train-synthetic@image_only-r1-w0-s0"):
        assert f"Stage '{cached}' didn't change, skipping" in second.stdout
    assert "up to date" in run_command([dvc, "status"], repo).stdout

    # dvc metrics: test mAP per method and label ratio, numbers only
    results = pd.read_csv(repo / "data/synthetic/evaluation/results.csv")
    shown = json.loads(run_command([dvc, "metrics", "show", "--json"], repo).stdout)
    [metrics] = [file["data"] for file in shown[""]["data"].values()]
    for method, series in (("image_only", "image_only"), ("with_cf", "with_cf_w2"), *[(m, m) for m in REFERENCES]):
        assert metrics[f"map/{series}/r1"] == results.loc[results["method"] == method, "map_mean"].item()
    assert all(isinstance(v, float) for v in metrics.values())
    assert "map/with_cf_val_selected/r1" in run_command([dvc, "metrics", "show"], repo).stdout
    shown = run_command([dvc, "plots", "show", "--out", "plots-html"], repo)
    html = (repo / "plots-html" / "index.html").read_text()
    series = pd.read_csv(repo / "data/synthetic/evaluation/map_vs_label_ratio.csv")
    assert str(series["with_cf_w2"].iloc[0])[:6] in html, shown.stdout
    run_command(["git", "add", "-A"], repo)
    run_command(["git", "commit", "-qm", "cf factors 6"], repo)

    # an experiment with one changed CF value: the image-only runs are not trained again
    experiment = run_command([dvc, "exp", "run", "-S", "cf.factors=4", "--name", "factors4"], repo)
    assert "train-synthetic@image_only-r1-w0-s0" not in stages_run(experiment.stdout)
    assert "train-synthetic-cf@with_cf-r1-w2-s0" in stages_run(experiment.stdout)
    shown = run_command([dvc, "exp", "show", "--no-pager", "--json"], repo).stdout
    assert "factors4" in shown
    experiments = json.loads(shown)
    assert any(exp.get("name") == "factors4" for entry in experiments for exp in entry.get("experiments") or [])
    # the narrowed table fits a 200-column terminal: what differs (cf.factors) and the headline metrics
    table = run_command([str(BIN / "collab-iu"), "exp-show"], repo, COLUMNS="200").stdout
    assert max(len(line) for line in table.splitlines()) <= 200, table
    for visible in (
        "factors4",
        "cf.factors",
        "headline/with_cf_map",
        "headline/image_only_map",
        "headline/improvement",
    ):
        assert visible in table, (visible, table)


def test_the_cf_weight_plot_is_registered_only_with_a_sweep():
    tree = tiny_params_tree(Path("data"), experiment=TINY_GRID)
    tree["data"]["root"] = "data"
    plots = yaml.safe_load(render(params_from_dict(tree)))["plots"]
    assert "data/paper_report/map_vs_cf_weight.png" not in plots  # one cf weight: the panel would be empty
    tree["experiment"]["cf_weights"] = [1.0, 2.0]
    plots = yaml.safe_load(render(params_from_dict(tree)))["plots"]
    assert "data/paper_report/map_vs_cf_weight.png" in plots


def test_readme_shows_the_current_dvc_dag():
    """The README's mermaid graph is `dvc dag --mermaid` of the committed dvc.yaml."""
    dag = run_command([str(BIN / "dvc"), "dag", "--mermaid"], REPO).stdout.strip()
    readme = (REPO / "README.md").read_text()
    assert f"```mermaid\n{dag}\n```" in readme, "paste `dvc dag --mermaid` into the README's DVC section"
