r"""The pipeline as software-defined assets, one per step of the registry (collab_iu/steps.py). Each asset
resolves its partition and config, calls one core function, and returns metadata; the core writes the
documented files.

    catalogue -> splits -> cf_embeddings ----------------\
             \-> image_cache -> feature_cache -------------+-> trained_model (dataset x run key) -> evaluation
                                                                                                  -> paper_report
"""

# no `from __future__ import annotations`: Dagster reads the (generated) Config classes from the signatures

import json
from collections.abc import Callable

import dagster as dg

from collab_iu.artifacts import TRAIN_JSON
from collab_iu.evaluate import headline_sentence, run_evaluation
from collab_iu.experiment import train_run
from collab_iu.layout import dataset_layout, paper_report_dir
from collab_iu.observer import Observers
from collab_iu.paper_report import build_paper_report
from collab_iu.params import Params
from collab_iu.stages import run_cache, run_cf, run_features, run_prepare, run_split
from collab_iu.steps import step
from orchestration.defs.config import asset_config, params_with
from orchestration.defs.metadata import markdown_table, png_markdown, wandb_run_metadata
from orchestration.defs.partitions import DATASET, RUN, dataset_partitions, model_partitions, run_partitions
from orchestration.defs.project import REPLACE_TAG, TRAINING_POOL, project_params, repo_root
from orchestration.defs.resources import ComputeResource, WandbResource
from orchestration.progress import EpochLog
from orchestration.tracking import WandbObserver, log_cf, log_evaluation

# what a dataset asset computes: (its params, with the launchpad's config applied; the context) -> metadata
Compute = Callable[[Params, dg.AssetExecutionContext], dict]


def build_assets(params: Params) -> tuple[list[dg.AssetsDefinition], dict]:
    """The eight assets, their configs and partitions built from `params` (params.yaml)."""
    datasets = dataset_partitions(params)
    runs = run_partitions(params)
    catalogue = _dataset_asset(params, "catalogue", datasets, [], "parquet", _prepare)
    splits = _dataset_asset(params, "splits", datasets, [catalogue], "parquet", _split)
    cf_embeddings = _dataset_asset(params, "cf_embeddings", datasets, [catalogue, splits], "numpy", _cf)
    image_cache = _dataset_asset(params, "image_cache", datasets, [catalogue], "numpy", _cache)
    feature_cache = _dataset_asset(params, "feature_cache", datasets, [image_cache], "numpy", _features)
    trained_model = _trained_model(
        params, model_partitions(datasets, runs), [splits, cf_embeddings, image_cache, feature_cache]
    )
    evaluation = _dataset_asset(params, "evaluation", datasets, [trained_model], "pandas", _evaluate)
    paper_report = _paper_report(params, [evaluation])
    assets = [catalogue, splits, cf_embeddings, image_cache, feature_cache, trained_model, evaluation, paper_report]
    return assets, {"datasets": datasets, "runs": runs}


def _group(asset: str) -> str:
    return {"trained_model": "training", "evaluation": "evaluation", "paper_report": "evaluation"}.get(asset, "data")


def _dataset_asset(
    params: Params, name: str, partitions: dg.PartitionsDefinition, deps: list, kind: str, compute: Compute
) -> dg.AssetsDefinition:
    """The asset of a step partitioned by dataset: `compute` on the partition's dataset."""
    Config = asset_config(name, params)

    @dg.asset(
        name=name,
        partitions_def=partitions,
        group_name=_group(name),
        deps=deps,
        kinds={kind},
        description=step(name).summary,
    )
    def _asset(context: dg.AssetExecutionContext, config: Config, wandb: WandbResource) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=compute(wandb.apply(params_with(project_params(), config)), context))

    return _asset


def _prepare(params: Params, context: dg.AssetExecutionContext) -> dict:
    report = run_prepare(params, context.partition_key, repo_root())
    counts = [{"label": k, "items": v} for k, v in report["label_counts"].items()]
    keys = ("items", "items_with_image", "labelled_items", "users", "interactions", "labels", "fingerprint")
    return {
        **{k: report[k] for k in keys},
        "filtered": dg.MetadataValue.json(report["filtered"]),
        "label_counts": markdown_table(counts),
    }


def _split(params: Params, context: dg.AssetExecutionContext) -> dict:
    report = run_split(params, context.partition_key, repo_root())
    counts = report["label_counts"]
    rows = [{"label": lab, **{s: counts[s].get(lab, 0) for s in counts}} for lab in sorted(counts["train"])]
    return {
        **{f"{k}_items": v for k, v in report["items"].items()},
        "labelled_train_items": report["labelled_train_items"],
        "label_counts": markdown_table(rows),
    }


def _cf(params: Params, context: dg.AssetExecutionContext) -> dict:
    report = run_cf(params, context.partition_key, repo_root())
    link = log_cf(params, report, repo_root())  # a W&B run of job type `cf`; never raises
    probe = report["label_probe"]
    metadata = wandb_run_metadata(link) | {
        "algorithm": report["algorithm"],
        "dim": report["dim"],
        "items_with_vector": report["items_with_vector"],
        "label_probe_map": probe["probe_map"],
        "label_popularity_map": probe["popularity_map"],
    }
    for name, value in report.get("recommendation", {}).get("model", {}).items():
        metadata[name] = value
        metadata[f"{name} (popularity)"] = report["recommendation"]["popularity"][name]
    return metadata


