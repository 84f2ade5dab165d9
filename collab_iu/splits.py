"""Item-level train/validation/test splits and the label-ratio mask.

The split stratifies by label (iterative stratification for multi-label data) and is
re-drawn until every label has `min_items_per_label` items in train and in test.
Only labelled items with an image can be evaluated, so only they go to validation and
test; every other item (unlabelled, or without an image) is a training item that the
CF loss or the CF fit still uses. A dataset prepared for the CF diagnosis only
(prepare.cf_only) is split with `require_images=False`: every labelled item can be evaluated
(by the CF label probe).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from collab_iu.dataset import label_matrix, label_vocabulary
from collab_iu.errors import UserError
from collab_iu.params import SplitParams

SPLITS = ("train", "val", "test")


class SplitError(UserError, ValueError):
    """No split satisfies the constraints; the message names the labels."""


def _stratified_assign(y: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Iterative stratification (Sechidis et al., 2011): rarest labels are placed first.

    y: items x labels (0/1). Returns the split index (0..len(fractions)-1) of every item.
    """
    n, n_labels = y.shape
    assigned = np.full(n, -1)
    want_items = fractions * n
    want_label = fractions[:, None] * y.sum(0)[None, :]  # splits x labels
    remaining = y.astype(bool).copy()
    for _ in range(n_labels):
        counts = remaining[assigned < 0].sum(0)
        if not counts.any():
            break
        label = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        members = np.flatnonzero((assigned < 0) & remaining[:, label])
        for i in rng.permutation(members):
            need = want_label[:, label]
            best = np.flatnonzero(need == need.max())
            if len(best) > 1:  # tie: the split that wants the most items overall, then random
                best = best[want_items[best] == want_items[best].max()]
            k = int(rng.choice(best))
            assigned[i] = k
            want_label[k] -= y[i]
            want_items[k] -= 1
    rest = np.flatnonzero(assigned < 0)
    for i in rng.permutation(rest):
        k = int(np.argmax(want_items))
        assigned[i] = k
        want_items[k] -= 1
    return assigned


def evaluable_items(items: pd.DataFrame, require_images: bool = True) -> np.ndarray:
    """Items that can go to validation and test: labelled, with an image unless `require_images` is False."""
    labelled = np.array([bool(x) for x in items["labels"]], dtype=bool)
    return (labelled & items["image"].notna().to_numpy()) if require_images else labelled


def make_split(items: pd.DataFrame, params: SplitParams, require_images: bool = True) -> pd.DataFrame:
    """Assign every item to train/val/test; returns DataFrame(item_id, split).

    Stratifies the labelled items with images (every labelled item when `require_images` is False).
    Raises SplitError, naming the labels, when no draw gives every label
    `params.min_items_per_label` items in both train and test.
    """
    evaluable = evaluable_items(items, require_images)
    vocabulary = label_vocabulary(items.loc[evaluable, "labels"])
    y = label_matrix(items.loc[evaluable, "labels"], vocabulary)
    totals = y.sum(0)
    need = params.min_items_per_label
    impossible = [f"{vocabulary[j]!r} ({int(totals[j])} items)" for j in np.flatnonzero(totals < 2 * need)]
    if impossible:
        which = "labelled items with images" if require_images else "labelled items"
        raise SplitError(
            f"labels with fewer than {2 * need} {which} cannot have "
            f"split.min_items_per_label={need} in both train and test: {', '.join(impossible)}"
        )
    fractions = np.array([params.train, params.val, params.test])
    rng = np.random.default_rng(params.seed)
    short: list[str] = []
    for _ in range(params.max_redraws):
        assigned = _stratified_assign(y, fractions, rng)
        train_counts, test_counts = y[assigned == 0].sum(0), y[assigned == 2].sum(0)
        bad = np.flatnonzero((train_counts < need) | (test_counts < need))
        if not len(bad):
            break
        short = [f"{vocabulary[j]!r} (train {int(train_counts[j])}, test {int(test_counts[j])})" for j in bad]
    else:
        raise SplitError(
            f"after {params.max_redraws} draws some labels still have fewer than {need} items in train or "
            f"test: {', '.join(short)}; lower split.min_items_per_label or raise split.test"
        )
    split = np.full(len(items), "train", dtype=object)
    split[np.flatnonzero(evaluable)] = np.array(SPLITS, dtype=object)[assigned]
    return pd.DataFrame({"item_id": items["item_id"].to_numpy(), "split": split})


def split_summary(items: pd.DataFrame, splits: pd.DataFrame, require_images: bool = True) -> dict:
    """Item and per-label counts per split (for the stage report and checks)."""
    merged = items.merge(splits, on="item_id", validate="one_to_one")
    out: dict = {"items": {s: int((merged["split"] == s).sum()) for s in SPLITS}, "label_counts": {}}
    labelled = evaluable_items(merged, require_images)
    out["labelled_train_items"] = int((labelled & (merged["split"] == "train").to_numpy()).sum())
    for s in SPLITS:
        counts: dict[str, int] = {}
        for labels in merged.loc[merged["split"] == s, "labels"]:
            for label in labels:
                counts[label] = counts.get(label, 0) + 1
        out["label_counts"][s] = dict(sorted(counts.items()))
    return out


def label_ratio_mask(
    labels: pd.Series, is_train: np.ndarray, has_image: np.ndarray, ratio: float, seed: int
) -> np.ndarray:
    """Which items keep their labels for training at `ratio` (a seeded subset of the labelled training items).

    The subset holds round(ratio * n) (at least one) of the n labelled training items with images, and
    covers every label where it can (one item per label first, rarest label first; then
    the rest at random). Masks of one seed are nested: a lower ratio keeps a subset of
    what a higher ratio keeps.
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"label ratio must be in (0, 1], got {ratio}")
    candidates = np.flatnonzero(is_train & has_image & np.array([bool(x) for x in labels]))
    rng = np.random.default_rng(seed)
    order = rng.permutation(candidates)
    vocabulary = label_vocabulary(labels.iloc[candidates])
    y = label_matrix(labels.iloc[order], vocabulary).astype(bool)
    first: list[int] = []
    taken = np.zeros(len(order), dtype=bool)
    for j in np.argsort(y.sum(0), kind="stable"):  # rarest label first
        hits = np.flatnonzero(y[:, j] & ~taken)
        if not y[taken, j].any() and len(hits):
            taken[hits[0]] = True
            first.append(hits[0])
    ranked = order[np.concatenate([first, np.flatnonzero(~taken)]).astype(int)]
    keep = max(1, round(ratio * len(candidates))) if len(candidates) else 0
    mask = np.zeros(len(labels), dtype=bool)
    mask[ranked[:keep]] = True
    return mask
