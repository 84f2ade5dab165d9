"""Blocking asset checks: a wrong input stops the assets downstream of it in the same run."""

# no `from __future__ import annotations`: Dagster reads the context type from the signatures

import json

import dagster as dg
import numpy as np
import pandas as pd

from collab_iu.grid import grid_runs
from collab_iu.image_cache import load_image_cache
from collab_iu.layout import DatasetLayout, dataset_layout, paper_report_dir
from collab_iu.stages import load_prepared, load_splits, read_report
from orchestration.defs.project import project_params, repo_root


def _layout(context: dg.AssetCheckExecutionContext) -> DatasetLayout:
    return dataset_layout(project_params(), context.partition_key, repo_root())


def _result(problems: list[str], **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) if problems else None,
        metadata={"problems": len(problems), **metadata},
    )


def catalogue_is_consistent(items: pd.DataFrame, interactions: pd.DataFrame) -> list[str]:
    """Unique ids, interactions on known items with finite non-negative weights, a label vocabulary."""
    problems = []
    duplicated = items["item_id"][items["item_id"].duplicated()].unique()
    if len(duplicated):
        problems.append(f"{len(duplicated)} duplicate item ids (e.g. {duplicated[0]!r})")
    unknown = ~interactions["item_id"].isin(items["item_id"])
    if unknown.any():
        problems.append(f"{int(unknown.sum())} interactions name unknown items")
    weight = interactions["weight"].to_numpy(dtype=np.float64)
    if not np.isfinite(weight).all() or (weight < 0).any():
        problems.append("interaction weights must be finite and >= 0")
    if not any(len(x) for x in items["labels"]):
        problems.append("no item has a label")
    return problems


def splits_are_disjoint(items: pd.DataFrame, splits: pd.DataFrame) -> list[str]:
    problems = []
    per_item = splits.groupby("item_id")["split"].nunique()
    twice = per_item[per_item > 1]
    if len(twice):
        problems.append(f"{len(twice)} items are in two splits (e.g. {twice.index[0]!r})")
    missing = set(items["item_id"]) - set(splits["item_id"])
    if missing:
        problems.append(f"{len(missing)} catalogue items have no split")
    return problems


def labels_in_train_and_test(split_report: dict, minimum: int) -> list[str]:
    counts = split_report["label_counts"]
    labels = set(counts["train"]) | set(counts["test"])
    return [
        f"label {label!r} has {counts['train'].get(label, 0)} train and {counts['test'].get(label, 0)} test items "
        f"(needs {minimum} in each)"
        for label in sorted(labels)
        if min(counts["train"].get(label, 0), counts["test"].get(label, 0)) < minimum
    ]


def build_checks(assets: dict[str, dg.AssetsDefinition], datasets: dg.PartitionsDefinition) -> list:
    """The blocking checks on catalogue, splits, cf_embeddings, image_cache and evaluation."""

    @dg.asset_check(asset=assets["catalogue"], blocking=True, partitions_def=datasets)
    def catalogue_consistent(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        """Item ids unique; interactions on known items with valid weights; labels present."""
        items, interactions = load_prepared(_layout(context))
        return _result(catalogue_is_consistent(items, interactions), items=len(items))

    @dg.asset_check(asset=assets["splits"], blocking=True, partitions_def=datasets)
    def no_item_in_two_splits(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        layout = _layout(context)
        items, _ = load_prepared(layout)
        return _result(splits_are_disjoint(items, load_splits(layout)))

    @dg.asset_check(asset=assets["splits"], blocking=True, partitions_def=datasets)
    def every_label_in_train_and_test(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        layout = _layout(context)
        minimum = project_params().split.min_items_per_label
        return _result(labels_in_train_and_test(read_report(layout.split), minimum))

    @dg.asset_check(asset=assets["cf_embeddings"], blocking=True, partitions_def=datasets)
    def cf_vectors_finite_and_aligned(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        layout = _layout(context)
        items, _ = load_prepared(layout)
        vectors = np.load(layout.cf / "item_vectors.npy", mmap_mode="r")
        index = pd.read_parquet(layout.cf / "item_index.parquet")
        problems = []
        if not np.isfinite(vectors).all():
            problems.append("CF vectors contain NaN or infinite values")
        if len(vectors) != len(index) or list(index["item_id"]) != list(items["item_id"]):
            problems.append(f"{len(vectors)} vectors / {len(index)} index rows do not follow the {len(items)} catalogue ids")
        return _result(problems, shape=str(tuple(vectors.shape)))

    @dg.asset_check(asset=assets["image_cache"], blocking=True, partitions_def=datasets)
    def image_cache_complete(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        """Every catalogue image is cached or reported as failed, and the array matches its index."""
        layout = _layout(context)
        items, _ = load_prepared(layout)
        cache = load_image_cache(layout.cache)
        failed = set(read_report(layout.cache)["failed"]["items"])
        wanted = set(items.loc[items["image"].notna(), "item_id"])
        missing = wanted - set(cache.index["item_id"]) - failed
        problems = [f"{len(missing)} catalogue images are neither cached nor reported failed"] if missing else []
        return _result(problems, images=len(cache.index), failed=len(failed))

    @dg.asset_check(asset=assets["evaluation"], blocking=True, partitions_def=datasets)
    def evaluation_covers_grid(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        layout = _layout(context)
        summary = json.loads((layout.evaluation / "summary.json").read_text())
        evaluated = {run["run_key"] for run in summary["runs"]}
        missing = [spec.key for spec in grid_runs(project_params().for_dataset(layout.name)) if spec.key not in evaluated]
        problems = [f"no result for runs: {', '.join(missing)}"] if missing else []
        return _result(problems, runs=len(evaluated))

    @dg.asset_check(asset=assets["paper_report"], blocking=True)
    def paper_report_covers_evaluations() -> dg.AssetCheckResult:
        """Every run of every dataset's evaluation is in the paper's tables."""
        params = project_params()
        report = json.loads((paper_report_dir(params, repo_root()) / "report.json").read_text())
        problems = []
        for name in params.data.datasets:
            summary_path = dataset_layout(params, name, repo_root()).evaluation / "summary.json"
            if not summary_path.exists():
                continue
            evaluated = {run["run_key"] for run in json.loads(summary_path.read_text())["runs"]}
            reported = set(report["details"].get(name, {}).get("runs", []))
            if evaluated - reported:
                problems.append(f"{name}: runs evaluated but not in the report: {', '.join(sorted(evaluated - reported))}")
        return _result(problems, datasets=", ".join(report["datasets"]))

    return [
        catalogue_consistent, no_item_in_two_splits, every_label_in_train_and_test,
        cf_vectors_finite_and_aligned, image_cache_complete, evaluation_covers_grid, paper_report_covers_evaluations,
    ]  # fmt: skip
