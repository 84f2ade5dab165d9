"""Comparisons of a method against the image-only baseline at one label ratio.

The valid test (`two_level_test`, behind every mark, CI and headline) covers both sources
of error of a mean mAP over seeds on one test set: training randomness (the spread of the
per-seed results) and test-set sampling (an ordinary bootstrap of the test items, drawn
with replacement, the same draws for every run, so the comparison is paired). Kept for
comparison only: the paper's test (`paired_bootstrap_test`, a t-test over overlapping 90 %
subsamples of the test set, which ignores training randomness and understates test-set
error) and the paired t-test across seeds (`paired_seed_test`, training randomness only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats


def _paired(
    method: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Both as 1-D float arrays of one length."""
    m = np.asarray(method, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if m.ndim != 1 or m.shape != b.shape:
        raise ValueError(f"paired samples must be 1-D of one length, got {m.shape} and {b.shape}")
    return m, b


def _by_seed(
    method: Mapping | Sequence | np.ndarray, baseline: Mapping | Sequence | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
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


def paired_seed_test(
    method_by_seed: Mapping | Sequence | np.ndarray, baseline_by_seed: Mapping | Sequence | np.ndarray
) -> dict:
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


def _two_level_error(per_seed: np.ndarray, resampled: np.ndarray) -> tuple[float, float, float]:
    """(mean, standard error, degrees of freedom) of a mean over seeds evaluated on one test set.

    per_seed: one value per seed on the whole test set; resampled: seeds x resamples, the
    value on each with-replacement resample of the test items. Variance = var(per seed) / n
    (training) + var over resamples of the seed mean (test set). Degrees of freedom:
    Welch-Satterthwaite, capped at (n - 1) * (1 + test / train), so that a seed variance
    that is small by chance cannot borrow the resamples' degrees of freedom (uncapped, 3
    seeds reject a true null ~7 % of the time at the 5 % level; capped, <= 5.3 % for 3-6
    seeds in simulation). A bootstrap over only 3-5 seeds would understate the training
    part by (n - 1) / n; the t-distribution over seeds avoids that.
    """
    n, r = len(per_seed), resampled.shape[1]
    if n < 2 or r < 2:
        return float(per_seed.mean()) if n else math.nan, math.nan, math.nan
    train = float(per_seed.var(ddof=1)) / n
    test = float(np.nanmean(resampled, axis=0).var(ddof=1))
    total = train + test
    if total == 0:
        return float(per_seed.mean()), 0.0, math.inf
    df = total**2 / (train**2 / (n - 1) + test**2 / (r - 1))
    if train > 0:
        df = min(df, (n - 1) * (1 + test / train))
    return float(per_seed.mean()), math.sqrt(total), df


def two_level_interval(
    per_seed: Sequence[float] | np.ndarray, resampled: np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """CI of a mean over seeds (training randomness and test-set sampling); nan with fewer than 2 seeds."""
    mean, se, df = _two_level_error(np.asarray(per_seed, dtype=np.float64), np.asarray(resampled, dtype=np.float64))
    if not math.isfinite(se):
        return math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se if se > 0 else 0.0
    return mean - half, mean + half


def two_level_test(
    method_by_seed: Sequence[float] | np.ndarray,
    baseline_by_seed: Sequence[float] | np.ndarray,
    method_resampled: np.ndarray,
    baseline_resampled: np.ndarray,
    level: float = 0.95,
) -> dict:
    """The valid paired test of a method against the baseline: training seeds and test items both vary.

    Inputs are aligned by seed (same seeds, same order): per-seed mAP on the whole test
    set and seeds x resamples mAP on the same with-replacement resamples of the test items.
    Returns n, mean_diff, se, df, t, p (two-sided), diff_ci (the `level` interval of the
    mean difference), improvement (ratio of the means - 1) and improvement_ci (Fieller's interval of
    the ratio of the means, less 1: the baseline mean's own uncertainty included). t, p and the CIs are nan for fewer than 2 seeds (training variance
    cannot be estimated); p is 1 when every difference is 0.
    """
    m, b = _paired(method_by_seed, baseline_by_seed)
    rm, rb = np.asarray(method_resampled, dtype=np.float64), np.asarray(baseline_resampled, dtype=np.float64)
    if rm.shape != rb.shape or rm.ndim != 2 or rm.shape[0] != len(m):
        raise ValueError(
            f"resampled values must be seeds x resamples for {len(m)} seeds, got {rm.shape} and {rb.shape}"
        )
    diff, se, df = _two_level_error(m - b, rm - rb)
    t = p = math.nan
    low = high = math.nan
    if se == 0:
        t, p, low, high = (0.0, 1.0, diff, diff) if diff == 0 else (math.copysign(math.inf, diff), 0.0, diff, diff)
    elif math.isfinite(se):
        t = diff / se
        p = float(2 * stats.t.sf(abs(t), df))
        half = float(stats.t.ppf(0.5 + level / 2, df)) * se
        low, high = diff - half, diff + half
    ratio_low, ratio_high = math.nan, math.nan
    if math.isfinite(se):
        quantile = float(stats.t.ppf(0.5 + level / 2, df)) if se > 0 else 0.0
        ratio_low, ratio_high = fieller_interval(
            float(m.mean()), float(b.mean()), _two_level_cov(m, b, rm, rb), quantile
        )
    return {
        "n": len(m),
        "mean_diff": diff,
        "se": se,
        "df": df,
        "t": t,
        "p": p,
        "diff_ci": (low, high),
        "improvement": relative_improvement(float(m.mean()), float(b.mean())),
        "improvement_ci": (ratio_low - 1, ratio_high - 1),
    }


def _two_level_cov(m: np.ndarray, b: np.ndarray, rm: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """The 2 x 2 covariance of the (method, baseline) means over seeds, with both sources of error as in
    `_two_level_error`: (co)variance over seeds / n, plus over resamples of the seed means."""
    train = np.cov(m, b, ddof=1) / len(m)
    test = np.cov(np.nanmean(rm, axis=0), np.nanmean(rb, axis=0), ddof=1)
    return train + test


def fieller_interval(mean_m: float, mean_b: float, cov: np.ndarray, quantile: float) -> tuple[float, float]:
    """Fieller's interval for the ratio mean_m / mean_b of two correlated estimates (`cov`: their 2 x 2
    covariance): every r with (mean_m - r mean_b)^2 <= quantile^2 var(mean_m - r mean_b). It accounts for the
    baseline's own uncertainty, which dividing the difference's interval by mean_b ignores. (nan, nan) when the
    set is unbounded (the baseline is not distinguishable from 0 at this level)."""
    q2 = quantile**2
    a = mean_b**2 - q2 * cov[1, 1]
    half_b = mean_m * mean_b - q2 * cov[0, 1]
    c = mean_m**2 - q2 * cov[0, 0]
    disc = half_b**2 - a * c
    if a <= 0 or disc < 0:
        return math.nan, math.nan
    root = math.sqrt(disc)
    return (half_b - root) / a, (half_b + root) / a
