"""Multi-label ranking metrics and the paper's bootstrap protocol (numpy only).

Inputs are `y_true` (items x labels, 0/1) and `scores` (same shape, higher = more
likely). Average precision follows sklearn.metrics.average_precision_score: tied
scores form one threshold, AP = sum over thresholds of (recall step) x precision.
The headline metric is macro mAP over labels with at least one positive. Two kinds of
test-item resamples: the paper's (50 resamples of 90 % of the items, without replacement,
`bootstrap_indices`) and the ordinary bootstrap (items drawn with replacement, as counts,
`resample_counts`), which measures test-set sampling error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Resamples x items x labels handled per bootstrap batch (about 20 MB of masks and counts).
_BATCH_ELEMENTS = 1 << 22


def _check(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as 2-D arrays (bool labels, float scores) of one shape, scores finite."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or y.shape != s.shape:
        raise ValueError(f"y_true and scores must be 2-D of one shape, got {y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y.astype(bool), s


@dataclass(frozen=True)
class _Ranking:
    """Items ranked per label by descending score, with the positives listed label by label, best first."""

    order: np.ndarray  # labels x ranks -> item
    pos_label: np.ndarray  # label of each positive
    pos_item: np.ndarray
    pos_end: np.ndarray  # last rank of the positive's tie group (its threshold)
    pos_last: np.ndarray  # index in this list of the label's last positive ranked at or before pos_end
    pos_first: np.ndarray  # index in this list of the label's first positive
    starts: np.ndarray  # index of the first positive of every label that has one
    labels: np.ndarray  # labels that have a positive, aligned with starts
    n_labels: int


def _rank(y: np.ndarray, s: np.ndarray) -> _Ranking:
    """Rank once per label; resamples then only mask items in or out of this ranking."""
    n, n_labels = y.shape
    order = np.argsort(-s, axis=0, kind="stable")
    ranked = np.take_along_axis(s, order, axis=0)
    is_last = np.ones(ranked.shape, dtype=bool)
    is_last[:-1] = ranked[:-1] != ranked[1:]
    group_end = np.minimum.accumulate(np.where(is_last, np.arange(n)[:, None], n)[::-1], axis=0)[::-1]
    pos_label, pos_rank = np.nonzero(np.take_along_axis(y, order, axis=0).T)
    key = pos_label * n + pos_rank  # sorted: label-major, then rank
    pos_end = group_end[pos_rank, pos_label]
    labels, starts = np.unique(pos_label, return_index=True)
    first = np.zeros(n_labels, dtype=np.int64)
    first[labels] = starts
    return _Ranking(
        order=np.ascontiguousarray(order.T),
        pos_label=pos_label,
        pos_item=order[pos_rank, pos_label],
        pos_end=pos_end,
        pos_last=np.searchsorted(key, pos_label * n + pos_end, side="right") - 1,
        pos_first=first[pos_label],
        starts=starts,
        labels=labels,
        n_labels=n_labels,
    )


def _masked_ap(r: _Ranking, masks: np.ndarray) -> np.ndarray:
    """AP per (mask, label) over the items each mask keeps; nan without a kept positive.

    masks: batch x items, bool (kept or not) or uint8 counts (an item drawn k times counts
    k times, as in a dataset holding k copies of it). Each kept positive contributes the
    precision at its tie group's end, i.e. at the threshold equal to its score, counting
    kept items only.
    """
    batch = len(masks)
    kept_pos = masks[:, r.pos_item]
    tp = np.zeros((batch, len(r.pos_item) + 1), dtype=np.int64)
    np.cumsum(kept_pos, axis=1, out=tp[:, 1:])
    tp_end = tp[:, r.pos_last + 1] - tp[:, r.pos_first]
    # int8/uint8 input: a bool -> int cumsum along the last axis is several times slower
    ranked = masks[:, r.order]
    seen = np.cumsum(ranked.view(np.int8) if ranked.dtype == bool else ranked, axis=2, dtype=np.int32)
    seen_end = seen[:, r.pos_label, r.pos_end]
    precision = np.where(kept_pos, tp_end / np.maximum(seen_end, 1), 0.0)
    ap = np.full((batch, r.n_labels), np.nan)
    if len(r.labels):
        total = np.add.reduceat(precision * kept_pos, r.starts, axis=1)
        positives = np.add.reduceat(kept_pos, r.starts, axis=1, dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap[:, r.labels] = np.where(positives > 0, total / positives, np.nan)
    return ap


def average_precision_per_label(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AP of every label (column); nan for labels without a positive."""
    y, s = _check(y_true, scores)
    return _masked_ap(_rank(y, s), np.ones((1, len(y)), dtype=bool))[0]


