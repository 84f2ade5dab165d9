"""The code location of the Kubernetes deployment (deploy/Dockerfile, deploy/helm-values.yaml, docs/deploy.md).

The project's own definitions (orchestration/defs/build.py), with every job, the UI's asset jobs included, executed
by dagster-k8s's k8s_job_executor: each step in a Kubernetes Job of its own, configured by deploy/k8s_executor.yaml
(the trained_model steps request one GPU). Loaded by `dagster code-server start -f deploy/k8s_definitions.py`;
the embedded default (`collab-iu`, `dagster dev`) keeps orchestration/definitions.py and its in-process executor.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster_k8s import k8s_job_executor

from orchestration.defs.build import build_definitions

EXECUTOR_CONFIG = Path(__file__).with_name("k8s_executor.yaml")


def executor_config(path: Path = EXECUTOR_CONFIG) -> dict:
    """The k8s_job_executor's configuration (deploy/k8s_executor.yaml)."""
    return yaml.safe_load(path.read_text())


def k8s_definitions(config: dict | None = None) -> dg.Definitions:
    """The project's definitions with every job run by the k8s_job_executor configured with `config` (default:
    deploy/k8s_executor.yaml)."""
    executor = k8s_job_executor.configured(executor_config() if config is None else config)
    defs = build_definitions()
    return dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=[_with_executor(job, executor) for job in defs.jobs or ()],
        schedules=defs.schedules,
        sensors=defs.sensors,
        resources=defs.resources,
        loggers=defs.loggers,
        metadata=defs.metadata,
        executor=executor,  # the asset jobs the UI builds for its Materialize buttons
    )


def _with_executor(job, executor: dg.ExecutorDefinition) -> UnresolvedAssetJobDefinition:
    """The asset job `job` as it is (selection, config, tags, partitions, hooks), run by `executor`."""
    if not isinstance(job, UnresolvedAssetJobDefinition):
        raise TypeError(f"job {job.name!r} is not an asset job: give it the k8s executor in {__file__}")
    return dg.define_asset_job(
        job.name,
        selection=job.selection,
        config=job.config,
        description=job.description,
        tags=job.tags,
        run_tags=job.run_tags,
        metadata=job.metadata,
        partitions_def=job.partitions_def,
        executor_def=executor,
        hooks=job.hooks,
        op_retry_policy=job.op_retry_policy,
        owners=job.owners,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What the code server loads (built when it loads, not when this file is imported)."""
    return k8s_definitions()
