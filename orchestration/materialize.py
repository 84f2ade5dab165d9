"""Materialise assets as runs of the project's named jobs, recorded in the persistent instance exactly as
`dagster dev` records its own: the UI lists them under their job, and can re-execute them.

Each run is created through the code location `collab_iu` (loaded in this process, as the UI loads it),
with an explicit run config (every params key its steps read) and the invocation's tags, then executed
here. No asset-selection strings (they break beside dvc's antlr, see stack notes): keys only.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping

import dagster as dg
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.events import DagsterEventType
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.remote_representation.code_location import InProcessCodeLocation
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.storage.tags import MULTIDIMENSIONAL_PARTITION_PREFIX, PARTITION_NAME_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._utils.hosted_user_process import recon_job_from_origin

from collab_iu.errors import ENVIRONMENT_ERRNOS, environment_message, user_error_names
from collab_iu.steps import STEPS
from orchestration.defs.config import asset_config
from orchestration.defs.jobs import job_of
from orchestration.defs.project import (
    INVOCATION_ENV,
    INVOCATION_TAG,
    LOCATION_NAME,
    REPLACE_ENV,
    REPLACE_TAG,
    params_path,
    project_params,
    repo_root,
)
from orchestration.errors import MaterializeError

ASSETS = tuple(s.asset for s in STEPS)
UNPARTITIONED = tuple(s.asset for s in STEPS if s.partitioning == "none")
DEFINITIONS_MODULE = "orchestration.definitions"
REPOSITORY = "__repository__"  # the repository a Definitions object becomes


def materialize(asset_names: list[str], partition_key: str | None) -> DagsterRun:
    """Materialise `asset_names` (and their blocking checks) for one partition (None: unpartitioned assets) as
    one run of their job in the persistent instance; MaterializeError naming the failure otherwise.

    The run config holds every params key the assets read, from the params the definitions load
    (params.yaml, or those `project.use_params` chose), so a re-execution in the UI repeats this run.
    """
    unknown = [a for a in asset_names if a not in ASSETS]
    if unknown:
        raise KeyError(f"unknown asset(s) {', '.join(unknown)}; choose from: {', '.join(ASSETS)}")
    instance = _instance()
    run = _create_run(instance, _code_location(instance), asset_names, partition_key)
    execute_run(recon_job_from_origin(run.job_code_origin), run, instance)
    run = instance.get_run_by_id(run.run_id)
    _raise_on_failure(instance, run, asset_names, partition_key)
    return run


_INSTANCES: dict[str, dg.DagsterInstance] = {}  # per $DAGSTER_HOME: opening one costs ~0.3 s


def _instance() -> dg.DagsterInstance:
    """The persistent instance of $DAGSTER_HOME, opened once per process (a worker trains many runs)."""
    home = os.environ.get("DAGSTER_HOME", "")
    if home not in _INSTANCES:
        _INSTANCES[home] = dg.DagsterInstance.get()
    return _INSTANCES[home]


def run_config(asset_names: list[str]) -> dict:
    """Every params key the assets' steps read, as their launchpad config, with its values; the console quiet."""
    params = project_params()
    return {
        "ops": {a: {"config": asset_config(a, params)().model_dump(mode="json")} for a in asset_names},
        # the terminal gets no Dagster log (a failure is raised as one message); the run log keeps everything
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
    }


_LOCATION: dict[str, tuple] = {}  # "current": (key, location, definitions module), the last one loaded here


def _code_location(instance: dg.DagsterInstance) -> InProcessCodeLocation:
    """The project as the code location the UI shows, its definitions built in this process for the params
    chosen now (`use_params`), and kept while the next runs are of the same project and params."""
    params_file = params_path()
    key = (str(repo_root()), str(params_file), params_file.read_bytes(), str(instance.root_directory))
    loaded = _LOCATION.get("current")
    if loaded is not None and loaded[0] == key and sys.modules.get(DEFINITIONS_MODULE) is loaded[2]:
        return loaded[1]
    sys.modules.pop(DEFINITIONS_MODULE, None)  # build the definitions afresh: runs execute what the module holds
    origin = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(
            executable_path=sys.executable, module_name=DEFINITIONS_MODULE, working_directory=str(repo_root())
        ),
        location_name=LOCATION_NAME,
    )
    location = InProcessCodeLocation(origin, instance)
    _LOCATION["current"] = (key, location, sys.modules[DEFINITIONS_MODULE])
    return location


