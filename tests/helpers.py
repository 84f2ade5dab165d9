"""Helpers shared by the tests (tiny settings, table read/write)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from collab_iu.params import CFParams, SyntheticParams

REPO = Path(__file__).resolve().parents[1]

TINY_SYNTHETIC = {"n_items": 200, "n_users": 80, "n_labels": 5, "image_size": 16}
TINY_CF = {"factors": 8, "iterations": 5, "num_threads": 1}
TINY_TRAIN = {"epochs": 2, "batch_size": 32, "device": "cpu", "num_threads": 1, "cf_weight": 2.0}
TINY_EXPERIMENT = {
    "label_ratios": [0.3, 1.0],
    "cf_weights": [2.0],
    "seeds": [0, 1],
    "workers": 1,
    "bootstrap_resamples": 20,
}


def tiny_synthetic(**changes) -> SyntheticParams:
    return SyntheticParams(**(TINY_SYNTHETIC | changes))


def tiny_cf(**changes) -> CFParams:
    return CFParams(**(TINY_CF | changes))


def tiny_params_tree(root: Path, **groups) -> dict:
    """A full parameter tree with tiny settings and every output under `root`."""
    tree = {
        "data": {"root": str(root)},
        "synthetic": dict(TINY_SYNTHETIC),
        "cf": dict(TINY_CF),
        "cache": {"image_size": 16, "workers": 1},
        "train": dict(TINY_TRAIN),
        "experiment": dict(TINY_EXPERIMENT),
    }
    for group, values in groups.items():
        tree[group] = tree.get(group, {}) | values
    return tree


def held_out_items(layout) -> tuple:
    """(test item ids with a cached image, in item order; their labels; the training items' vocabulary),
    computed from the written split and cache, independently of the evaluation code."""
    from collab_iu.artifacts import load_prepared, load_splits
    from collab_iu.dataset import label_vocabulary
    from collab_iu.image_cache import load_image_cache

    items, _ = load_prepared(layout)
    split = load_splits(layout).set_index("item_id")["split"].reindex(items["item_id"]).to_numpy()
    has_image = load_image_cache(layout.cache).rows(items["item_id"]) >= 0
    test = (split == "test") & has_image
    vocabulary = label_vocabulary(items.loc[(split == "train") & has_image, "labels"])
    return items["item_id"].astype(str).to_numpy()[test], items["labels"][test].reset_index(drop=True), vocabulary


def read_items(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "items.parquet")


def read_interactions(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "interactions.parquet")


def write_items(folder: Path, items: pd.DataFrame) -> None:
    items.to_parquet(folder / "items.parquet", index=False)


def write_interactions(folder: Path, interactions: pd.DataFrame) -> None:
    interactions.to_parquet(folder / "interactions.parquet", index=False)


def train_grid(params, repo_root=None, observer=None) -> list[dict]:
    """Train every run of the selected family in this process, one after another (the tests' tiny grids);
    `observer(params)` -> a TrainingObserver per run, e.g. orchestration.tracking.WandbObserver."""
    from collab_iu.experiment import train_run
    from collab_iu.grid import grid_runs
    from collab_iu.layout import dataset_layout

    dataset = dataset_layout(params, None, repo_root).name
    keys = [spec.key for spec in grid_runs(params.for_dataset(dataset))]
    return [
        train_run(params, key, dataset, repo_root, progress=False, observer=observer(params) if observer else None)
        for key in keys
    ]


BIN = Path(sys.executable).parent


PROJECT_VARIABLES = ("DAGSTER_HOME", "COLLAB_IU_ROOT", "COLLAB_IU_PARAMS")  # the CLI sets them for its project


def user_env(**env_vars: str) -> dict[str, str]:
    """The environment of a user's shell for a subprocess: none of the project variables this test process may
    hold, the virtual environment's commands first on PATH, no warnings; then `env_vars`."""
    env = {k: v for k, v in os.environ.items() if k not in PROJECT_VARIABLES}
    return env | {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "PYTHONWARNINGS": "ignore", **env_vars}


def run_command(args: list[str], cwd: Path, check: bool = True, **env_vars: str) -> subprocess.CompletedProcess:
    """Run a command of the virtual environment (dvc, collab-iu, git) in `cwd`, as a user's shell would."""
    git = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    git |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    env = user_env(**git, **env_vars)
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def tiny_dvc_repo(dest: Path, experiment: dict, **groups: dict) -> Path:
    """A copy of the repository's files in a fresh git repo at `dest`, with a tiny params.yaml (grid
    `experiment`, other `groups` changed too) and its dvc.yaml, committed."""
    from collab_iu.params import params_from_dict

    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    for rel in listed:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    tree = tiny_params_tree(Path("data"), experiment=experiment, **groups)
    tree["data"]["root"] = "data"
    full = params_from_dict(tree).model_dump(mode="json")  # DVC needs every key a stage names
    (dest / "params.yaml").write_text(yaml.safe_dump(full, sort_keys=False))
    run_command([str(BIN / "collab-iu"), "dvc-yaml"], dest)
    run_command(["git", "init", "-q"], dest)
    run_command(["git", "add", "-A"], dest)
    run_command(["git", "commit", "-qm", "tiny"], dest)
    return dest


def stages_run(output: str) -> set[str]:
    """The DVC stages a `dvc repro` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))
