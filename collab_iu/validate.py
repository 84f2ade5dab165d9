"""Validate a dataset folder: fatal problems stop with one message; tolerable ones are filtered and counted."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from collab_iu.dataset import (
    INTERACTIONS,
    ITEMS,
    DatasetError,
    TableProblem,
    label_vocabulary,
    read_raw_tables,
)
from collab_iu.image_io import decode_problem, file_problem, resolve_inside
from collab_iu.params import PrepareParams


@dataclass
class ValidatedDataset:
    """A dataset that passed validation, with what was filtered and why."""

    folder: Path
    items: pd.DataFrame  # item_id, image (relative path or None), labels (list[str])
    interactions: pd.DataFrame  # user_id, item_id, weight[, timestamp]
    report: dict = field(default_factory=dict)


def _rows(mask) -> list[int]:
    return np.flatnonzero(np.asarray(mask)).tolist()


_CONTROL = r"[\x00-\x1f\x7f-\x9f\u2028\u2029]"  # control characters (tab, newline, NUL, ...) and line separators


def _check_ids(ids: pd.Series, column: str, file: str) -> list[TableProblem]:
    """Null, empty, whitespace-only and control-character ids, each with their rows."""
    problems = []
    distinct = pd.Series(pd.unique(ids.dropna()), dtype="string")  # each id once: interactions repeat them
    bad_ids = {
        "is empty or only whitespace": distinct[distinct.str.strip().eq("")],
        "contains a control character (tab, newline, ...)": distinct[distinct.str.contains(_CONTROL, regex=True)],
    }
    masks = {"is null": ids.isna().to_numpy()}
    masks |= {what: ids.isin(set(found)).to_numpy() for what, found in bad_ids.items() if len(found)}
    for what, mask in masks.items():
        rows = _rows(mask)
        if rows:
            problems.append(TableProblem(file, f"{column} {what}", rows=rows))
    return problems


def _check_items(items: pd.DataFrame, file: str) -> list[TableProblem]:
    problems = _check_ids(items["item_id"], "item_id", file)
    dup = items["item_id"].notna() & items["item_id"].duplicated(keep=False)
    for item_id, rows in items[dup].groupby("item_id").groups.items():
        problems.append(TableProblem(file, f"duplicate item_id {item_id!r}", rows=sorted(rows)))
    bad_labels = [i for i, labels in enumerate(items["labels"]) if any(not lab for lab in labels)]
    if bad_labels:
        problems.append(TableProblem(file, "empty or null label name in labels", rows=bad_labels))
    return problems


def _check_interactions(inter: pd.DataFrame, file: str) -> list[TableProblem]:
    problems = []
    rows = _rows(inter["user_id"].isna())
    if rows:
        problems.append(TableProblem(file, "user_id is null", rows=rows))
    problems += _check_ids(inter["item_id"], "item_id", file)
    weight = inter["weight"].to_numpy(dtype=np.float64)
    checks = {  # weights must be finite, >= 0 and fit the float32 they are stored as
        "weight is NaN": np.isnan(weight),
        "weight is infinite": np.isinf(weight),
        "weight is negative": np.isfinite(weight) & (weight < 0),
        f"weight is too large (above {np.finfo(np.float32).max:.3g})": np.isfinite(weight)
        & (weight > np.finfo(np.float32).max),
    }
    for what, mask in checks.items():
        if mask.any():
            problems.append(TableProblem(file, what, rows=_rows(mask)))
    if not len(inter):
        problems.append(TableProblem(file, "no interactions"))
    return problems


def _image_problems(folder: Path, items: pd.DataFrame, params: PrepareParams) -> dict[int, str]:
    """Row -> reason for every item whose image is unusable (escaping paths are reported apart).

    With params.check_images, every image is decoded except those whose header declares more than
    params.max_image_pixels pixels ("too large: WxH ..."); without, only the files' existence is checked."""
    paths: dict[int, Path] = {}
    reasons: dict[int, str] = {}
    for row, rel in enumerate(items["image"]):
        if rel is None:
            continue
        path = resolve_inside(folder, rel)
        if path is None:
            reasons[row] = "escapes"
        else:
            paths[row] = path
    check = partial(decode_problem, max_pixels=params.max_image_pixels) if params.check_images else file_problem
    with ThreadPoolExecutor(max_workers=params.workers) as pool:
        for row, reason in zip(paths, pool.map(check, paths.values())):
            if reason is not None:
                reasons[row] = reason
    return reasons


