"""The Dagster project: the whole graph on a tiny config, blocking checks, config defaults, the instance."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from helpers import REPO, tiny_params_tree

from collab_iu.grid import grid_runs
from collab_iu.params import load_params
from orchestration.defs.build import build_definitions
from orchestration.defs.partitions import model_partition_key
from orchestration.errors import MaterializeError
from orchestration.materialize import failure_message


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A tiny project in tmp_path: params.yaml there, data and .dagster under it."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_tree(Path("data"))))
    monkeypatch.setenv("COLLAB_IU_ROOT", str(tmp_path))
    monkeypatch.delenv("COLLAB_IU_PARAMS", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ".dagster"))
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    return tmp_path


def _materialize(defs: dg.Definitions, assets: list[str], partition: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.assets(*assets),
        partition_key=partition,
        resources=dict(defs.resources),
        raise_on_error=False,
    )


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_asset_graph(project):
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "catalogue",
        "splits",
        "cf_embeddings",
        "image_cache",
        "feature_cache",
        "trained_model",
        "evaluation",
        "paper_report",
    }
    assert graph.get(dg.AssetKey("paper_report")).partitions_def is None
    model = graph.get(dg.AssetKey("trained_model"))
    runs = [spec.key for spec in grid_runs(load_params(project / "params.yaml"))]
    assert sorted(model.partitions_def.get_partition_keys()) == sorted(
        model_partition_key("synthetic", r) for r in runs
    )
    assert graph.get(dg.AssetKey("evaluation")).partitions_def.get_partition_keys() == ["synthetic"]
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {
        "catalogue_consistent",
        "no_item_in_two_splits",
        "every_label_in_train_and_test",
        "cf_vectors_finite_and_aligned",
        "image_cache_complete",
        "feature_cache_matches",
        "evaluation_covers_grid",
        "paper_report_covers_evaluations",
    }


def test_whole_graph_materialises_and_checks_pass(project):
    defs = build_definitions()
    data = _materialize(defs, ["catalogue", "splits", "cf_embeddings", "image_cache"], "synthetic")
    assert data.success
    assert _materialized(data) == {"catalogue", "splits", "cf_embeddings", "image_cache"}
    runs = [spec.key for spec in grid_runs(load_params(project / "params.yaml"))]
    for run in runs:
        result = _materialize(defs, ["trained_model"], model_partition_key("synthetic", run))
        assert result.success, run
        meta = result.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
        assert 0 < meta["test_map"].value <= 1 and meta["best_epoch"].value >= 1
        if run.startswith("with_cf"):  # how well its CF head predicts validation CF vectors
            assert meta["val_cf_r2"].value <= 1 and -1 <= meta["val_cf_cosine"].value <= 1
            assert meta["val_cf_items"].value > 0
        elif run.startswith(("image_only", "triplet")):  # no CF head; a head of embeddings
            assert "val_cf_r2" not in meta and "val_cf_cosine" not in meta
    evaluation = _materialize(defs, ["evaluation"], "synthetic")
    assert evaluation.success
    checks = _checks(data) | _checks(evaluation)
    assert len(checks) == 6 and all(checks.values()), checks
    summary = json.loads((project / "data/synthetic/evaluation/summary.json").read_text())
    assert {r["run_key"] for r in summary["runs"]} == set(runs)
    meta = evaluation.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
    assert meta["map_vs_label_ratio"].value.startswith("![mAP vs label ratio](data:image/png;base64,")
    assert "| with_cf |" in meta["results"].value
    report = _materialize(defs, ["paper_report"], None)
    assert report.success and _checks(report) == {"paper_report_covers_evaluations": True}
    meta = report.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
    assert meta["datasets"].value == "synthetic" and "| with_cf |" in meta["main_table"].value
    assert (project / "data/paper_report/main_table.csv").is_file()


def test_corrupted_catalogue_fails_its_blocking_check(project, monkeypatch):
    """A catalogue with a duplicated item stops the run before anything downstream is materialised."""
    import orchestration.defs.assets as assets_module

    real_prepare = assets_module.run_prepare

    def corrupting_prepare(params, dataset, root):
        report = real_prepare(params, dataset, root)
        path = Path(root) / "data" / dataset / "prepared" / "items.parquet"
        items = pd.read_parquet(path)
        pd.concat([items, items.iloc[[5]]], ignore_index=True).to_parquet(path, index=False)
        return report

    monkeypatch.setattr(assets_module, "run_prepare", corrupting_prepare)
    defs = build_definitions()
    result = _materialize(defs, ["catalogue", "splits", "cf_embeddings", "image_cache"], "synthetic")
    assert _checks(result) == {"catalogue_consistent": False}
    failed = next(e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
    assert "1 duplicate item ids (e.g. 'item_000005')" in failed.asset_check_evaluation_data.description
    assert _materialized(result) == {"catalogue"}
    for downstream in ("split", "cf", "cache"):
        assert not (project / "data" / "synthetic" / downstream).exists()


def test_materialize_helper_reports_the_failed_check(project, monkeypatch):
    import orchestration.defs.assets as assets_module
    from orchestration import materialize as materialize_module
    from orchestration.defs.project import use_params

    real_prepare = assets_module.run_prepare

    def empty_labels_prepare(params, dataset, root):
        report = real_prepare(params, dataset, root)
        path = Path(root) / "data" / dataset / "prepared" / "items.parquet"
        items = pd.read_parquet(path)
        items["labels"] = [[] for _ in range(len(items))]
        items.to_parquet(path, index=False)
        return report

    monkeypatch.setattr(assets_module, "run_prepare", empty_labels_prepare)
    use_params(load_params(project / "params.yaml"))
    with pytest.raises(MaterializeError, match="catalogue.catalogue_consistent: no item has a label"):
        materialize_module.materialize(["catalogue", "splits"], "synthetic")
    assert not (project / "data" / "synthetic" / "split").exists()


def test_params_value_is_the_config_default(project, tmp_path, monkeypatch):
    copy = tmp_path / "other" / "params.yaml"
    copy.parent.mkdir()
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    tree["cf"]["factors"] = 48
    tree["train"]["epochs"] = 7
    copy.write_text(yaml.safe_dump(tree))
    monkeypatch.setenv("COLLAB_IU_PARAMS", str(copy))
    assets = {a.key.to_user_string(): a for a in build_definitions().assets}

    def default(asset: str, group: str, key: str):
        fields = assets[asset].op.config_schema.config_type.fields
        return fields[group].config_type.fields[key].default_value

    assert default("cf_embeddings", "cf", "factors") == 48
    assert default("trained_model", "train", "epochs") == 7
    assert default("cf_embeddings", "cf", "algorithm") == tree["cf"]["algorithm"]


def test_asset_config_is_validated_by_the_schema(project):
    defs = build_definitions()
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.assets("catalogue"),
        partition_key="synthetic",
        resources=dict(defs.resources),
        run_config={"ops": {"catalogue": {"config": {"prepare": {"max_bad_image_fraction": 3.0}}}}},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "prepare.max_bad_image_fraction" in failure_message(failure.step_failure_data.error)
