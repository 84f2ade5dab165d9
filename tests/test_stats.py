"""Paired tests against hand-computed statistics; improvement arithmetic; significance marks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from collab_iu.stats import paired_bootstrap_test, paired_seed_test, relative_improvement, significance_mark

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
    [(0.0, "**"), (0.01, "**"), (0.0100001, "*"), (0.05, "*"), (0.0500001, ""), (0.5, ""), (float("nan"), ""), (None, "")],
)
def test_significance_mark_boundaries(p, mark):
    assert significance_mark(p) == mark
