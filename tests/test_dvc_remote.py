"""Shared storage: a DVC remote round trip, end to end (issue 16, docs/dvc_remote.md).

One clone runs `dvc repro`, adds a local-directory remote (a shared folder: the same commands as S3, GCS or
Azure), `dvc push`es and commits; a fresh `git clone` of it `dvc pull`s, and then every output is there with the
bytes the first clone pushed (checked file by file against the remote's manifests, which dvc.lock names),
`dvc status` is clean and `dvc repro` runs no stage.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from helpers import BIN, run_command, stages_run, tiny_dvc_repo

from collab_iu.layout import DatasetLayout
from orchestration.wandb_artifacts import cf_vectors_artifact, dataset_artifact, model_artifact

TINY_GRID = {"methods": ["image_only", "with_cf"], "label_ratios": [1.0], "seeds": [0], "workers": 1}


def _lock_outputs(repo: Path) -> dict[str, str]:
    """Every output of every stage in dvc.lock: path -> md5 (a directory's ends with `.dir`)."""
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


def _remote_object(remote: Path, md5: str) -> Path:
    """Where DVC 3 keeps an object in a remote (and in a cache): files/md5/<2 hex>/<rest>."""
    return remote / "files" / "md5" / md5[:2] / md5[2:]


def _expected_files(remote: Path, lock: dict[str, str]) -> dict[str, str]:
    """Every file of every output, path -> md5, as the remote holds them: a directory output's manifest (the
    `.dir` object dvc.lock names) lists its files; a file output's md5 is in dvc.lock itself."""
    files = {}
    for path, md5 in lock.items():
        if md5.endswith(".dir"):
            manifest = json.loads(_remote_object(remote, md5).read_text())
            files |= {f"{path}/{entry['relpath']}": entry["md5"] for entry in manifest}
        else:
            files[path] = md5
    return files


def _workspace_files(repo: Path, lock: dict[str, str]) -> dict[str, str]:
    """Every file under the outputs in a workspace, path -> md5 of its bytes (computed here, not by DVC)."""
    found = {}
    for path in lock:
        target = repo / path
        for file in sorted(target.rglob("*")) if target.is_dir() else [target]:
            if file.is_file():
                found[file.relative_to(repo).as_posix()] = hashlib.md5(file.read_bytes()).hexdigest()
    return found


@pytest.mark.e2e
def test_push_then_pull_in_a_fresh_clone_restores_every_output_and_repro_runs_nothing(tmp_path_factory):
    dvc = str(BIN / "dvc")
    first = tiny_dvc_repo(tmp_path_factory.mktemp("first") / "repo", TINY_GRID)
    remote = tmp_path_factory.mktemp("shared") / "remote"  # a shared folder, e.g. an NFS mount
    run_command([dvc, "repro"], first)
    run_command([dvc, "remote", "add", "-d", "storage", str(remote)], first)
    run_command([dvc, "push"], first)
    assert "are in sync" in run_command([dvc, "status", "--cloud"], first).stdout  # nothing left to push
    run_command(["git", "add", "-A"], first)
    run_command(["git", "commit", "-qm", "repro, and the shared remote"], first)

    lock = _lock_outputs(first)
    assert {"data/synthetic/raw", "data/synthetic/cache", "data/paper_report"} <= set(lock)
    assert {"data/synthetic/runs/image_only-r1-w0-s0", "data/synthetic/runs/with_cf-r1-w2-s0"} <= set(lock)
    expected = _expected_files(remote, lock)
    assert _workspace_files(first, lock) == expected  # the remote holds exactly the first clone's outputs
    run = "data/synthetic/runs/with_cf-r1-w2-s0"
    assert {"data/synthetic/cache/images.npy", f"{run}/best.pt", f"{run}/checkpoint.pt"} <= set(expected)

    second = tmp_path_factory.mktemp("second") / "clone"
    run_command(["git", "clone", "-q", str(first), str(second)], second.parent)
    assert not (second / "data/synthetic/cache").exists()  # git carries dvc.lock and the remote's address only
    assert "storage" in run_command([dvc, "remote", "list"], second).stdout
    run_command([dvc, "pull"], second)

    assert _workspace_files(second, lock) == expected  # every output, byte for byte (md5 of each file)
    assert "up to date" in run_command([dvc, "status"], second).stdout
    repro = run_command([dvc, "repro"], second).stdout
    assert stages_run(repro) == set(), repro
    assert "Stage 'train-synthetic-cf@with_cf-r1-w2-s0' didn't change, skipping" in repro
    assert run_command(["git", "status", "--porcelain"], second).stdout == ""  # dvc.lock untouched
    assert _wandb_files(second, run) <= set(expected)  # what W&B logs is what the remote holds


def _wandb_files(repo: Path, run: str) -> set[str]:
    """The files the W&B artifacts of a with_cf run name (its model's copied files; the dataset's and CF vectors'
    file:// references), relative to the repository."""
    layout = DatasetLayout(repo / "data", "synthetic")
    run_dir = repo / run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "model.json").read_text())["config"]
    specs = [model_artifact(run_dir, metrics, config), dataset_artifact(layout), cf_vectors_artifact(layout)]
    paths = [path for spec in specs for path, _ in spec.files + spec.references]
    assert len(paths) >= 8
    return {path.relative_to(repo).as_posix() for path in paths}
