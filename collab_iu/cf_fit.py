"""How well an image model predicts the CF vectors: the mechanism behind a CF head's help.

The CF head can only pass the interactions' label information to the backbone when the
pixels can predict the CF vectors. R² near 0 or below on the validation items means they
cannot, and a CF weight should not be expected to help.
"""

from __future__ import annotations

import numpy as np

VAL_CF_KEYS = ("val_cf_r2", "val_cf_cosine", "val_cf_items")  # a run's CF-head fit on validation items (metrics.json)
EPS = 1e-8  # norms below this count as EPS in the cosine (torch's cosine_similarity does the same)


def cf_fit_quality(pred: np.ndarray, target: np.ndarray) -> dict[str, float | int | None]:
    """{"r2", "cosine", "items"} of CF-head outputs against CF targets (n x D each, one row per item with a target).

    r2 = 1 - SSE / SST pooled over all dimensions: SSE = sum_{i,d} (p_id - t_id)^2 and
    SST = sum_{i,d} (t_id - mean_d)^2, mean_d being the targets' mean of dimension d
    (sklearn's `r2_score(..., multioutput="variance_weighted")`). 1: perfect; 0: no better
    than predicting the targets' mean; below 0: worse. cosine: the mean over items of
    cos(p_i, t_i), in [-1, 1]. A value is None when it cannot be measured: no item (r2 also
    when SST is 0) or a non-finite result (a diverged model).
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"pred and target must be n x D arrays of one shape, got {pred.shape} and {target.shape}")
    n = len(target)
    if n == 0:
        return {"r2": None, "cosine": None, "items": 0}
    sse = float(((pred - target) ** 2).sum())
    sst = float(((target - target.mean(0)) ** 2).sum())
    norms = np.maximum(np.linalg.norm(pred, axis=1), EPS) * np.maximum(np.linalg.norm(target, axis=1), EPS)
    cosine = float(np.clip((pred * target).sum(1) / norms, -1.0, 1.0).mean())
    return {"r2": _finite(1.0 - sse / sst) if sst > 0 else None, "cosine": _finite(cosine), "items": n}


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None