def _label_problems(
    vocabulary: list[str], counts: Counter, rare: dict[str, int], file: str, params: PrepareParams, min_items: int
) -> list[TableProblem]:
    """A non-empty vocabulary, every label splittable; `counts` are over the items that can be evaluated."""
    needed = 2 * min_items
    if not counts:
        if params.cf_only:
            return [TableProblem(file, "empty label vocabulary: no item has a label")]
        message = "empty label vocabulary: no item with a usable image has a label"
        if vocabulary:  # labelled items exist, without images: the CF diagnosis still works
            message += (
                "; without images, prepare.cf_only: true prepares the dataset for the CF diagnosis only "
                "(do the interactions carry label information?)"
            )
        return [TableProblem(file, message)]
    if params.drop_rare_labels and len(rare) == len(vocabulary):
        usable = "labelled items" if params.cf_only else "labelled items with usable images"
        return [TableProblem(file, f"empty label vocabulary: no label has {needed} {usable}")]
    if rare and not params.drop_rare_labels:
        listed = ", ".join(f"{k!r} ({v})" for k, v in sorted(rare.items(), key=lambda kv: kv[1]))
        which = "labelled items" if params.cf_only else "labelled items with images"
        return [
            TableProblem(
                file,
                f"{len(rare)} label(s) have fewer than {needed} {which}, too few to put "
                f"split.min_items_per_label={min_items} in both train and test: {listed} "
                "(set prepare.drop_rare_labels to drop them)",
            )
        ]
    return []


def validate_dataset(folder: str | Path, params: PrepareParams, min_items_per_label: int) -> ValidatedDataset:
    """Check a dataset folder and return its cleaned tables, or raise DatasetError listing every fatal problem.

    A label needs `2 * min_items_per_label` labelled items with images (that many in train and in test).
    With `params.cf_only` (the CF diagnosis of a dataset without enough images) images are optional:
    labels are counted over every labelled item and missing images are never fatal.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(folder, [TableProblem(str(folder), "no such dataset folder")])
    items, inter, problems, files = read_raw_tables(folder)
    warned = [p for p in problems if not p.fatal]  # unknown columns: ignored, named in the report
    problems = [p for p in problems if p.fatal]
    if items is None or inter is None:
        raise DatasetError(folder, problems)
    items_file, inter_file = files[ITEMS], files[INTERACTIONS]
    problems += _check_items(items, items_file)
    problems += _check_interactions(inter, inter_file)
    reasons = _image_problems(folder, items, params)
    problems += _image_fatal(items, reasons, items_file, params)
    bad = {r: why for r, why in reasons.items() if why != "escapes"}
    unknown = inter["item_id"].notna() & ~inter["item_id"].isin(set(items["item_id"].dropna()))
    if unknown.any() and not params.drop_unknown_interactions:
        names = ", ".join(repr(x) for x in inter.loc[unknown, "item_id"].unique()[:5])
        problems.append(
            TableProblem(
                inter_file,
                f"item_id not in {items_file} ({names}...; set prepare.drop_unknown_interactions to drop them)",
                rows=_rows(unknown),
            )
        )
    # labels: a non-empty vocabulary, every label splittable (counted over items whose image is usable,
    # or over every item when the dataset is prepared for the CF diagnosis only)
    usable = np.ones(len(items), dtype=bool)
    if not params.cf_only:
        usable = items["image"].notna().to_numpy() & ~np.isin(np.arange(len(items)), list(reasons))
    counts = Counter(label for labels in items.loc[usable, "labels"] for label in labels)
    labels, needed = label_vocabulary(items["labels"]), 2 * min_items_per_label
    rare = {label: counts.get(label, 0) for label in labels if counts.get(label, 0) < needed}
    problems += _label_problems(labels, counts, rare, items_file, params, min_items_per_label)
    if problems:
        raise DatasetError(folder, problems)
    report: dict = {"source": str(folder), "files": files, "filtered": _ignored_columns(warned)}
    items, inter = _filter(items, inter, bad, unknown, rare, needed, report["filtered"])
    report |= _summary(items, inter, counts, params.cf_only)
    return ValidatedDataset(folder=folder, items=items, interactions=inter, report=report)


def _image_fatal(items: pd.DataFrame, reasons: dict, items_file: str, params: PrepareParams) -> list[TableProblem]:
    """Escaping image paths; missing, undecodable or too large images beyond prepare.max_bad_image_fraction
    (not cf_only), the first few named with their file and reason."""
    problems = []
    escaping = sorted(r for r, why in reasons.items() if why == "escapes")
    if escaping:
        problems.append(TableProblem(items_file, "image path escapes the dataset folder", rows=escaping))
    bad = [r for r, why in reasons.items() if why != "escapes"]
    with_image = int(items["image"].notna().sum())
    if not params.cf_only and with_image and len(bad) / with_image > params.max_bad_image_fraction:
        problems.append(
            TableProblem(
                items_file,
                f"{len(bad)} of {with_image} images are missing, undecodable or too large "
                f"(more than prepare.max_bad_image_fraction={params.max_bad_image_fraction}): "
                + "; ".join(f"{items['image'].iat[r]}: {reasons[r]}" for r in sorted(bad)[:3])
                + ("; ..." if len(bad) > 3 else ""),
                rows=sorted(bad),
            )
        )
    return problems


def _ignored_columns(warned: list[TableProblem]) -> dict:
    """The report's entry for columns outside the canonical format (ignored), empty without any."""
    columns = {p.file: p.columns for p in warned if p.columns}
    if not columns:
        return {}
    named = "; ".join(f"{file}: {', '.join(cols)}" for file, cols in columns.items())
    return {
        "unknown_columns": {
            "count": sum(len(cols) for cols in columns.values()),
            "columns": columns,
            "effect": f"ignored, not part of the canonical format ({named})",
        }
    }


