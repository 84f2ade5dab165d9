"""The files the steps write under `data/<dataset>/` (folders: collab_iu/layout.py), named here only, with
their readers. "The test set" is defined here once: the test split's items that have a cached image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from collab_iu.layout import DatasetLayout
from collab_iu.steps import STEPS

REPORT = "report.json"  # every step folder's report
ITEMS, INTERACTIONS = "items.parquet", "interactions.parquet"  # prepared/ (and the canonical dataset format)
SPLITS = "splits.parquet"  # split/: item_id, split (train | val | test)
CF_VECTORS, CF_INDEX = "item_vectors.npy", "item_index.parquet"  # cf/: rows follow the index (item_id, n_interactions)
CACHE_IMAGES, CACHE_INDEX = "images.npy", "index.parquet"  # cache/: uint8 N x S x S x 3, and (item_id, row)
FEATURES = "features.npy"  # features/<key>/: float16 N x views x (the frozen blocks' output), rows as the cache's
# a run folder, runs/<run key>/
MODEL_JSON, METRICS_JSON, TRAIN_JSON = "model.json", "metrics.json", "train.json"
BEST, CHECKPOINT = "best.pt", "checkpoint.pt"
TEST_SCORES, TEST_ITEMS = "test_scores.npy", "test_items.parquet"


def read_report(folder: Path) -> dict:
    """A step folder's report.json; FileNotFoundError naming the command that writes it when it is missing."""
    path = folder / REPORT
    if not path.exists():
        names = (Path(folder).name, Path(folder).parent.name)  # a step folder, or one of its caches (features/<key>)
        writer = next((s.name for s in STEPS if s.folder in names), None)
        run = f": run `collab-iu {writer}` first" if writer else ""
        raise FileNotFoundError(f"{path} is missing{run}")
    return json.loads(path.read_text())


def load_prepared(layout: DatasetLayout) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The validated items (labels as lists) and interactions of a prepared dataset."""
    if not (layout.prepared / ITEMS).exists():
        raise FileNotFoundError(f"{layout.prepared} has no prepared dataset: run `collab-iu prepare` first")
    items = pd.read_parquet(layout.prepared / ITEMS)
    items["labels"] = [list(x) if x is not None else [] for x in items["labels"]]
    items["image"] = items["image"].astype(object).where(items["image"].notna(), None)
    interactions = pd.read_parquet(layout.prepared / INTERACTIONS)
    return items, interactions


def load_splits(layout: DatasetLayout) -> pd.DataFrame:
    path = layout.split / SPLITS
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `collab-iu split` first")
    return pd.read_parquet(path)


def splits_of(splits: pd.DataFrame, item_ids: pd.Series) -> np.ndarray:
    """The split of each of `item_ids`, in their order (None for an item the split does not name)."""
    return splits.set_index("item_id")["split"].reindex(item_ids).to_numpy()


def item_splits(layout: DatasetLayout, items: pd.DataFrame) -> np.ndarray:
    """The written split of each prepared item, in item order."""
    return splits_of(load_splits(layout), items["item_id"])


def test_set_mask(split: np.ndarray, cache_rows: np.ndarray) -> np.ndarray:
    """The test set: items of the test split with a cached image (`cache_rows` >= 0), as a boolean mask."""
    return (split == "test") & (cache_rows >= 0)


def load_cf_vectors(layout: DatasetLayout) -> tuple[np.ndarray, pd.DataFrame]:
    """The CF item vectors and their index (item_id, n_interactions), row for row."""
    return np.load(layout.cf / CF_VECTORS), pd.read_parquet(layout.cf / CF_INDEX)
