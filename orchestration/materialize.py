"""Materialise assets by key with the Python API, against the persistent instance (the UI's run list).

No asset-selection strings (they break beside dvc's antlr, see stack notes): assets are
chosen with `AssetSelection.assets(...)` and explicit keys.
"""

from __future__ import annotations

import dagster as dg

from orchestration.defs.partitions import model_partition_key
from orchestration.errors import MaterializeError
from collab_iu.steps import STEPS

ASSETS = tuple(s.asset for s in STEPS)
UNPARTITIONED = tuple(s.asset for s in STEPS if s.partitioning == "none")


def _definitions() -> dg.Definitions:
    """Built afresh, so that the params chosen by `use_params` in this process take effect."""
    from orchestration.defs.build import build_definitions

    return build_definitions()


def materialize(
    asset_names: list[str], partition_key: str | None, log_level: str = "WARNING"
) -> dg.ExecuteInProcessResult:
    """Materialise `asset_names` (and their checks) for one partition (None: unpartitioned assets) in the
    persistent instance.

    The assets' config defaults are the params the definitions loaded (see project.use_params).
    """
    unknown = [a for a in asset_names if a not in ASSETS]
    if unknown:
        raise KeyError(f"unknown asset(s) {', '.join(unknown)}; choose from: {', '.join(ASSETS)}")
    defs = _definitions()
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.assets(*asset_names),
        instance=dg.DagsterInstance.get(),
        partition_key=partition_key,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        resources=dict(defs.resources),
        raise_on_error=False,
        tags={"collab_iu/entry": "cli"},
    )
    _raise_on_failure(result, asset_names, partition_key)
    return result


def _raise_on_failure(result: dg.ExecuteInProcessResult, asset_names: list[str], partition_key: str | None) -> None:
    failed_checks = [
        f"{e.asset_check_evaluation_data.asset_key.to_user_string()}.{e.asset_check_evaluation_data.check_name}: "
        f"{e.asset_check_evaluation_data.description}"
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed
    ]
    if result.success and not failed_checks:
        return
    errors = [
        failure_message(e.step_failure_data.error)
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE" and e.step_failure_data.error is not None
    ]
    where = f" [{partition_key}]" if partition_key is not None else ""
    lines = [f"materialising {', '.join(asset_names)}{where} failed (Dagster run {result.run_id})"]
    lines += [f"  blocking check failed: {c}" for c in failed_checks]
    lines += [f"  {e}" for e in errors]
    raise MaterializeError("\n".join(lines))


def failure_message(error) -> str:
    """The user's exception in a Dagster step failure (the innermost cause), without Dagster's wrapper."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def materialize_model(dataset: str, run_key: str) -> dg.ExecuteInProcessResult:
    """Train (materialise) one run of the grid."""
    return materialize(["trained_model"], model_partition_key(dataset, run_key))


def model_test_map(dataset: str, run_key: str) -> float | None:
    """Materialise one trained model; its test mAP from the materialisation's metadata."""
    test_map = _metadata(materialize_model(dataset, run_key), "trained_model").get("test_map")
    return None if test_map is None else float(test_map.value)


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == asset:
            return dict(materialization.metadata)
    return {}
