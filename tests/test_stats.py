"""Paired tests against hand-computed statistics, the valid test's level and power on simulated runs; marks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from collab_iu.metrics import bootstrap_indices, bootstrap_map, macro_map, resample_counts
from collab_iu.stats import (
    paired_bootstrap_test,
    paired_seed_test,
    relative_improvement,
    significance_mark,
    two_level_interval,
    two_level_test,
)

METHOD = np.array([0.30, 0.32, 0.31, 0.33, 0.29, 0.34])
BASELINE = np.array([0.28, 0.30, 0.30, 0.31, 0.29, 0.31])


def hand_t_test(method: np.ndarray, baseline: np.ndarray) -> tuple[float, float]:
    """Paired t statistic mean(d) / (sd(d) / sqrt(n)) and its two-sided p with n - 1 degrees of freedom."""
    d = method - baseline
    n = len(d)
    t = d.mean() / (d.std(ddof=1) / np.sqrt(n))
    return t, 2 * scipy_stats.t.sf(abs(t), n - 1)


def test_paired_bootstrap_test_by_hand():
    out = paired_bootstrap_test(METHOD, BASELINE)
    t, p = hand_t_test(METHOD, BASELINE)
    assert out["mean_method"] == pytest.approx(1.89 / 6)
    assert out["mean_baseline"] == pytest.approx(1.79 / 6)
    assert out["improvement"] == pytest.approx(1.89 / 1.79 - 1)
    assert out["t"] == pytest.approx(t) and out["t"] > 0
    assert out["p"] == pytest.approx(p)
    assert 0 < out["p"] < 0.05


def test_paired_bootstrap_test_is_signed():
    out = paired_bootstrap_test(BASELINE, METHOD)
    assert out["t"] < 0 and out["improvement"] < 0
    assert out["p"] == pytest.approx(paired_bootstrap_test(METHOD, BASELINE)["p"])


def test_paired_bootstrap_test_rejects_unpaired():
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap_test(METHOD, BASELINE[:-1])


def test_paired_seed_test_by_hand():
    out = paired_seed_test(METHOD[:3], BASELINE[:3])
    t, p = hand_t_test(METHOD[:3], BASELINE[:3])
    assert out["n"] == 3
    assert out["mean_diff"] == pytest.approx((0.02 + 0.02 + 0.01) / 3)
    assert out["improvement"] == pytest.approx(0.93 / 0.88 - 1)
    assert out["t"] == pytest.approx(t) and out["p"] == pytest.approx(p)
    assert out["wilcoxon_p"] is None


def test_paired_seed_test_pairs_mappings_by_seed():
    method = {7: 0.31, 3: 0.30, 5: 0.35}
    baseline = {5: 0.30, 3: 0.29, 7: 0.30}
    by_position = paired_seed_test([0.30, 0.35, 0.31], [0.29, 0.30, 0.30])  # seeds 3, 5, 7
    assert paired_seed_test(method, baseline) == pytest.approx(by_position, nan_ok=True)
    with pytest.raises(ValueError, match="seeds differ"):
        paired_seed_test(method, {3: 0.3, 5: 0.3, 8: 0.3})


def test_paired_seed_test_single_seed_has_no_p():
    out = paired_seed_test([0.31], [0.30])
    assert out["n"] == 1 and out["mean_diff"] == pytest.approx(0.01)
    assert math.isnan(out["t"]) and math.isnan(out["p"]) and out["wilcoxon_p"] is None


def test_paired_seed_test_wilcoxon_from_five_seeds():
    # All differences positive with distinct sizes: the exact two-sided p is 2 / 2**n.
    assert paired_seed_test(METHOD[:4] + [0, 0, 0, 0.005], BASELINE[:4])["wilcoxon_p"] is None
    five = paired_seed_test(BASELINE[:5] + [0.01, 0.02, 0.03, 0.04, 0.05], BASELINE[:5])
    six = paired_seed_test(BASELINE + [0.01, 0.02, 0.03, 0.04, 0.05, 0.06], BASELINE)
    assert five["wilcoxon_p"] == pytest.approx(2 / 2**5)
    assert six["wilcoxon_p"] == pytest.approx(2 / 2**6)


def test_relative_improvement():
    assert relative_improvement(0.146, 0.091) == pytest.approx(0.055 / 0.091)
    assert relative_improvement(0.263, 0.270) == pytest.approx(-0.007 / 0.270)
    assert relative_improvement(0.3, 0.3) == 0
    assert math.isnan(relative_improvement(0.1, 0.0))


@pytest.mark.parametrize(
    "p, mark",
    [
        (0.0, "**"),
        (0.01, "**"),
        (0.0100001, "*"),
        (0.05, "*"),
        (0.0500001, ""),
        (0.5, ""),
        (float("nan"), ""),
        (None, ""),
    ],
)
def test_significance_mark_boundaries(p, mark):
    assert significance_mark(p) == mark


# ---------------------------------------------------------------------------- the two-level test


def test_two_level_test_by_hand():
    method, baseline = np.array([0.40, 0.43, 0.41]), np.array([0.38, 0.39, 0.40])
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.01, (3, 50))  # resample noise common to both methods (paired)
    rm = method[:, None] + shared + rng.normal(0, 0.004, (3, 50))
    rb = baseline[:, None] + shared
    out = two_level_test(method, baseline, rm, rb)
    d = method - baseline
    train = d.var(ddof=1) / 3
    test = (rm - rb).mean(axis=0).var(ddof=1)
    df = min((train + test) ** 2 / (train**2 / 2 + test**2 / 49), 2 * (1 + test / train))
    t = d.mean() / np.sqrt(train + test)
    assert out["mean_diff"] == pytest.approx(d.mean())
    assert out["se"] == pytest.approx(np.sqrt(train + test)) and out["df"] == pytest.approx(df)
    assert out["t"] == pytest.approx(t) and out["p"] == pytest.approx(2 * scipy_stats.t.sf(abs(t), df))
    half = scipy_stats.t.ppf(0.975, df) * np.sqrt(train + test)
    assert out["diff_ci"] == pytest.approx((d.mean() - half, d.mean() + half))
    assert out["improvement"] == pytest.approx(method.mean() / baseline.mean() - 1)
    # Fieller: every ratio r whose (mean_m - r mean_b) is within the t quantile of its two-level error
    cov = np.cov(method, baseline) / 3 + np.cov(rm.mean(axis=0), rb.mean(axis=0))
    grid = np.linspace(0.5, 1.5, 200_001)
    dev = method.mean() - grid * baseline.mean()
    var = cov[0, 0] - 2 * grid * cov[0, 1] + grid**2 * cov[1, 1]
    inside = grid[dev**2 <= scipy_stats.t.ppf(0.975, df) ** 2 * var]
    assert out["improvement_ci"] == pytest.approx((inside.min() - 1, inside.max() - 1), abs=1e-5)
    # wider than the difference's interval over the baseline mean, which ignores the baseline's uncertainty
    conditional = (out["diff_ci"][0] / baseline.mean(), out["diff_ci"][1] / baseline.mean())
    assert out["improvement_ci"][1] - out["improvement_ci"][0] > conditional[1] - conditional[0]
    low, high = two_level_interval(method, rm)
    assert low < method.mean() < high


def test_fieller_interval_is_the_conditional_one_when_the_baseline_is_exact():
    from collab_iu.stats import fieller_interval

    cov = np.array([[4e-4, 0.0], [0.0, 0.0]])
    low, high = fieller_interval(0.33, 0.30, cov, 2.0)
    assert (low, high) == pytest.approx(((0.33 - 0.04) / 0.30, (0.33 + 0.04) / 0.30))
    # a baseline indistinguishable from 0: no bounded interval
    assert all(math.isnan(x) for x in fieller_interval(0.3, 0.01, np.array([[1e-4, 0], [0, 1e-4]]), 2.0))


def test_two_level_test_needs_two_seeds_and_aligned_resamples():
    out = two_level_test([0.5], [0.4], np.full((1, 30), 0.5), np.full((1, 30), 0.4))
    assert math.isnan(out["p"]) and math.isnan(out["diff_ci"][0]) and out["mean_diff"] == pytest.approx(0.1)
    assert math.isnan(two_level_interval([0.5], np.full((1, 30), 0.5))[0])
    with pytest.raises(ValueError, match="seeds x resamples"):
        two_level_test([0.5, 0.6], [0.4, 0.5], np.zeros((3, 30)), np.zeros((3, 30)))
    same = two_level_test([0.5, 0.6], [0.5, 0.6], np.zeros((2, 30)), np.zeros((2, 30)))
    assert same["p"] == 1.0 and same["diff_ci"] == (0.0, 0.0)


def _simulated_experiment(rng: np.random.Generator, noise_method: float, n_seeds: int = 3) -> dict:
    """Train two 'models' per seed on a freshly drawn test set (scores = labels + noise), then test them.

    Each seed draws new noise (training randomness); each experiment draws a new test set
    (test-set sampling). Returns the valid test's and the paper's p for method vs baseline.
    """
    n_items, n_labels = 240, 4
    y = (rng.random((n_items, n_labels)) < 0.25).astype(np.int8)
    y[0] = 1  # every label has a positive
    counts = resample_counts(n_items, 100, seed=int(rng.integers(1 << 30)))
    indices = bootstrap_indices(n_items, 50, 0.9, seed=int(rng.integers(1 << 30)))
    per_seed = {"method": [], "baseline": []}
    resampled = {"method": [], "baseline": []}
    paper = {"method": [], "baseline": []}
    for _ in range(n_seeds):
        for name, noise in (("method", noise_method), ("baseline", 1.0)):
            scores = y + rng.normal(0, noise, y.shape)
            per_seed[name].append(macro_map(y, scores)[0])
            resampled[name].append(bootstrap_map(y, scores, counts=counts))
            paper[name].append(bootstrap_map(y, scores, indices=indices))
    valid = two_level_test(
        per_seed["method"], per_seed["baseline"], np.stack(resampled["method"]), np.stack(resampled["baseline"])
    )
    paper_p = paired_bootstrap_test(np.mean(paper["method"], axis=0), np.mean(paper["baseline"], axis=0))["p"]
    return {"p": valid["p"], "p_paper": paper_p}


def test_two_level_test_keeps_its_level_where_the_papers_test_does_not():
    """Same distribution for both methods: the valid test rejects at about its 5 % level, the paper's far more often."""
    rng = np.random.default_rng(11)
    runs = [_simulated_experiment(rng, noise_method=1.0) for _ in range(120)]
    valid = np.mean([r["p"] < 0.05 for r in runs])
    paper = np.mean([r["p_paper"] < 0.05 for r in runs])
    assert valid <= 0.10
    assert paper >= 0.30
    assert _simulated_experiment(np.random.default_rng(3), noise_method=1.0)["p"] > 0.05


def test_two_level_test_finds_a_clear_difference():
    rng = np.random.default_rng(5)
    ps = [_simulated_experiment(rng, noise_method=0.6, n_seeds=5)["p"] for _ in range(10)]
    assert all(p < 0.05 for p in ps)