def _cache(params: Params, context: dg.AssetExecutionContext) -> dict:
    report = run_cache(params, context.partition_key, repo_root())
    return {
        "images": report["images"],
        "image_size": report["image_size"],
        "failed": report["failed"]["count"],
        "megabytes": round(report["bytes"] / 1e6, 1),
    }


def _features(params: Params, context: dg.AssetExecutionContext) -> dict:
    report = run_features(params, context.partition_key, repo_root())
    if "skipped" in report:
        return {"skipped": report["skipped"]}
    return {
        "key": report["key"],
        "shape": str(tuple(report["shape"])),
        "megabytes": round(report["bytes"] / 1e6, 1),
        "reused": report["reused"],
    }


def _evaluate(params: Params, context: dg.AssetExecutionContext) -> dict:
    result = run_evaluation(params, context.partition_key, repo_root())
    link = log_evaluation(params, result, repo_root())  # a W&B run of job type `evaluation`; never raises
    metadata = wandb_run_metadata(link) | {
        "results": dg.MetadataValue.md(result["paths"]["results_md"].read_text()),
        "map_vs_label_ratio": png_markdown(result["paths"]["map_plot"], "mAP vs label ratio"),
        "improvement": png_markdown(result["paths"]["improvement_plot"], "improvement over image_only"),
    }
    if result["headline"]:
        metadata["headline"] = headline_sentence(result["headline"])
        metadata |= {f"headline_{k}": v for k, v in result["headline"].items() if v is not None}
    probe = result["summary"].get("cf_label_probe") or {}
    metadata |= {f"cf_label_probe_{k}": probe[k] for k in ("probe_map", "popularity_map") if probe.get(k) is not None}
    return metadata


def _trained_model(params: Params, partitions: dg.PartitionsDefinition, deps: list) -> dg.AssetsDefinition:
    """One training run per partition (dataset x run key), in the `training` pool (its limit: project.py)."""
    Config = asset_config("trained_model", params)

    @dg.asset(
        partitions_def=partitions,
        group_name=_group("trained_model"),
        deps=deps,
        pool=TRAINING_POOL,
        kinds={"pytorch"},
        description=step("trained_model").summary,
    )
    def trained_model(
        context: dg.AssetExecutionContext, config: Config, compute: ComputeResource, wandb: WandbResource
    ) -> dg.MaterializeResult:
        keys = context.partition_key.keys_by_dimension
        run_params = wandb.apply(params_with(project_params(), config))
        run_params = run_params.model_copy(
            update={"train": run_params.train.model_copy(update={"device": compute.resolved()})}
        )
        wandb_run = WandbObserver(run_params, repo_root(), origin={"dagster_run_id": context.run.run_id})
        observer = Observers([wandb_run, EpochLog(_log_and_print(context), keys[RUN])])
        replace = context.run.tags.get(REPLACE_TAG) == "true"  # a finished run with another config: only if asked
        metrics = train_run(
            run_params, keys[RUN], keys[DATASET], repo_root(), progress=False, observer=observer, replace=replace
        )
        run_dir = dataset_layout(run_params, keys[DATASET], repo_root()).runs / keys[RUN]
        return dg.MaterializeResult(metadata=_model_metadata(metrics, run_dir) | wandb_run_metadata(wandb_run.link))

    return trained_model


def _log_and_print(context: dg.AssetExecutionContext) -> Callable[[str], None]:
    """A line to the run's log (the UI) and to stdout (the terminal of `collab-iu`, `dvc repro`)."""

    def write(line: str) -> None:
        context.log.info(line)
        print(line, flush=True)

    return write


def _model_metadata(metrics: dict, run_dir) -> dict:
    history = json.loads((run_dir / TRAIN_JSON).read_text())["history"]
    curve = [{k: r[k] for k in r if k != "lr"} for r in history]
    # how well the CF head predicts validation CF vectors; absent when not measured (image_only, triplet)
    cf_fit = {k: float(metrics[k]) for k in ("val_cf_r2", "val_cf_cosine") if metrics.get(k) is not None}
    if metrics.get("val_cf_items") is not None:
        cf_fit["val_cf_items"] = int(metrics["val_cf_items"])
    return {
        "test_map": metrics["test_map"],
        "val_map": metrics["val_map"],
        "best_epoch": metrics["best_epoch"],
        "labelled_train_items": metrics["labelled_train_items"],
        **cf_fit,
        "training_curve": markdown_table(curve),
        "path": str(run_dir),
    }


def _paper_report(params: Params, deps: list) -> dg.AssetsDefinition:
    Config = asset_config("paper_report", params)

    @dg.asset(group_name=_group("paper_report"), deps=deps, kinds={"pandas"}, description=step("paper_report").summary)
    def paper_report(config: Config) -> dg.MaterializeResult:
        run_params = params_with(project_params(), config)
        result = build_paper_report(run_params, paper_report_dir(run_params, repo_root()), None, repo_root())
        paths = result["paths"]
        return dg.MaterializeResult(
            metadata={
                "datasets": ", ".join(result["datasets"]),
                "skipped": dg.MetadataValue.json(result["skipped"]),
                "main_table": dg.MetadataValue.md(paths["main_table_md"].read_text()),
                "map_vs_label_ratio": png_markdown(paths["map_vs_label_ratio_png"], "mAP vs label ratio"),
                "map_vs_cf_weight": png_markdown(paths["map_vs_cf_weight_png"], "mAP vs cf weight"),
            }
        )

    return paper_report
