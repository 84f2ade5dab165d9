r"""The pipeline as software-defined assets. Each asset resolves its partition and config,
calls one core function, and returns metadata; the core writes the documented files.

    catalogue -> splits -> cf_embeddings --\
             \-> image_cache ---------------+-> trained_model (dataset x run key) -> evaluation -> paper_report
"""

# no `from __future__ import annotations`: Dagster reads the (generated) Config classes from the signatures

import json

import dagster as dg

from collab_iu.evaluate import headline_sentence, run_evaluation
from collab_iu.experiment import train_run
from collab_iu.observer import Observers
from collab_iu.layout import dataset_layout, paper_report_dir
from collab_iu.paper_report import build_paper_report
from collab_iu.params import Params
from collab_iu.stages import run_cache, run_cf, run_prepare, run_split
from collab_iu.train import resolve_device
from orchestration.defs.config import asset_config, params_with
from orchestration.defs.metadata import markdown_table, png_markdown
from orchestration.defs.partitions import DATASET, RUN, dataset_partitions, model_partitions, run_partitions
from orchestration.defs.project import project_params, repo_root
from orchestration.defs.resources import ComputeResource, WandbResource
from orchestration.progress import EpochLog
from orchestration.tracking import WandbObserver, log_cf, log_evaluation


GPU_POOL = "gpu"  # one training step on the GPU at a time (limit set in .dagster/dagster.yaml)


