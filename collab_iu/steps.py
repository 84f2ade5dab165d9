"""The registry of pipeline steps: one entry per step, from which the Dagster assets and their configs,
dvc.yaml and the CLI's step commands are generated (orchestration/).

A step's `name` is its CLI command and DVC stage (`<name>-<dataset>`); `asset` is its Dagster asset;
`folder` is what it writes under `data/<dataset>/` (collab_iu/layout.py); `params` are exactly the
params.yaml keys it reads (a group, or group.key); `code` the core modules it runs (DVC dependencies).
Adding a step means adding an entry here and its asset in orchestration/defs/assets.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Partitioning = Literal["dataset", "dataset_run", "none"]


@dataclass(frozen=True)
class Step:
    name: str
    asset: str
    folder: str
    partitioning: Partitioning
    params: tuple[str, ...]
    code: tuple[str, ...]
    summary: str  # one line: the CLI help and the asset's description

    @property
    def param_groups(self) -> tuple[str, ...]:
        """The params groups the step reads (each at least in part), in order."""
        return tuple(dict.fromkeys(key.split(".")[0] for key in self.params))


_STATS = ("collab_iu/evaluate.py", "collab_iu/metrics.py", "collab_iu/stats.py")
EVALUATION_PARAMS = (
    "experiment.family",
    "experiment.methods",
    "experiment.label_ratios",
    "experiment.cf_weights",
    "experiment.families",
    "experiment.seeds",
    "experiment.significance_resamples",
    "experiment.bootstrap_resamples",
    "experiment.bootstrap_fraction",
    "experiment.bootstrap_seed",
)

STEPS: tuple[Step, ...] = (
    Step(
        "prepare",
        "catalogue",
        "prepared",
        "dataset",
        ("synthetic", "prepare", "importers", "split.min_items_per_label"),
        (
            "collab_iu/synthetic.py",
            "collab_iu/validate.py",
            "collab_iu/dataset.py",
            "collab_iu/image_io.py",
            "collab_iu/importers",
        ),
        "generate (synthetic), import or read the dataset, validate it: data/<dataset>/prepared/",
    ),
    Step(
        "split",
        "splits",
        "split",
        "dataset",
        ("split",),
        ("collab_iu/splits.py",),
        "item-level train/val/test split, stratified by label: data/<dataset>/split/",
    ),
    Step(
        "cf",
        "cf_embeddings",
        "cf",
        "dataset",
        ("cf",),
        ("collab_iu/cf.py",),
        "CF item vectors (implicit ALS or BPR) and their quality against popularity: data/<dataset>/cf/",
    ),
    Step(
        "cache",
        "image_cache",
        "cache",
        "dataset",
        ("cache", "prepare.max_image_pixels", "prepare.max_bad_image_fraction"),
        ("collab_iu/image_cache.py", "collab_iu/image_io.py"),
        "every image decoded and resized once into a memory-mapped array: data/<dataset>/cache/",
    ),
    Step(
        "features",
        "feature_cache",
        "features",
        "dataset",
        (
            "cache.image_size",
            "augment.output_size",
            "augment.flip",
            "train.backbone",
            "train.weights",
            "train.finetune",
            "train.tail_blocks",
        ),
        (
            "collab_iu/features.py",
            "collab_iu/backbone_blocks.py",
            "collab_iu/backbones.py",
            "collab_iu/models.py",
            "collab_iu/efficientnet_lite.py",
            "collab_iu/augment.py",
        ),
        "a pretrained backbone's frozen blocks run once per image (finetune tail or heads): data/<dataset>/features/",
    ),
    Step(
        "train",
        "trained_model",
        "runs",
        "dataset_run",
        ("train", "augment", "experiment.pretrain_epochs"),
        (
            "collab_iu/experiment.py",
            "collab_iu/train.py",
            "collab_iu/models.py",
            "collab_iu/losses.py",
            "collab_iu/augment.py",
            "collab_iu/metrics.py",
            "collab_iu/splits.py",
            "collab_iu/grid.py",
            "collab_iu/loss_based.py",
            "collab_iu/positives.py",
            "collab_iu/cf_fit.py",
            "collab_iu/observer.py",
            "collab_iu/features.py",
            "collab_iu/backbone_blocks.py",
            "collab_iu/backbones.py",
            "collab_iu/efficientnet_lite.py",
            "collab_iu/batches.py",
        ),
        "one run of the grid (method, label ratio, cf weight, seed): data/<dataset>/runs/<run key>/",
    ),
    Step(
        "evaluate",
        "evaluation",
        "evaluation",
        "dataset",
        EVALUATION_PARAMS,
        _STATS,
        "results table, statistics and plots over every run of the grid: data/<dataset>/evaluation/",
    ),
    Step(
        "report",
        "paper_report",
        "paper_report",
        "none",
        (
            "data.datasets",
            "presets",
            "experiment.bootstrap_resamples",
            "experiment.bootstrap_fraction",
            "experiment.bootstrap_seed",
            "experiment.significance_resamples",
        ),
        ("collab_iu/paper_report.py", *_STATS),
        "the paper's tables and figures over every finished run of every dataset: data/paper_report/",
    ),
)

BY_NAME = {step.name: step for step in STEPS}
BY_ASSET = {step.asset: step for step in STEPS}
DATA_STEPS = tuple(s for s in STEPS if s.name in ("prepare", "split", "cf", "cache", "features"))
CF_DIAGNOSIS_STEPS = tuple(
    s for s in DATA_STEPS if s.name not in ("cache", "features")
)  # a dataset prepared with prepare.cf_only


def step(name_or_asset: str) -> Step:
    """The step named `name_or_asset` (its CLI/DVC name or its Dagster asset); KeyError listing them otherwise."""
    found = BY_NAME.get(name_or_asset) or BY_ASSET.get(name_or_asset)
    if found is None:
        names = ", ".join(f"{s.name} ({s.asset})" for s in STEPS)
        raise KeyError(f"unknown step {name_or_asset!r}; steps (assets): {names}")
    return found
