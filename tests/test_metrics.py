"""Ranking metrics against sklearn and hand-computed values; the bootstrap protocol."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from collab_iu.metrics import (
    average_precision_per_label,
    bootstrap_indices,
    bootstrap_map,
    confidence_interval,
    evaluate_scores,
    macro_map,
    micro_ap,
    precision_at_k,
    recall_at_k,
    top1_accuracy,
)

EMPTY_LABELS = (3, 7)


def random_case(
    seed: int, decimals: int | None, n_items: int = 400, n_labels: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """Labels of varied frequency (two labels without positives, one all-positive); scores rounded for ties."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n_items, n_labels)) < rng.uniform(0.01, 0.4, n_labels)).astype(int)
    y[:, list(EMPTY_LABELS)] = 0
    y[:, 0] = 1
    scores = rng.random((n_items, n_labels)) + 0.3 * y
    return y, scores if decimals is None else np.round(scores, decimals)


def sklearn_ap(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return np.array(
        [average_precision_score(y[:, j], scores[:, j]) if y[:, j].any() else np.nan for j in range(y.shape[1])]
    )


@pytest.mark.parametrize("decimals", [None, 1, 0])
@pytest.mark.parametrize("seed", [0, 1])
def test_ap_per_label_matches_sklearn(seed, decimals):
    y, scores = random_case(seed, decimals)
    ap = average_precision_per_label(y, scores)
    expected = sklearn_ap(y, scores)
    assert ap.shape == (y.shape[1],)
    assert np.array_equal(np.isnan(ap), np.isnan(expected))
    assert np.flatnonzero(np.isnan(ap)).tolist() == list(EMPTY_LABELS)
    np.testing.assert_allclose(ap[~np.isnan(ap)], expected[~np.isnan(expected)], rtol=0, atol=1e-6)


@pytest.mark.parametrize("decimals", [None, 1])
def test_macro_map_excludes_and_counts_labels_without_positives(decimals):
    y, scores = random_case(2, decimals)
    value, excluded = macro_map(y, scores)
    assert excluded == len(EMPTY_LABELS)
    assert value == pytest.approx(np.nanmean(sklearn_ap(y, scores)), abs=1e-6)


def test_ties_form_one_threshold():
    # A positive tied with a negative is found at precision 1/2, whichever comes first.
    for y in ([1, 0, 0], [0, 1, 0]):
        ap = average_precision_per_label(np.array(y)[:, None], np.array([[0.5], [0.5], [0.1]]))
        assert ap[0] == pytest.approx(0.5)
    y = np.array([[0], [1], [1], [0], [1]])
    scores = np.array([[0.9], [0.7], [0.7], [0.7], [0.2]])
    # thresholds 0.9: tp 0/1; 0.7: tp 2/4 (recall +2/3); 0.2: tp 3/5 (recall +1/3)
    assert average_precision_per_label(y, scores)[0] == pytest.approx(2 / 3 * 2 / 4 + 1 / 3 * 3 / 5)


def test_ap_does_not_depend_on_item_order():
    y, scores = random_case(3, 1)
    perm = np.random.default_rng(0).permutation(len(y))
    np.testing.assert_allclose(
        average_precision_per_label(y[perm], scores[perm]), average_precision_per_label(y, scores), atol=1e-12
    )


@pytest.mark.parametrize("decimals", [None, 1])
def test_micro_ap_matches_sklearn(decimals):
    y, scores = random_case(4, decimals)
    assert micro_ap(y, scores) == pytest.approx(average_precision_score(y.ravel(), scores.ravel()), abs=1e-6)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="one shape"):
        macro_map(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="0 and 1"):
        macro_map(np.full((3, 2), 2), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="finite"):
        macro_map(np.zeros((3, 2)), np.full((3, 2), np.nan))


# Four items, six labels. Item 2 has no positive (left out of precision/recall, a miss for top-1).
HAND_Y = np.array(
    [
        [1, 0, 1, 0, 0, 0],
        [0, 1, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 1, 1],
    ]
)
HAND_SCORES = np.array(
    [
        [0.9, 0.8, 0.25, 0.3, 0.2, 0.0],  # ranking 0 1 3 2 4 5
        [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],  # ranking 0 1 2 3 4 5
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.1, 0.2, 0.3, 0.9, 0.8, 0.7],  # ranking 3 4 5 2 1 0
    ]
)
# per item (0, 1, 3): hits@1 = 1, 0, 1; hits@3 = 1, 1, 3; hits@5 = 2, 1, 3; positives = 2, 2, 3
# (a positive at rank 4 and one at rank 6, so an off-by-one k changes the results)
HAND_EXPECTED = {
    "precision@1": (1 + 0 + 1) / 3,
    "recall@1": (1 / 2 + 0 + 1 / 3) / 3,
    "precision@3": (1 / 3 + 1 / 3 + 3 / 3) / 3,
    "recall@3": (1 / 2 + 1 / 2 + 1) / 3,
    "precision@5": (2 / 5 + 1 / 5 + 3 / 5) / 3,
    "recall@5": (1 + 1 / 2 + 1) / 3,
    "top1_accuracy": 2 / 4,
}


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_and_recall_at_k_by_hand(k):
    assert precision_at_k(HAND_Y, HAND_SCORES, k) == pytest.approx(HAND_EXPECTED[f"precision@{k}"])
    assert recall_at_k(HAND_Y, HAND_SCORES, k) == pytest.approx(HAND_EXPECTED[f"recall@{k}"])


