"""The data stages: prepare, split, cf, cache. One implementation that the CLI, Dagster and DVC all call.

Each stage reads its inputs from the documented layout (`collab_iu/layout.py`), writes its
output folder atomically, and returns its report (also saved as `report.json`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from collab_iu.artifacts import (
    CF_INDEX,
    CF_VECTORS,
    INTERACTIONS,
    ITEMS,
    REPORT,
    SPLITS,
    load_prepared,
    load_splits,
    read_report,
)
from collab_iu.atomic import atomic_dir, write_json
from collab_iu.cf import build_cf
from collab_iu.dataset import CFOnlyDatasetError
from collab_iu.features import (
    NOT_USED,
    build_feature_cache,
    expected_report,
    feature_dir,
    feature_spec,
    matching_report,
)
from collab_iu.image_cache import build_image_cache, load_image_cache
from collab_iu.layout import DatasetLayout, dataset_layout
from collab_iu.locks import locked_outputs
from collab_iu.params import IMPORTED_SOURCES, Params
from collab_iu.splits import make_split, split_summary
from collab_iu.steps import BY_NAME
from collab_iu.synthetic import generate_synthetic
from collab_iu.validate import validate_dataset


def _under_root(path: str, repo_root: Path | None) -> Path:
    folder = Path(path).expanduser()
    return folder if folder.is_absolute() or repo_root is None else repo_root / folder


def source_folder(params: Params, layout: DatasetLayout, repo_root: Path | None = None) -> Path:
    """The folder holding the dataset in the canonical format (images are relative to it).

    Generated and imported datasets live in `data/<name>/raw/`; a `folder` dataset is read in place.
    """
    spec = params.data.datasets[layout.name]
    if spec.source == "folder":
        return _under_root(spec.path, repo_root)
    return layout.raw


@locked_outputs("raw")
def import_dataset(
    params: Params, dataset: str | None = None, repo_root: Path | None = None, force: bool = False
) -> dict:
    """Import a dataset of source pinterest/movielens/amazon from its raw files into `data/<name>/raw/`.

    Reuses the earlier import when the raw files and options are unchanged (unless `force`).
    """
    from collab_iu.importers import run_import

    layout = dataset_layout(params, dataset, repo_root)
    spec = params.data.datasets[layout.name]
    if spec.source not in IMPORTED_SOURCES:
        raise ValueError(f"dataset {layout.name!r} has source {spec.source!r}; importers exist for {IMPORTED_SOURCES}")
    images = _under_root(spec.images, repo_root) if spec.images else None
    source = _under_root(spec.path, repo_root)
    return run_import(spec.source, source, layout.raw, params.importers, images=images, force=force)


def _shown(path: Path) -> Path:
    """`path` relative to the working directory when it lies below it (messages), else as is."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def is_cf_only(layout: DatasetLayout) -> bool:
    """Whether the prepared dataset is for the CF diagnosis only (prepared with prepare.cf_only: true)."""
    path = layout.prepared / REPORT
    return path.exists() and bool(read_report(layout.prepared).get("cf_only", False))


def ensure_trainable(layout: DatasetLayout) -> None:
    """Raise CFOnlyDatasetError, naming the dataset and the option, when it was prepared for the CF diagnosis only.

    The image cache and every training run call this first (CLI, Dagster and DVC alike).
    """
    if not is_cf_only(layout):
        return
    name = layout.name
    raise CFOnlyDatasetError(
        f"dataset {name!r} was prepared for the CF diagnosis only (prepare.cf_only: true), and training needs "
        f"images: the image cache and training refuse it. Its CF diagnosis (label probe vs popularity) is in "
        f"{_shown(layout.cf / REPORT)} (`collab-iu cf --dataset {name}`). To train, give its items images, set "
        f"prepare.cf_only: false and run `collab-iu prepare --dataset {name}` again."
    )


def _fingerprint(folder: Path, items: pd.DataFrame, image_root: Path) -> str:
    digest = hashlib.sha256()
    for name in (ITEMS, INTERACTIONS):
        digest.update((folder / name).read_bytes())
    for rel in items["image"].dropna():
        digest.update(f"{rel}:{(image_root / rel).stat().st_size}".encode())
    return digest.hexdigest()[:16]