def _filter(
    items: pd.DataFrame, inter: pd.DataFrame, bad: dict, unknown: pd.Series, rare: dict, needed: int, filtered: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the tolerable problems' fixes, each counted and named in `filtered`."""
    if bad:
        filtered["bad_images"] = {
            "count": len(bad),
            "items": {items["item_id"].iat[r]: why for r, why in sorted(bad.items())},
            "files": {items["item_id"].iat[r]: items["image"].iat[r] for r in sorted(bad)},
            "effect": "image set to null: the item still counts for CF, not for the classifier",
        }
        items.loc[sorted(bad), "image"] = None
    if unknown.any():
        filtered["unknown_item_interactions"] = {"count": int(unknown.sum())}
        inter = inter[~unknown].reset_index(drop=True)
    keys = ["user_id", "item_id"]  # duplicated (user, item) pairs are merged, their weights summed
    n_before = len(inter)
    if inter.duplicated(keys).any():
        agg = {"weight": "sum"} | ({"timestamp": "max"} if "timestamp" in inter else {})
        inter = inter.groupby(keys, as_index=False, sort=False).agg(agg)
        filtered["merged_duplicate_interactions"] = {"count": n_before - len(inter)}
    if rare:
        items["labels"] = [[lab for lab in labels if lab not in rare] for labels in items["labels"]]
        filtered["rare_labels"] = {"count": len(rare), "labels": rare, "needed": needed}
    inter["weight"] = inter["weight"].astype(np.float32)
    return items, inter


def _summary(items: pd.DataFrame, inter: pd.DataFrame, counts: Counter, cf_only: bool) -> dict:
    vocabulary = label_vocabulary(items["labels"])
    n_interactions = inter.groupby("item_id").size()
    return {
        "cf_only": cf_only,
        "items": len(items),
        "items_with_image": int(items["image"].notna().sum()),
        "labelled_items": int(sum(bool(x) for x in items["labels"])),
        "items_without_interactions": int((~items["item_id"].isin(n_interactions.index)).sum()),
        "users": int(inter["user_id"].nunique()),
        "interactions": len(inter),
        "labels": len(vocabulary),
        "label_counts": {lab: int(counts.get(lab, 0)) for lab in vocabulary},
        "mean_labels_per_labelled_item": float(np.mean([len(x) for x in items["labels"] if x])),
    }
