"""Blocking asset checks: a wrong input stops the assets downstream of it in the same run."""

# no `from __future__ import annotations`: Dagster reads the context type from the signatures

import json
from collections.abc import Callable

import dagster as dg
import numpy as np
import pandas as pd

from collab_iu.artifacts import CF_INDEX, CF_VECTORS, load_prepared, load_splits, read_report
from collab_iu.features import FeatureCacheError, feature_spec, load_features
from collab_iu.grid import grid_runs
from collab_iu.image_cache import load_image_cache
from collab_iu.layout import DatasetLayout, dataset_layout, paper_report_dir
from orchestration.defs.project import project_params, repo_root


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


def catalogue_consistent(layout: DatasetLayout) -> dg.AssetCheckResult:
    """Item ids unique; interactions on known items with finite, non-negative weights; labels present."""
    items, interactions = load_prepared(layout)
    return _result(catalogue_is_consistent(items, interactions), items=len(items))


def no_item_in_two_splits(layout: DatasetLayout) -> dg.AssetCheckResult:
    """Every catalogue item is in exactly one of train, val and test."""
    items, _ = load_prepared(layout)
    return _result(splits_are_disjoint(items, load_splits(layout)))


def every_label_in_train_and_test(layout: DatasetLayout) -> dg.AssetCheckResult:
    """Every label has split.min_items_per_label items in train and in test."""
    minimum = project_params().split.min_items_per_label
    return _result(labels_in_train_and_test(read_report(layout.split), minimum))


def cf_vectors_finite_and_aligned(layout: DatasetLayout) -> dg.AssetCheckResult:
    """The CF vectors are finite and follow the catalogue's item order, one row per item."""
    items, _ = load_prepared(layout)
    vectors = np.load(layout.cf / CF_VECTORS, mmap_mode="r")
    index = pd.read_parquet(layout.cf / CF_INDEX)
    problems = []
    if not np.isfinite(vectors).all():
        problems.append("CF vectors contain NaN or infinite values")
    if len(vectors) != len(index) or list(index["item_id"]) != list(items["item_id"]):
        problems.append(
            f"{len(vectors)} vectors / {len(index)} index rows do not follow the {len(items)} catalogue ids"
        )
    return _result(problems, shape=str(tuple(vectors.shape)))


def image_cache_complete(layout: DatasetLayout) -> dg.AssetCheckResult:
    """Every catalogue image is cached or reported as failed, and the array matches its index."""
    items, _ = load_prepared(layout)
    cache = load_image_cache(layout.cache)
    failed = set(read_report(layout.cache)["failed"]["items"])
    wanted = set(items.loc[items["image"].notna(), "item_id"])
    missing = wanted - set(cache.index["item_id"]) - failed
    problems = [f"{len(missing)} catalogue images are neither cached nor reported failed"] if missing else []
    return _result(problems, images=len(cache.index), failed=len(failed))


def feature_cache_matches(layout: DatasetLayout) -> dg.AssetCheckResult:
    """The feature cache the runs train from (train.finetune tail or heads) was built for their spec from the current
    image cache, has a row per cached image, and holds finite numbers."""
    spec = feature_spec(project_params().for_dataset(layout.name))
    if spec is None:
        return _result([], used="no (train.finetune: full)")
    try:
        features = load_features(layout, spec)
    except FeatureCacheError as exc:
        return _result([str(exc)], key=spec.key)
    cached = len(load_image_cache(layout.cache).index)
    problems = [f"{len(features)} feature rows for {cached} cached images"] if len(features) != cached else []
    finite = all(np.isfinite(features[i : i + 512]).all() for i in range(0, len(features), 512))
    problems += [] if finite else ["the features hold NaN or infinite values"]
    return _result(problems, key=spec.key, rows=len(features))


def evaluation_covers_grid(layout: DatasetLayout) -> dg.AssetCheckResult:
    """The evaluation has a result for every run of the dataset's grid."""
    summary = json.loads((layout.evaluation / "summary.json").read_text())
    evaluated = {run["run_key"] for run in summary["runs"]}
    missing = [spec.key for spec in grid_runs(project_params().for_dataset(layout.name)) if spec.key not in evaluated]
    problems = [f"no result for runs: {', '.join(missing)}"] if missing else []
    return _result(problems, runs=len(evaluated))


def paper_report_covers_evaluations() -> dg.AssetCheckResult:
    """Every run of every dataset's evaluation is in the paper's tables."""
    params = project_params()
    report = read_report(paper_report_dir(params, repo_root()))
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


# the blocking checks of the dataset-partitioned assets: asset -> checks (each a function of the layout)
DATASET_CHECKS: dict[str, tuple[Callable[[DatasetLayout], dg.AssetCheckResult], ...]] = {
    "catalogue": (catalogue_consistent,),
    "splits": (no_item_in_two_splits, every_label_in_train_and_test),
    "cf_embeddings": (cf_vectors_finite_and_aligned,),
    "image_cache": (image_cache_complete,),
    "feature_cache": (feature_cache_matches,),
    "evaluation": (evaluation_covers_grid,),
}


def _dataset_check(asset: dg.AssetsDefinition, check, datasets: dg.PartitionsDefinition):
    @dg.asset_check(asset=asset, name=check.__name__, description=check.__doc__, blocking=True, partitions_def=datasets)
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return check(dataset_layout(project_params(), context.partition_key, repo_root()))

    return _check


def build_checks(assets: dict[str, dg.AssetsDefinition], datasets: dg.PartitionsDefinition) -> list:
    """The blocking checks: DATASET_CHECKS per dataset partition, and paper_report_covers_evaluations."""
    checks = [_dataset_check(assets[name], c, datasets) for name, group in DATASET_CHECKS.items() for c in group]
    report_check = dg.asset_check(
        asset=assets["paper_report"], description=paper_report_covers_evaluations.__doc__, blocking=True
    )(paper_report_covers_evaluations)
    return [*checks, report_check]