def _create_run(
    instance: dg.DagsterInstance, location: InProcessCodeLocation, asset_names: list[str], partition_key: str | None
) -> DagsterRun:
    """A NOT_STARTED run of the assets' job, with their checks, the partition's tags and the invocation's."""
    job = job_of(asset_names)
    repo = location.get_repository(REPOSITORY)
    selector = JobSubsetSelector(
        location_name=location.name,
        repository_name=repo.name,
        job_name=job,
        op_selection=None,
        asset_selection=[dg.AssetKey(a) for a in asset_names],
    )
    remote_job = location.get_job(selector)
    config = run_config(asset_names)
    plan = location.get_execution_plan(
        remote_job, config, step_keys_to_execute=None, known_state=None, instance=instance
    )
    tags = {**remote_job.tags, **_partition_tags(partition_key), "collab_iu/entry": "cli"}
    if os.environ.get(INVOCATION_ENV):
        tags[INVOCATION_TAG] = os.environ[INVOCATION_ENV]
    if os.environ.get(REPLACE_ENV):
        tags[REPLACE_TAG] = "true"
    return instance.create_run(
        job_name=job,
        run_id=None,
        run_config=config,
        status=DagsterRunStatus.NOT_STARTED,
        tags=tags,
        root_run_id=None,
        parent_run_id=None,
        step_keys_to_execute=None,
        execution_plan_snapshot=plan.execution_plan_snapshot,
        job_snapshot=remote_job.job_snapshot,
        parent_job_snapshot=remote_job.parent_job_snapshot,
        asset_selection=frozenset(remote_job.asset_selection or ()),
        asset_check_selection=frozenset(remote_job.asset_check_selection or ()) or None,
        resolved_op_selection=None,
        op_selection=None,
        remote_job_origin=remote_job.get_remote_origin(),  # what the UI's Re-execute needs
        job_code_origin=remote_job.get_python_origin(),
        asset_graph=repo.asset_graph,
    )


def _partition_tags(partition_key: str | None) -> dict[str, str]:
    """The tags that make a run one partition's (and each dimension's, for a dataset x run key)."""
    if partition_key is None:
        return {}
    tags = {PARTITION_NAME_TAG: str(partition_key)}
    if isinstance(partition_key, dg.MultiPartitionKey):
        tags |= {f"{MULTIDIMENSIONAL_PARTITION_PREFIX}{d}": k for d, k in partition_key.keys_by_dimension.items()}
    return tags


def _raise_on_failure(
    instance: dg.DagsterInstance, run: DagsterRun, asset_names: list[str], partition_key: str | None
) -> None:
    events = [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event is not None]
    failed_checks = [
        f"{e.asset_check_evaluation_data.asset_key.to_user_string()}.{e.asset_check_evaluation_data.check_name}: "
        f"{e.asset_check_evaluation_data.description}"
        for e in events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION and not e.asset_check_evaluation_data.passed
    ]
    if run.status == DagsterRunStatus.SUCCESS and not failed_checks:
        return
    errors = [
        e.step_failure_data.error
        for e in events
        if e.event_type == DagsterEventType.STEP_FAILURE and e.step_failure_data.error is not None
    ]
    causes = [innermost(error) for error in errors]
    if failed_checks:  # the check's own line says why; Dagster's "check failed" error adds nothing
        causes = [c for c in causes if c.cls_name != "DagsterAssetCheckFailedError"]
    where = f" [{partition_key}]" if partition_key is not None else ""
    lines = [f"materialising {', '.join(asset_names)}{where} failed (Dagster run {run.run_id})"]
    lines += [f"  blocking check failed: {c}" for c in failed_checks]
    lines += [f"  {failure_message(c)}" for c in causes]
    bugs = [c for c in causes if c.cls_name not in user_error_names() and _environment_error(c) is None]
    raise MaterializeError("\n".join(lines), bug_traceback="".join(b.to_string() for b in bugs) or None)


def innermost(error):
    """The user's exception in a Dagster step failure (the innermost cause), without Dagster's wrapper."""
    while error.cause is not None:
        error = error.cause
    return error


ERRNO_MESSAGE = re.compile(r"^\w*Error: \[Errno (\d+)\] ([^:\n]*)(?:: '(.*)')?")  # OSError's str(), with its class


def _environment_error(error) -> OSError | None:
    """The OSError of the user's machine (errno in collab_iu.errors.ENVIRONMENT_ERRNOS) a step failed with,
    rebuilt from its message; None for any other error."""
    match = ERRNO_MESSAGE.match(error.message.strip())
    if match is None or int(match.group(1)) not in ENVIRONMENT_ERRNOS:
        return None
    return OSError(int(match.group(1)), match.group(2), match.group(3))


def failure_message(error) -> str:
    """The message of a Dagster step failure's innermost cause; an environment error as collab_iu.errors says it."""
    error = innermost(error)
    environment = _environment_error(error)
    return environment_message(environment) if environment is not None else error.message.strip()


def materialize_model(dataset: str, run_key: str) -> DagsterRun:
    """Train (materialise) one run of the grid."""
    from orchestration.defs.partitions import model_partition_key

    return materialize(["trained_model"], model_partition_key(dataset, run_key))


def model_test_map(dataset: str, run_key: str) -> float | None:
    """Materialise one trained model; its test mAP from the materialisation's metadata."""
    run = materialize_model(dataset, run_key)
    return _metadata(_instance(), run, "trained_model").get("test_map")


def _metadata(instance: dg.DagsterInstance, run: DagsterRun, asset: str) -> Mapping:
    for record in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.dagster_event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in materialization.metadata.items()}
    return {}
