"""Comparisons of a method against the image-only baseline at one label ratio.

Two paired tests: the paper's, over the bootstrap resamples of one test set (both
models scored on the same resample index sets), and one across training seeds, which
also covers the variance of training rather than only that of the test items.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats


def _paired(method: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as 1-D float arrays of one length."""
    m = np.asarray(method, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if m.ndim != 1 or m.shape != b.shape:
        raise ValueError(f"paired samples must be 1-D of one length, got {m.shape} and {b.shape}")
    return m, b


def _by_seed(method: Mapping | Sequence | np.ndarray, baseline: Mapping | Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair values by seed (mappings seed -> value, which must name the same seeds) or by position."""
    if isinstance(method, Mapping) != isinstance(baseline, Mapping):
        raise TypeError("give both per-seed results as mappings seed -> value, or both as sequences")
    if isinstance(method, Mapping):
        if set(method) != set(baseline):
            raise ValueError(f"seeds differ: method {sorted(method)}, baseline {sorted(baseline)}")
        seeds = sorted(method)
        method, baseline = [method[s] for s in seeds], [baseline[s] for s in seeds]
    return _paired(method, baseline)


def relative_improvement(method: float, baseline: float) -> float:
    """method / baseline - 1 (0.05 means 5 % better); nan when the baseline is 0."""
    return float(method) / float(baseline) - 1 if baseline != 0 else float("nan")


def paired_bootstrap_test(method_samples: np.ndarray, baseline_samples: np.ndarray) -> dict:
    """The paper's test: two-sided paired t-test over bootstrap resamples drawn with the same indices.

    Returns mean_method, mean_baseline, improvement (ratio of the means - 1), t and p.
    t and p are nan when every difference is zero.
    """
    m, b = _paired(method_samples, baseline_samples)
    if len(m) < 2:
        raise ValueError(f"a paired t-test needs at least 2 resamples, got {len(m)}")
    with np.errstate(invalid="ignore", divide="ignore"):
        result = stats.ttest_rel(m, b)
    mean_m, mean_b = float(m.mean()), float(b.mean())
    return {
        "mean_method": mean_m,
        "mean_baseline": mean_b,
        "improvement": relative_improvement(mean_m, mean_b),
        "t": float(result.statistic),
        "p": float(result.pvalue),
    }


def paired_seed_test(method_by_seed: Mapping | Sequence | np.ndarray, baseline_by_seed: Mapping | Sequence | np.ndarray) -> dict:
    """Paired comparison of per-seed test mAPs (mappings seed -> mAP, or sequences in seed order).

    Returns n, mean_diff (method - baseline), improvement (ratio of the means - 1), t and p
    of a two-sided paired t-test (both nan for n < 2, where no variance can be estimated),
    and wilcoxon_p of the signed-rank test when n >= 5, else None (with 5 seeds its
    smallest two-sided p is still 0.0625; it can reach 0.05 from 6 seeds on).
    """
    m, b = _by_seed(method_by_seed, baseline_by_seed)
    n = len(m)
    if n == 0:
        raise ValueError("no seeds to compare")
    t = p = math.nan
    if n >= 2:
        with np.errstate(invalid="ignore", divide="ignore"):
            result = stats.ttest_rel(m, b)
        t, p = float(result.statistic), float(result.pvalue)
    wilcoxon_p = None
    if n >= 5:
        wilcoxon_p = 1.0 if np.all(m == b) else float(stats.wilcoxon(m, b).pvalue)
    return {
        "n": n,
        "mean_diff": float(np.mean(m - b)),
        "improvement": relative_improvement(float(m.mean()), float(b.mean())),
        "t": t,
        "p": p,
        "wilcoxon_p": wilcoxon_p,
    }


def significance_mark(p: float | None) -> str:
    """'**' for p <= 0.01, '*' for p <= 0.05, '' otherwise (also for nan or None)."""
    if p is None or math.isnan(p):
        return ""
    return "**" if p <= 0.01 else "*" if p <= 0.05 else ""
