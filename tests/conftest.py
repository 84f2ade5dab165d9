"""Shared fixtures: one tiny synthetic dataset generated per session, copied where a test corrupts it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import PROJECT_VARIABLES, tiny_params_tree, tiny_synthetic

from collab_iu.params import PrepareParams, params_from_dict
from collab_iu.synthetic import generate_synthetic


@pytest.fixture(scope="session")
def tiny_dataset_master(tmp_path_factory) -> Path:
    """The tiny synthetic dataset, generated once; never modify it (use `tiny_dataset` / `copy_dataset`)."""
    dest = tmp_path_factory.mktemp("master") / "tiny"
    generate_synthetic(tiny_synthetic(), dest)
    return dest


@pytest.fixture
def copy_dataset(tiny_dataset_master, tmp_path):
    """copy_dataset(name) -> a fresh, writable copy of the tiny dataset at tmp_path / name."""

    def _copy(name: str = "ds") -> Path:
        dest = tmp_path / name
        shutil.copytree(tiny_dataset_master, dest)
        return dest

    return _copy


@pytest.fixture
def tiny_dataset(copy_dataset) -> Path:
    """A writable copy of the tiny dataset for one test."""
    return copy_dataset()


@pytest.fixture
def prepare_params() -> PrepareParams:
    return PrepareParams()


@pytest.fixture
def tiny_params(tmp_path):
    """tiny_params(group={...}, ...) -> Params with tiny settings and data.root inside tmp_path."""

    def _make(**groups):
        return params_from_dict(tiny_params_tree(tmp_path / "data", **groups))

    return _make


@pytest.fixture(autouse=True)
def _restore_project_environment():
    """The CLI points DAGSTER_HOME and COLLAB_IU_* at the project it runs; keep that inside each test."""
    saved = {name: os.environ.pop(name, None) for name in PROJECT_VARIABLES}
    yield
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value


@pytest.fixture(scope="session", autouse=True)
def _wandb_off(tmp_path_factory):
    """W&B is disabled for the whole session, module fixtures included (test_tracking turns it on per test);
    its folders stay in the session's temp dir, and subprocesses inherit all of it."""
    home = tmp_path_factory.getbasetemp() / "wandb_home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "disabled")
        mp.delenv("WANDB_API_KEY", raising=False)
        for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            mp.setenv(name, str(home / name.lower()))
        yield