def build_assets(params: Params) -> tuple[list[dg.AssetsDefinition], dict]:
    """The seven assets, their configs and partitions built from `params` (params.yaml)."""
    datasets = dataset_partitions(params)
    runs = run_partitions(params)
    CatalogueConfig = asset_config("catalogue", params)
    SplitsConfig = asset_config("splits", params)
    CfConfig = asset_config("cf_embeddings", params)
    CacheConfig = asset_config("image_cache", params)
    ModelConfig = asset_config("trained_model", params)
    EvaluationConfig = asset_config("evaluation", params)
    ReportConfig = asset_config("paper_report", params)

    @dg.asset(partitions_def=datasets, group_name="data", kinds={"parquet"})
    def catalogue(context: dg.AssetExecutionContext, config: CatalogueConfig) -> dg.MaterializeResult:
        """The validated dataset (generated for `synthetic`): data/<dataset>/prepared/."""
        report = run_prepare(params_with(project_params(), config), context.partition_key, repo_root())
        return dg.MaterializeResult(
            metadata={
                "items": report["items"],
                "items_with_image": report["items_with_image"],
                "labelled_items": report["labelled_items"],
                "users": report["users"],
                "interactions": report["interactions"],
                "labels": report["labels"],
                "fingerprint": report["fingerprint"],
                "filtered": dg.MetadataValue.json(report["filtered"]),
                "label_counts": markdown_table([{"label": k, "items": v} for k, v in report["label_counts"].items()]),
            }
        )

    @dg.asset(partitions_def=datasets, group_name="data", deps=[catalogue], kinds={"parquet"})
    def splits(context: dg.AssetExecutionContext, config: SplitsConfig) -> dg.MaterializeResult:
        """Item-level train/val/test split stratified by label: data/<dataset>/split/."""
        report = run_split(params_with(project_params(), config), context.partition_key, repo_root())
        counts = report["label_counts"]
        rows = [{"label": lab, **{s: counts[s].get(lab, 0) for s in counts}} for lab in sorted(counts["train"])]
        return dg.MaterializeResult(
            metadata={**{f"{k}_items": v for k, v in report["items"].items()},
                      "labelled_train_items": report["labelled_train_items"],
                      "label_counts": markdown_table(rows)}  # fmt: skip
        )

    @dg.asset(partitions_def=datasets, group_name="data", deps=[catalogue, splits], kinds={"numpy"})
    def cf_embeddings(
        context: dg.AssetExecutionContext, config: CfConfig, wandb: WandbResource
    ) -> dg.MaterializeResult:
        """CF item vectors (implicit ALS/BPR) and their quality against popularity: data/<dataset>/cf/."""
        cf_params = wandb.apply(params_with(project_params(), config))
        report = run_cf(cf_params, context.partition_key, repo_root())
        log_cf(cf_params, report, repo_root())  # a W&B run of job type `cf`; never raises
        probe = report["label_probe"]
        metadata = {
            "algorithm": report["algorithm"],
            "dim": report["dim"],
            "items_with_vector": report["items_with_vector"],
            "label_probe_map": probe["probe_map"],
            "label_popularity_map": probe["popularity_map"],
        }
        for name, value in report.get("recommendation", {}).get("model", {}).items():
            metadata[name] = value
            metadata[f"{name} (popularity)"] = report["recommendation"]["popularity"][name]
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(partitions_def=datasets, group_name="data", deps=[catalogue], kinds={"numpy"})
    def image_cache(context: dg.AssetExecutionContext, config: CacheConfig) -> dg.MaterializeResult:
        """Every image decoded once into a memory-mapped uint8 array: data/<dataset>/cache/."""
        report = run_cache(params_with(project_params(), config), context.partition_key, repo_root())
        return dg.MaterializeResult(
            metadata={"images": report["images"], "image_size": report["image_size"],
                      "failed": report["failed"]["count"], "megabytes": round(report["bytes"] / 1e6, 1)}  # fmt: skip
        )

    @dg.asset(
        partitions_def=model_partitions(datasets, runs),
        group_name="training",
        deps=[splits, cf_embeddings, image_cache],
        pool=GPU_POOL if resolve_device(params.train.device).type == "cuda" else None,  # CPU runs go in parallel
        kinds={"pytorch"},
    )
    def trained_model(
        context: dg.AssetExecutionContext, config: ModelConfig, compute: ComputeResource, wandb: WandbResource
    ) -> dg.MaterializeResult:
        """One run of the grid (method, label ratio, cf weight, seed): data/<dataset>/runs/<run key>/."""
        keys = context.partition_key.keys_by_dimension
        run_params = wandb.apply(params_with(project_params(), config))
        run_params = run_params.model_copy(
            update={"train": run_params.train.model_copy(update={"device": compute.resolved()})}
        )
        observer = Observers([WandbObserver(run_params, repo_root()), EpochLog(context.log.info, keys[RUN])])
        metrics = train_run(run_params, keys[RUN], keys[DATASET], repo_root(), progress=False, observer=observer)
        run_dir = dataset_layout(run_params, keys[DATASET], repo_root()).runs / keys[RUN]
        history = json.loads((run_dir / "train.json").read_text())["history"]
        curve = [{k: r[k] for k in r if k != "lr"} for r in history]
        # how well the CF head predicts validation CF vectors; absent when not measured (image_only, triplet)
        cf_fit = {k: float(metrics[k]) for k in ("val_cf_r2", "val_cf_cosine") if metrics.get(k) is not None}
        if metrics.get("val_cf_items") is not None:
            cf_fit["val_cf_items"] = int(metrics["val_cf_items"])
        return dg.MaterializeResult(
            metadata={
                "test_map": metrics["test_map"],
                "val_map": metrics["val_map"],
                "best_epoch": metrics["best_epoch"],
                "labelled_train_items": metrics["labelled_train_items"],
                **cf_fit,
                "training_curve": markdown_table(curve),
                "path": str(run_dir),
            }
        )

    @dg.asset(partitions_def=datasets, group_name="evaluation", deps=[trained_model], kinds={"pandas"})
    def evaluation(
        context: dg.AssetExecutionContext, config: EvaluationConfig, wandb: WandbResource
    ) -> dg.MaterializeResult:
        """Results table, summary.json and plots over every run of the dataset: data/<dataset>/evaluation/."""
        evaluation_params = wandb.apply(params_with(project_params(), config))
        result = run_evaluation(evaluation_params, context.partition_key, repo_root())
        log_evaluation(evaluation_params, result, repo_root())  # a W&B run of job type `evaluation`; never raises
        metadata = {
            "results": dg.MetadataValue.md(result["paths"]["results_md"].read_text()),
            "map_vs_label_ratio": png_markdown(result["paths"]["map_plot"], "mAP vs label ratio"),
            "improvement": png_markdown(result["paths"]["improvement_plot"], "improvement over image_only"),
        }
        if result["headline"]:
            metadata["headline"] = headline_sentence(result["headline"])
            metadata |= {f"headline_{k}": v for k, v in result["headline"].items() if v is not None}
        probe = result["summary"].get("cf_label_probe") or {}
        metadata |= {f"cf_label_probe_{k}": probe[k] for k in ("probe_map", "popularity_map") if probe.get(k) is not None}
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(group_name="evaluation", deps=[evaluation], kinds={"pandas"})
    def paper_report(config: ReportConfig) -> dg.MaterializeResult:
        """The paper's tables and figures over every finished run of every dataset: data/paper_report/."""
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

    assets = [catalogue, splits, cf_embeddings, image_cache, trained_model, evaluation, paper_report]
    return assets, {"datasets": datasets, "runs": runs}
