"""Where the project lives: the repository root, its params.yaml, and the persistent Dagster home."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import yaml

from collab_iu.atomic import atomic_file
from collab_iu.params import Params, load_params

LOCATION_NAME = "collab_iu"  # the code location, as `dagster dev` names it ([tool.dagster] in pyproject.toml)
TRAINING_POOL = "training"  # the trained_model steps; its limit: training_limit()
REPLACE_TAG = "collab_iu/replace"  # a run tag: "true" lets trained_model replace a finished run of another config
INVOCATION_TAG = "collab_iu/invocation"  # a run tag: the `collab-iu` command that made the run
INVOCATION_ENV = "COLLAB_IU_INVOCATION"  # how a command tells its worker processes its invocation id
REPLACE_ENV = "COLLAB_IU_REPLACE"  # ... and whether it may replace finished runs
ROOT_ENV = "COLLAB_IU_ROOT"  # the repository (default: the working directory)
PARAMS_ENV = "COLLAB_IU_PARAMS"  # another params file (default: <root>/params.yaml)
GPUS_ENV = "COLLAB_IU_GPUS"  # set in a pipeline worker pinned to one GPU: the GPUs all the trainings share


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


def start_invocation(replace: bool = False) -> str:
    """A new invocation id for this command's runs (tag `collab_iu/invocation`; filter the UI's runs by it);
    `replace` tags them `collab_iu/replace: true`. Worker processes inherit both through the environment."""
    os.environ[INVOCATION_ENV] = uuid.uuid4().hex[:12]
    os.environ[REPLACE_ENV] = "true" if replace else ""
    return os.environ[INVOCATION_ENV]


def project_params(overrides: dict | None = None) -> Params:
    """params.yaml through the one schema, with optional {"group.key": value} overrides."""
    return load_params(params_path(), overrides)


def ensure_dagster_home(root: Path | None = None) -> Path:
    """Point DAGSTER_HOME at `<repo>/.dagster` (absolute) unless set; create it with telemetry off and pools
    enforced per run (a queued run starts only when its pools have a free slot, see `set_training_limit`).

    An instance made before pools were enforced per run gets `granularity: run` added.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or (root or repo_root()) / ".dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    settings = (yaml.safe_load(config.read_text()) or {}) if config.exists() else {}
    pools = settings.setdefault("concurrency", {}).setdefault("pools", {})
    if not config.exists() or pools.get("granularity") != "run":
        settings.setdefault("telemetry", {"enabled": False})
        pools["granularity"] = "run"
        with atomic_file(config) as tmp:
            tmp.write_text(yaml.safe_dump(settings, sort_keys=False))
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def training_limit(params: Params, gpus: int) -> int:
    """How many trainings run at once: experiment.runs_per_gpu on each of `gpus` visible GPUs, or (gpus 0: the
    CPU) experiment.workers. Either way each training process gets an equal share of the cores."""
    return gpus * params.experiment.runs_per_gpu if gpus > 0 else params.experiment.workers


def training_gpus(params: Params) -> int:
    """The visible GPUs the trainings share: torch.cuda.device_count() when train.device resolves to CUDA, else 0.

    In a worker that the pipeline pinned to one GPU, the count the pipeline saw ($COLLAB_IU_GPUS). It imports
    torch: call it in a worker process or the code location, never in the CLI's own process.
    """
    if os.environ.get(GPUS_ENV):
        return int(os.environ[GPUS_ENV])
    import torch

    from collab_iu.train import resolve_device

    return torch.cuda.device_count() if resolve_device(params.train.device).type == "cuda" else 0


def set_training_limit(instance, limit: int) -> None:
    """Give the `training` pool `limit` slots in `instance` (the UI's Materialize all, backfills and
    `collab-iu run` alike; the UI shows it under Deployment > Concurrency)."""
    storage = instance.event_log_storage
    if storage.get_concurrency_info(TRAINING_POOL).slot_count != limit:
        storage.set_concurrency_slots(TRAINING_POOL, limit)
