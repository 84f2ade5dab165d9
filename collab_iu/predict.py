"""Predict labels for new images with a trained run: pixels only, no interactions needed.

Each image is decoded exactly as the image cache does it (`try_load_square_rgb` at the run's
cache size), then resized and normalised by `eval_transform` as in validation and test,
so a file that is also in the cache gets the same scores as its cached copy.
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from collab_iu.artifacts import BEST, MODEL_JSON
from collab_iu.atomic import atomic_file
from collab_iu.image_io import DEFAULT_MAX_PIXELS, file_problem, try_load_square_rgb

if TYPE_CHECKING:  # torch is imported on use, so that `collab-iu --help` and the other subcommands stay fast
    import torch

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
CSV_COLUMNS = ["path", "rank", "label", "score"]


class ModelFolderError(FileNotFoundError):
    """The --model folder is not a trained run (no model.json / best.pt, or they do not load)."""


def check_run_dir(run_dir: str | Path) -> Path:
    """`run_dir` as a Path if it holds a trained run; ModelFolderError naming what is missing otherwise."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise ModelFolderError(f"{run_dir} is a file: --model takes the run folder that holds it ({run_dir.parent})")
    if not run_dir.is_dir():
        raise ModelFolderError(f"{run_dir}: no such run folder (expected data/<dataset>/runs/<run key>)")
    missing = [name for name in (MODEL_JSON, BEST) if not (run_dir / name).is_file()]
    if missing:
        raise ModelFolderError(f"{run_dir} is not a trained run folder: {' and '.join(missing)} missing")
    return run_dir


def load_predictor(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The run's model (best epoch, eval mode, on `device`) and its model.json; ModelFolderError if unusable."""
    from collab_iu.experiment import load_run_model

    run_dir = check_run_dir(run_dir)
    try:
        model, info = load_run_model(run_dir, device)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:  # bad JSON, wrong keys, mismatched weights
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        raise ModelFolderError(f"{run_dir}: cannot load the model ({MODEL_JSON} / {BEST}): {reason}") from None
    if model.cf_input_dim:
        raise ModelFolderError(
            f"{run_dir} classifies warm items from their CF vectors as well as their images; predict labels new "
            "images from pixels alone: choose a run of another method (image_only, with_cf)"
        )
    return model, info


def expand_paths(paths: list[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to predict (folders expanded recursively to their image files, sorted) and (path, reason) skips."""
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for path in map(Path, paths):
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            found = [p for p in candidates if p.is_file()]
            # a symlink that is no file (a loop, a missing target, a folder) is reported; plain folders are not
            links = [(p, file_problem(p) or "unreadable") for p in candidates if p.is_symlink() and not p.is_file()]
            skipped += links
            if not found and not links:
                skipped.append((path, "folder has no image files (" + " ".join(sorted(IMAGE_SUFFIXES)) + ")"))
        elif path.exists():
            found = [path]  # named explicitly: try it whatever its suffix
        else:
            skipped.append((path, file_problem(path) or "missing"))  # "missing", "symlink loop", "broken symlink"
            continue
        for file in found:
            if file not in seen:
                seen.add(file)
                files.append(file)
    return files, skipped


def _normalised(batch: torch.Tensor, info: dict) -> torch.Tensor:
    """eval_transform, with the run's own mean/std when model.json records others than ImageNet's."""
    import torch

    from collab_iu.augment import IMAGENET_MEAN, IMAGENET_STD, eval_transform

    x = eval_transform(batch, info["input_size"])
    mean, std = tuple(info.get("mean", IMAGENET_MEAN)), tuple(info.get("std", IMAGENET_STD))
    if mean != IMAGENET_MEAN or std != IMAGENET_STD:
        as_tensor = lambda v: torch.tensor(v, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)  # noqa: E731
        x = (x * as_tensor(IMAGENET_STD) + as_tensor(IMAGENET_MEAN) - as_tensor(mean)) / as_tensor(std)
    return x


def top_labels(scores: np.ndarray, vocabulary: list[str], top_k: int) -> list[tuple[str, float]]:
    """The `top_k` (label, score) pairs of one score vector, highest first (ties: vocabulary order)."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(vocabulary[i], float(scores[i])) for i in order]


def predict_images(
    run_dir: str | Path,
    paths: list[Path],
    top_k: int = 3,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    workers: int = 4,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Label probabilities of image files (folders expanded) with a trained run's best epoch.

    Returns ([{"path": Path, "labels": [(label, score), ...]}, ...] in input order, top_k per image,
    highest score first) and [(path, reason), ...] for the paths that could not be read; those are
    skipped and the rest are still predicted (an image declaring more than `max_pixels` pixels,
    prepare.max_image_pixels, is skipped undecoded). Raises ModelFolderError if `run_dir` is not a trained run.
    """
    import torch

    from collab_iu.train import resolve_device

    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = resolve_device(device) if isinstance(device, str) else device
    model, info = load_predictor(run_dir, device)
    vocabulary, size = info["vocabulary"], info["cache_size"]
    files, skipped = expand_paths(paths)
    predictions: list[dict] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, torch.no_grad():
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            decoded = list(pool.map(lambda p: try_load_square_rgb(p, size, max_pixels), chunk))
            kept, pixels = [], []
            for path, (image, problem) in zip(chunk, decoded):
                if problem is not None:
                    skipped.append((path, problem))
                else:
                    kept.append(path)
                    pixels.append(image)
            if not kept:
                continue
            batch = torch.from_numpy(np.stack(pixels)).to(device)
            scores = torch.sigmoid(model(_normalised(batch, info))["label_logits"].float()).cpu().numpy()
            for path, row in zip(kept, scores):
                predictions.append({"path": path, "labels": top_labels(row, vocabulary, top_k)})
    return predictions, skipped


def write_predictions_csv(predictions: list[dict], dest: str | Path) -> None:
    """One row per (image, rank): path, rank (1 = highest score), label, score; written atomically."""
    with atomic_file(dest) as tmp:
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            for p in predictions:
                for rank, (label, score) in enumerate(p["labels"], start=1):
                    writer.writerow([str(p["path"]), rank, label, repr(score)])


def format_prediction(prediction: dict) -> str:
    """`path<TAB>label1 0.93, label2 0.41, ...`"""
    return f"{prediction['path']}\t" + ", ".join(f"{label} {score:.2f}" for label, score in prediction["labels"])
