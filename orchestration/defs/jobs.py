"""The project's named jobs, one per partitioning of the step registry (Dagster runs one partitioning per job):
`pipeline` (the steps per dataset, and the paper's report) and `training` (one model per dataset x run key)."""

from __future__ import annotations

import dagster as dg

from collab_iu.steps import STEPS

JOBS: dict[str, tuple[str, ...]] = {  # job -> the partitionings of the steps it runs
    "pipeline": ("dataset", "none"),
    "training": ("dataset_run",),
}
DESCRIPTIONS = {
    "pipeline": "prepare, split, cf, cache, evaluate per dataset (a partition), and the paper's report",
    "training": "one trained model per partition (dataset x run key of the grid)",
}


def job_assets(job: str) -> list[str]:
    return [s.asset for s in STEPS if s.partitioning in JOBS[job]]


def job_of(asset_names: list[str]) -> str:
    """The one job that runs all of `asset_names`; ValueError when they belong to different jobs."""
    jobs = {job for job in JOBS for a in asset_names if a in job_assets(job)}
    if len(jobs) != 1:
        raise ValueError(f"assets {', '.join(asset_names)} are not materialised by one job: {sorted(jobs)}")
    return jobs.pop()


def build_jobs() -> list[dg.UnresolvedAssetJobDefinition]:
    """The named jobs; their steps run one after another in the run's process (a UI run, or the CLI's)."""
    return [
        dg.define_asset_job(
            name,
            selection=dg.AssetSelection.assets(*job_assets(name)),
            executor_def=dg.in_process_executor,
            description=DESCRIPTIONS[name],
        )
        for name in JOBS
    ]
