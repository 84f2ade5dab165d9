"""Where the project lives: the repository root, its params.yaml, and the persistent Dagster home."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import yaml

from collab_iu.atomic import atomic_file
from collab_iu.params import Params, load_params

ROOT_ENV = "COLLAB_IU_ROOT"  # the repository (default: the working directory)
PARAMS_ENV = "COLLAB_IU_PARAMS"  # another params file (default: <root>/params.yaml)


def repo_root() -> Path:
    """The repository: $COLLAB_IU_ROOT, else the working directory. Relative data paths start here."""
    return Path(os.environ.get(ROOT_ENV) or Path.cwd()).resolve()


def params_path() -> Path:
    return Path(os.environ.get(PARAMS_ENV) or repo_root() / "params.yaml").resolve()


def use_params(params: Params) -> Path:
    """Make `params` (params.yaml plus command-line overrides) what the definitions load in this process.

    Written to `.dagster/params/<digest>.yaml`, so a run's config records the values it used.
    """
    text = yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)
    path = ensure_dagster_home() / "params" / f"{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    if not path.exists():
        with atomic_file(path) as tmp:
            tmp.write_text(text)
    os.environ[ROOT_ENV] = str(repo_root())
    os.environ[PARAMS_ENV] = str(path)
    return path


def project_params(overrides: dict | None = None) -> Params:
    """params.yaml through the one schema, with optional {"group.key": value} overrides."""
    return load_params(params_path(), overrides)


def ensure_dagster_home(root: Path | None = None) -> Path:
    """Point DAGSTER_HOME at `<repo>/.dagster` (absolute) unless set; create it with telemetry off."""
    home = Path(os.environ.get("DAGSTER_HOME") or (root or repo_root()) / ".dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(
            "telemetry:\n  enabled: false\n"
            "concurrency:\n  pools:\n    default_limit: 1  # the `gpu` pool: one training step on the GPU at a time\n"
        )
    os.environ["DAGSTER_HOME"] = str(home)
    return home