def _portable(path: Path, root: Path) -> str:
    """`path` relative to the data root when it lies inside (the outputs do not name where the project lives)."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


@locked_outputs("prepared", "raw")
def run_prepare(params: Params, dataset: str | None = None, repo_root: Path | None = None) -> dict:
    """Generate (synthetic), import (pinterest, movielens, amazon) or locate the dataset, validate it,
    write `prepared/`. Nothing is written on failure."""
    layout = dataset_layout(params, dataset, repo_root)
    params = params.for_dataset(layout.name)
    report: dict = {"dataset": layout.name}
    source = params.data.datasets[layout.name].source
    if source == "synthetic":
        report["generated"] = generate_synthetic(params.synthetic, layout.raw)
    elif source in IMPORTED_SOURCES:
        report["imported"] = import_dataset(params, layout.name, repo_root)
        kept = report["imported"]["kept"]
        if not kept["images"] and kept.get("image_urls") and not params.prepare.cf_only:
            raise FileNotFoundError(
                f"dataset {layout.name!r} has no images yet, only {kept['image_urls']} image URLs: "
                f"run `collab-iu fetch-images --dataset {layout.name}` first"
            )
    folder = source_folder(params, layout, repo_root)
    validated = validate_dataset(folder, params.prepare, params.split.min_items_per_label)
    with atomic_dir(layout.prepared) as tmp:
        validated.items.to_parquet(tmp / ITEMS, index=False)
        validated.interactions.to_parquet(tmp / INTERACTIONS, index=False)
        report |= validated.report | {"source": _portable(folder, layout.root)}
        report["fingerprint"] = _fingerprint(tmp, validated.items, folder)
        write_json(report, tmp / REPORT)
    return report


@locked_outputs("split")
def run_split(params: Params, dataset: str | None = None, repo_root: Path | None = None) -> dict:
    """Split the prepared items into train/val/test; write `split/splits.parquet`."""
    layout = dataset_layout(params, dataset, repo_root)
    params = params.for_dataset(layout.name)
    items, _ = load_prepared(layout)
    require_images = not is_cf_only(layout)  # a CF-only dataset: every labelled item can be evaluated
    splits = make_split(items, params.split, require_images)
    report = {"dataset": layout.name, "cf_only": not require_images, **split_summary(items, splits, require_images)}
    with atomic_dir(layout.split) as tmp:
        splits.to_parquet(tmp / SPLITS, index=False)
        write_json(report, tmp / REPORT)
    return report


@locked_outputs("cf")
def run_cf(params: Params, dataset: str | None = None, repo_root: Path | None = None) -> dict:
    """Fit CF item vectors; write `cf/item_vectors.npy`, `cf/item_index.parquet` and the quality report."""
    layout = dataset_layout(params, dataset, repo_root)
    params = params.for_dataset(layout.name)
    items, interactions = load_prepared(layout)
    result = build_cf(items, interactions, load_splits(layout), params.cf)
    report = {"dataset": layout.name, **result.report}
    with atomic_dir(layout.cf) as tmp:
        np.save(tmp / CF_VECTORS, result.vectors)
        result.index.to_parquet(tmp / CF_INDEX, index=False)
        write_json(report, tmp / REPORT)
    return report


@locked_outputs("cache")
def run_cache(params: Params, dataset: str | None = None, repo_root: Path | None = None) -> dict:
    """Decode and resize every image once into `cache/images.npy` with its item-id index.

    Raises CFOnlyDatasetError for a dataset prepared for the CF diagnosis only.
    """
    layout = dataset_layout(params, dataset, repo_root)
    ensure_trainable(layout)
    params = params.for_dataset(layout.name)
    items, _ = load_prepared(layout)
    folder = source_folder(params, layout, repo_root)
    report = build_image_cache(
        items,
        folder,
        params.cache.image_size,
        params.cache.workers,
        layout.cache,
        params.prepare.max_image_pixels,
        params.prepare.max_bad_image_fraction,  # checked again: images may have changed since prepare
    )
    return {"dataset": layout.name, **report}


@locked_outputs("features")
def run_features(params: Params, dataset: str | None = None, repo_root: Path | None = None) -> dict:
    """Run the frozen blocks of the dataset's backbone once over its image cache into `features/<key>/`, for runs
    that train from the feature cache (train.finetune: tail or heads); reuse a cache built for the same spec and
    inputs. Runs that train from pixels need none: nothing is written."""
    layout = dataset_layout(params, dataset, repo_root)
    ensure_trainable(layout)
    params = params.for_dataset(layout.name)
    spec = feature_spec(params)
    if spec is None:
        return {"dataset": layout.name, "skipped": NOT_USED}
    read_report(layout.cache)  # missing: names `collab-iu cache`
    identity = expected_report(layout, spec)
    folder = feature_dir(layout, spec)
    found = matching_report(folder, identity)
    if found is not None:
        return {"dataset": layout.name, **found, "reused": True}
    cache = load_image_cache(layout.cache)
    report = build_feature_cache(cache.images, cache.index, spec, folder, identity)
    return {"dataset": layout.name, **report, "reused": False}


def output_folder(name: str, layout: DatasetLayout, params: Params) -> Path | None:
    """The folder data step `name` writes for the dataset (its report.json lies there): the features step's is
    the cache of the runs' spec, None when they train from pixels."""
    if name != "features":
        return layout.base / BY_NAME[name].folder
    spec = feature_spec(params.for_dataset(layout.name))
    return None if spec is None else feature_dir(layout, spec)


DATA_STAGES = {"prepare": run_prepare, "split": run_split, "cf": run_cf, "cache": run_cache, "features": run_features}
