"""The W&B artifacts of the pipeline, described without wandb (`ArtifactSpec`; orchestration/tracking.py logs
them): the dataset, CF vectors and image cache a run reads, and the model it writes. Lineage and why the
inputs are references: orchestration/tracking.py's docstring."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from collab_iu.artifacts import BEST, CACHE_IMAGES, CACHE_INDEX, METRICS_JSON, MODEL_JSON, REPORT, read_report
from collab_iu.grid import uses_cf
from collab_iu.layout import DatasetLayout
from collab_iu.methods import METHODS


@dataclass(frozen=True)
class ArtifactSpec:
    """A W&B artifact described without wandb: `files` (path, name in the artifact) are copied into it and
    uploaded; `references` are `file://` references with checksums (their md5, size and path only)."""

    name: str
    type: str
    metadata: dict = field(default_factory=dict)
    files: tuple[tuple[Path, str], ...] = ()
    references: tuple[tuple[Path, str], ...] = ()


def artifact_name(*parts: str) -> str:
    """A W&B artifact name from parts (characters W&B does not allow become `-`)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", "-".join(parts))


def _files(folder: Path, prefix: str) -> list[tuple[Path, str]]:
    return [(p, f"{prefix}/{p.name}") for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]


def dataset_artifact(layout: DatasetLayout) -> ArtifactSpec:
    """`dataset-<dataset>`: the prepared dataset and its split, as checksummed references."""
    report = read_report(layout.prepared)
    keys = ("fingerprint", "items", "items_with_image", "labelled_items", "users", "interactions", "labels")
    split = read_report(layout.split).get("items", {})
    return ArtifactSpec(
        artifact_name("dataset", layout.name),
        "dataset",
        {"dataset": layout.name, **{k: report[k] for k in keys if k in report}, "split": split},
        references=tuple(_files(layout.prepared, "prepared") + _files(layout.split, "split")),
    )


def cf_vectors_artifact(layout: DatasetLayout) -> ArtifactSpec:
    """`cf_vectors-<dataset>`: the CF item vectors, their index and report, as checksummed references."""
    report = read_report(layout.cf)
    keys = ("algorithm", "dim", "cold_start", "items", "items_with_vector", "users", "interactions")
    return ArtifactSpec(
        artifact_name("cf_vectors", layout.name),
        "cf_vectors",
        {"dataset": layout.name, **{k: report[k] for k in keys if k in report}},
        references=tuple(_files(layout.cf, "cf")),
    )


def image_cache_artifact(layout: DatasetLayout) -> ArtifactSpec:
    """`image_cache-<dataset>`: the cache's index and report as checksummed references; the image array is left
    out (too large to checksum for every run): its path and size are in the metadata."""
    report = read_report(layout.cache)
    images = layout.cache / CACHE_IMAGES
    keys = ("images", "image_size", "items_without_image")
    metadata = {"dataset": layout.name, **{k: report[k] for k in keys if k in report}}
    metadata |= {"images_file": str(images), "images_bytes": images.stat().st_size if images.exists() else None}
    refs = ((layout.cache / CACHE_INDEX, f"cache/{CACHE_INDEX}"), (layout.cache / REPORT, f"cache/{REPORT}"))
    return ArtifactSpec(artifact_name("image_cache", layout.name), "image_cache", metadata, references=refs)


def training_inputs(layout: DatasetLayout, method: str, cf_weight: float) -> list[ArtifactSpec]:
    """The artifacts a train run reads: the CF vectors only when it learns from them (a method with a cf weight
    above 0: image_only and weight-0 runs do not read them) or reads them as an input (warm_image_cf)."""
    reads_cf = (uses_cf(method) and cf_weight > 0) or METHODS[method].cf_input
    specs = [dataset_artifact, image_cache_artifact] + ([cf_vectors_artifact] if reads_cf else [])
    return [spec(layout) for spec in specs]


MODEL_METADATA = ("dataset", "run_key", "method", "label_ratio", "cf_weight", "seed", "test_map", "val_map")


def model_artifact(run_dir: Path, metrics: dict, config: dict) -> ArtifactSpec:
    """`model-<dataset>-<run key>` (type `model`): best.pt, model.json and metrics.json, copied."""
    values = config | metrics
    metadata = {k: values.get(k) for k in MODEL_METADATA} | {
        "best_epoch": metrics.get("best_epoch"),
        "config_hash": config.get("config_hash"),
    }
    files = tuple((run_dir / name, name) for name in (BEST, MODEL_JSON, METRICS_JSON))
    return ArtifactSpec(artifact_name("model", values["dataset"], values["run_key"]), "model", metadata, files=files)