def test_top1_accuracy_by_hand():
    assert top1_accuracy(HAND_Y, HAND_SCORES) == pytest.approx(HAND_EXPECTED["top1_accuracy"])
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k(HAND_Y, HAND_SCORES, 7)


def test_evaluate_scores_collects_everything():
    out = evaluate_scores(HAND_Y, HAND_SCORES)
    assert set(out) == set(HAND_EXPECTED) | {"map", "map_excluded_labels", "micro_ap", "ap_per_label"}
    for key, value in HAND_EXPECTED.items():
        assert out[key] == pytest.approx(value)
    assert out["map_excluded_labels"] == 0
    assert out["map"] == pytest.approx(np.mean(sklearn_ap(HAND_Y, HAND_SCORES)))
    assert out["micro_ap"] == pytest.approx(average_precision_score(HAND_Y.ravel(), HAND_SCORES.ravel()))
    assert isinstance(out["ap_per_label"], list) and len(out["ap_per_label"]) == HAND_Y.shape[1]


def test_bootstrap_indices_are_seeded_subsets_without_repeats():
    n = 101
    a = bootstrap_indices(n, 20, 0.9, seed=5)
    assert a.shape == (20, round(0.9 * n))
    assert all(len(np.unique(row)) == a.shape[1] for row in a)
    assert a.min() >= 0 and a.max() < n
    assert np.array_equal(a, bootstrap_indices(n, 20, 0.9, seed=5))
    assert not np.array_equal(a, bootstrap_indices(n, 20, 0.9, seed=6))
    assert len({tuple(row) for row in a}) == len(a)


@pytest.fixture(scope="module")
def bootstrap_case() -> tuple[np.ndarray, np.ndarray]:
    """Tied scores and a label with a single positive, so some resamples must drop that label."""
    y, scores = random_case(6, 1, n_items=300)
    y[:, 5] = 0
    y[17, 5] = 1
    return y, scores


def test_bootstrap_map_is_macro_map_of_each_resample(bootstrap_case):
    y, scores = bootstrap_case
    indices = bootstrap_indices(len(y), 50, 0.9, seed=0)
    samples = bootstrap_map(y, scores, n_resamples=50, fraction=0.9, seed=0)
    assert samples.shape == (50,)
    assert np.array_equal(samples, bootstrap_map(y, scores, indices=indices))
    without_single = np.flatnonzero(~(indices == 17).any(axis=1))
    assert len(without_single), "seed 0 should give a resample that leaves the single positive out"
    for r in (0, 1, int(without_single[0])):
        value, excluded = macro_map(y[indices[r]], scores[indices[r]])
        assert excluded == len(EMPTY_LABELS) + (r in without_single)
        assert samples[r] == pytest.approx(value, rel=1e-12)
        sub = sklearn_ap(y[indices[r]], scores[indices[r]])
        assert samples[r] == pytest.approx(np.nanmean(sub), abs=1e-6)


def test_bootstrap_map_is_seeded(bootstrap_case):
    y, scores = bootstrap_case
    first = bootstrap_map(y, scores, n_resamples=10, seed=1)
    assert first.shape == (10,)
    assert np.array_equal(first, bootstrap_map(y, scores, n_resamples=10, seed=1))
    assert not np.array_equal(first, bootstrap_map(y, scores, n_resamples=10, seed=2))


def test_bootstrap_map_batches_agree(bootstrap_case, monkeypatch):
    y, scores = bootstrap_case
    whole = bootstrap_map(y, scores, n_resamples=7)
    monkeypatch.setattr("collab_iu.metrics._BATCH_ELEMENTS", 1)  # one resample per batch
    np.testing.assert_array_equal(bootstrap_map(y, scores, n_resamples=7), whole)


def test_bootstrap_map_rejects_repeated_items(bootstrap_case):
    y, scores = bootstrap_case
    with pytest.raises(ValueError, match="repeats"):
        bootstrap_map(y, scores, indices=np.array([[0, 1, 1, 2]]))


def test_confidence_interval_is_a_percentile_interval():
    assert confidence_interval(np.arange(101.0), level=0.9) == pytest.approx((5.0, 95.0))
    low, high = confidence_interval(np.random.default_rng(0).normal(size=2000))
    assert low == pytest.approx(-1.96, abs=0.15) and high == pytest.approx(1.96, abs=0.15)