def _mean_over_labels(ap: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring nan (labels without positives); nan when every label is nan."""
    counted = ~np.isnan(ap)
    total = np.where(counted, ap, 0.0).sum(axis=-1)
    n = counted.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def macro_map(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    """(mean AP over labels with at least one positive, number of labels excluded for having none)."""
    ap = average_precision_per_label(y_true, scores)
    return float(_mean_over_labels(ap)), int(np.isnan(ap).sum())


def micro_ap(y_true: np.ndarray, scores: np.ndarray) -> float:
    """AP of the flattened matrix (every item-label pair is one prediction); nan without positives."""
    y, s = _check(y_true, scores)
    return float(average_precision_per_label(y.reshape(-1, 1), s.reshape(-1, 1))[0])


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each item's k highest scores (ties: lower label index first)."""
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be in [1, {scores.shape[1]}], got {k}")
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _hits_at_k(y_true: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(positives among the top k, number of positives) for every item with at least one positive."""
    y, s = _check(y_true, scores)
    hits = np.take_along_axis(y, _top_k(s, k), axis=1).sum(axis=1)
    positives = y.sum(axis=1)
    return hits[positives > 0], positives[positives > 0]


def precision_at_k(y_true: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Mean over items with a positive of (positives among the top k) / k; nan if no item has one."""
    hits, _ = _hits_at_k(y_true, scores, k)
    return float(np.mean(hits / k)) if len(hits) else float("nan")


def recall_at_k(y_true: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Mean over items with a positive of (positives among the top k) / (positives of the item)."""
    hits, positives = _hits_at_k(y_true, scores, k)
    return float(np.mean(hits / positives)) if len(hits) else float("nan")


def top1_accuracy(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Share of all items whose top-scored label is one of their positives (items without one count as misses)."""
    y, s = _check(y_true, scores)
    if not len(y):
        return float("nan")
    return float(np.take_along_axis(y, _top_k(s, 1), axis=1).mean())


def evaluate_scores(y_true: np.ndarray, scores: np.ndarray, ks: tuple[int, ...] = (1, 3, 5)) -> dict:
    """All metrics in one dict; k values above the number of labels are skipped.

    `ap_per_label` is a list in label order with nan for labels without positives.
    """
    ap = average_precision_per_label(y_true, scores)
    out: dict = {
        "map": float(_mean_over_labels(ap)),
        "map_excluded_labels": int(np.isnan(ap).sum()),
        "micro_ap": micro_ap(y_true, scores),
    }
    for k in ks:
        if k <= ap.shape[0]:
            out[f"precision@{k}"] = precision_at_k(y_true, scores, k)
            out[f"recall@{k}"] = recall_at_k(y_true, scores, k)
    out["top1_accuracy"] = top1_accuracy(y_true, scores)
    out["ap_per_label"] = [float(a) for a in ap]
    return out


def bootstrap_indices(n_items: int, n_resamples: int = 50, fraction: float = 0.9, seed: int = 0) -> np.ndarray:
    """Item indices of every resample (n_resamples x round(fraction * n_items)), without replacement, sorted per row.

    The sets depend only on (n_items, n_resamples, fraction, seed), so every model scored
    on the same test items gets the same resamples and paired tests line up.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    m = round(fraction * n_items)
    if n_items < 1 or n_resamples < 1 or m < 1:
        raise ValueError(f"need at least one item and one resample, got n_items={n_items}, n_resamples={n_resamples}")
    rng = np.random.default_rng(seed)
    draws = rng.permuted(np.tile(np.arange(n_items), (n_resamples, 1)), axis=1)
    return np.sort(draws[:, :m], axis=1)


def resample_counts(n_items: int, n_resamples: int, seed: int = 0) -> np.ndarray:
    """The ordinary bootstrap: n_items draws with replacement per resample, as counts (n_resamples x n_items, uint8).

    Depends only on (n_items, n_resamples, seed), so every model scored on the same test
    items gets the same resamples. An item drawn more than 255 times (only possible for
    tiny test sets) is capped at 255.
    """
    if n_items < 1 or n_resamples < 1:
        raise ValueError(f"need at least one item and one resample, got n_items={n_items}, n_resamples={n_resamples}")
    draws = np.random.default_rng(seed).integers(0, n_items, size=(n_resamples, n_items))
    flat = (np.arange(n_resamples)[:, None] * n_items + draws).ravel()
    counts = np.bincount(flat, minlength=n_resamples * n_items).reshape(n_resamples, n_items)
    return np.minimum(counts, 255).astype(np.uint8)


def bootstrap_map(
    y_true: np.ndarray,
    scores: np.ndarray,
    n_resamples: int = 50,
    fraction: float = 0.9,
    seed: int = 0,
    indices: np.ndarray | None = None,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Macro mAP of every resample (shape n_resamples), labels without a positive in a resample excluded.

    `indices` (resamples x items without repeats, e.g. from `bootstrap_indices`) or `counts`
    (resamples x items, how often each item was drawn, e.g. from `resample_counts`) override
    n_resamples, fraction and seed. Items are ranked once per label; each resample weights
    that ranking, so a tie group's threshold counts only the resample's items.
    """
    y, s = _check(y_true, scores)
    n_items, n_labels = y.shape
    if counts is not None:
        masks = _check_counts(counts, n_items)
    else:
        masks = _indices_to_masks(
            bootstrap_indices(n_items, n_resamples, fraction, seed) if indices is None else indices, n_items
        )
    ranking = _rank(y, s)
    batch = max(1, _BATCH_ELEMENTS // max(1, n_items * n_labels))
    out = np.empty(len(masks))
    for start in range(0, len(masks), batch):
        out[start : start + batch] = _mean_over_labels(_masked_ap(ranking, masks[start : start + batch]))
    return out


def _indices_to_masks(indices: np.ndarray, n_items: int) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.ndim != 2 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError("indices must be a 2-D integer array (resamples x items)")
    if indices.size and (indices.min() < 0 or indices.max() >= n_items):
        raise ValueError(f"indices must lie in [0, {n_items})")
    masks = np.zeros((len(indices), n_items), dtype=bool)
    masks[np.arange(len(indices))[:, None], indices] = True
    if (masks.sum(axis=1) != indices.shape[1]).any():
        raise ValueError("a resample repeats an item; resamples are drawn without replacement")
    return masks


def _check_counts(counts: np.ndarray, n_items: int) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != n_items or counts.dtype != np.uint8:
        raise ValueError(
            f"counts must be a uint8 array of shape (resamples, {n_items}), got {counts.dtype} {counts.shape}"
        )
    return counts


def confidence_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval holding `level` of the samples (e.g. 2.5 % and 97.5 % percentiles)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.asarray(samples, dtype=np.float64), [tail, 100 - tail])
    return float(low), float(high)
