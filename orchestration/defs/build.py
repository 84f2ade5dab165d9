"""The Dagster definitions: assets, blocking checks, the named jobs, the compute and W&B resources, built from
params.yaml; the `training` pool gets its limit here."""

from __future__ import annotations

import warnings

import dagster as dg

from orchestration.defs.assets import build_assets
from orchestration.defs.checks import build_checks
from orchestration.defs.jobs import build_jobs
from orchestration.defs.project import (
    ensure_dagster_home,
    project_params,
    set_training_limit,
    training_gpus,
    training_limit,
)
from orchestration.defs.resources import ComputeResource, WandbResource


def build_definitions() -> dg.Definitions:
    """Definitions for the params.yaml of the working directory (or $COLLAB_IU_PARAMS)."""
    ensure_dagster_home()
    params = project_params()
    set_training_limit(dg.DagsterInstance.get(), training_limit(params, training_gpus(params)))
    assets, partitions = build_assets(params)
    with warnings.catch_warnings():  # partitioned asset checks are a Dagster "preview" feature
        warnings.simplefilter("ignore", dg.PreviewWarning)
        checks = build_checks({a.key.to_user_string(): a for a in assets}, partitions["datasets"])
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=build_jobs(),
        resources={
            "compute": ComputeResource(device=params.train.device),
            "wandb": WandbResource(mode=params.wandb.mode),
        },
    )
