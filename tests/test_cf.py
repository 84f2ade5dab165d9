"""CF item vectors: shapes, alignment with item ids, determinism, cold start, and quality against popularity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import tiny_cf

from collab_iu.cf import build_cf, fit_factors, holdout_split, interaction_matrix, label_probe, ranking_metrics
from collab_iu.params import CFParams, PrepareParams, SplitParams, SyntheticParams
from collab_iu.splits import make_split
from collab_iu.synthetic import generate_synthetic
from collab_iu.validate import validate_dataset

# a hand-made catalogue: ids deliberately not sorted; 'b' and 'e' share their users; 'f' has no interactions
ITEM_IDS = ["b", "a", "d", "c", "e", "f", "g"]
PAIRS = [
    ("u1", "b"),
    ("u2", "b"),
    ("u1", "e"),
    ("u2", "e"),
    ("u3", "a"),
    ("u3", "d"),
    ("u4", "d"),
    ("u4", "c"),
    ("u5", "a"),
    ("u5", "g"),
    ("u1", "g"),
    ("u2", "c"),
    ("u6", "c"),
    ("u6", "a"),
]


@pytest.fixture
def hand():
    items = pd.DataFrame(
        {
            "item_id": ITEM_IDS,
            "image": ["x.png"] * len(ITEM_IDS),
            "labels": [["x"], ["y"], ["x"], ["y"], ["x"], ["y"], ["x"]],
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": [u for u, _ in PAIRS],
            "item_id": [i for _, i in PAIRS],
            "weight": np.arange(1, len(PAIRS) + 1, dtype=np.float32),
        }
    )
    splits = pd.DataFrame({"item_id": ITEM_IDS, "split": ["train", "train", "train", "train", "test", "train", "val"]})
    return items, interactions, splits


def hand_params(**changes) -> CFParams:
    return tiny_cf(**({"factors": 4, "eval_holdout": 0.0} | changes))


# ---------------------------------------------------------------------------------------------
# interaction matrix


def test_interaction_matrix_orders_items_by_catalogue(hand):
    items, interactions, _ = hand
    m = interaction_matrix(interactions, items["item_id"], binarize=False)
    assert m.shape == (6, len(ITEM_IDS))
    assert m.dtype == np.float32
    dense = m.toarray()
    users = sorted({u for u, _ in PAIRS})
    for (u, i), w in zip(PAIRS, interactions["weight"]):
        assert dense[users.index(u), ITEM_IDS.index(i)] == w
    assert dense.sum() == interactions["weight"].sum()
    assert not dense[:, ITEM_IDS.index("f")].any()


def test_interaction_matrix_binarize(hand):
    items, interactions, _ = hand
    m = interaction_matrix(interactions, items["item_id"], binarize=True)
    assert set(np.unique(m.data)) == {1.0}
    assert m.nnz == len(PAIRS)


def test_interaction_matrix_rejects_unknown_items(hand):
    items, interactions, _ = hand
    interactions.loc[0, "item_id"] = "zzz"
    with pytest.raises(ValueError, match="missing from the catalogue"):
        interaction_matrix(interactions, items["item_id"], binarize=True)


# ---------------------------------------------------------------------------------------------
# shapes, alignment, determinism


@pytest.mark.parametrize(("algorithm", "extra"), [("als", 0), ("bpr", 1)])
def test_vector_shapes(hand, algorithm, extra):
    items, interactions, splits = hand
    result = build_cf(items, interactions, splits, hand_params(algorithm=algorithm))
    assert result.vectors.shape == (len(ITEM_IDS), 4 + extra)
    assert result.vectors.dtype == np.float32
    assert result.report["dim"] == 4 + extra
    assert result.report["algorithm"] == algorithm


def test_bpr_last_column_is_the_item_bias():
    m = sp.csr_matrix((np.random.default_rng(0).random((12, 9)) < 0.4).astype(np.float32))
    users, items = fit_factors(m, tiny_cf(algorithm="bpr", factors=4))
    assert items.shape == (9, 5) and users.shape == (12, 5)
    np.testing.assert_array_equal(users[:, -1], 1.0)  # users' constant 1 multiplies the item bias


def test_index_aligned_with_catalogue(hand):
    items, interactions, splits = hand
    result = build_cf(items, interactions, splits, hand_params())
    assert list(result.index["item_id"]) == ITEM_IDS
    expected = interactions.groupby("item_id").size().reindex(ITEM_IDS, fill_value=0)
    np.testing.assert_array_equal(result.index["n_interactions"].to_numpy(), expected.to_numpy())
    f = ITEM_IDS.index("f")
    assert result.index.loc[f, "n_interactions"] == 0
    np.testing.assert_array_equal(result.vectors[f], 0.0)
    assert np.abs(np.delete(result.vectors, f, axis=0)).sum(1).min() > 0
    assert result.report["items_with_vector"] == len(ITEM_IDS) - 1


def test_vectors_follow_their_items(hand):
    """'b' and 'e' have the same users, so ALS gives them (nearly) the same vector, unlike any other item."""
    items, interactions, splits = hand
    vectors = build_cf(items, interactions, splits, hand_params(iterations=15)).vectors
    b, e = ITEM_IDS.index("b"), ITEM_IDS.index("e")
    dist = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    assert dist[b, e] < 0.05
    others = [i for i in range(len(ITEM_IDS)) if i not in (b, e, ITEM_IDS.index("f"))]
    assert dist[b, others].min() > 5 * dist[b, e]


def test_vectors_equal_a_direct_fit(hand):
    items, interactions, splits = hand
    params = hand_params()
    result = build_cf(items, interactions, splits, params)
    _, direct = fit_factors(interaction_matrix(interactions, items["item_id"], params.binarize), params)
    has = result.index["n_interactions"].to_numpy() > 0
    np.testing.assert_array_equal(result.vectors[has], direct[has])


@pytest.mark.parametrize("algorithm", ["als", "bpr"])
def test_fits_are_bit_identical_single_thread(tiny_dataset_master, algorithm):
    validated = validate_dataset(tiny_dataset_master, PrepareParams(), 3)
    splits = make_split(validated.items, SplitParams())
    params = tiny_cf(algorithm=algorithm, eval_holdout=0.0)
    a = build_cf(validated.items, validated.interactions, splits, params)
    b = build_cf(validated.items, validated.interactions, splits, params)
    assert a.vectors.tobytes() == b.vectors.tobytes()
    pd.testing.assert_frame_equal(a.index, b.index)
    c = build_cf(validated.items, validated.interactions, splits, params.model_copy(update={"seed": 1}))
    assert a.vectors.tobytes() != c.vectors.tobytes()


# ---------------------------------------------------------------------------------------------
# cold start


def test_cold_start_withholds_val_and_test_items(hand):
    items, interactions, splits = hand
    result = build_cf(items, interactions, splits, hand_params(cold_start=True))
    held = splits.loc[splits["split"] != "train", "item_id"]
    rows = items["item_id"].isin(held).to_numpy()
    assert rows.sum() == 2
    assert result.report["cold_start"] is True
    assert result.report["withheld_interactions"] == interactions["item_id"].isin(held).sum() == 4
    assert (result.index.loc[rows, "n_interactions"] == 0).all()
    np.testing.assert_array_equal(result.vectors[rows], 0.0)
    assert result.report["interactions"] == len(interactions) - 4


def test_cold_start_on_synthetic(tiny_dataset_master):
    validated = validate_dataset(tiny_dataset_master, PrepareParams(), 3)
    items, interactions = validated.items, validated.interactions
    splits = make_split(items, SplitParams())
    result = build_cf(items, interactions, splits, tiny_cf(cold_start=True, eval_holdout=0.0))
    held = set(splits.loc[splits["split"] != "train", "item_id"])
    is_held = items["item_id"].isin(held).to_numpy()
    assert result.report["withheld_interactions"] == int(interactions["item_id"].isin(held).sum()) > 0
    assert (result.index.loc[is_held, "n_interactions"] == 0).all()
    assert not result.vectors[is_held].any()
    train_counts = interactions.groupby("item_id").size().reindex(items["item_id"], fill_value=0).to_numpy()
    np.testing.assert_array_equal(result.index.loc[~is_held, "n_interactions"], train_counts[~is_held])
    warm = build_cf(items, interactions, splits, tiny_cf(eval_holdout=0.0))
    assert "withheld_interactions" not in warm.report
    np.testing.assert_array_equal(warm.index["n_interactions"], train_counts)


# ---------------------------------------------------------------------------------------------
# holdout_split and ranking_metrics on hand-computed cases


def _user_items() -> sp.csr_matrix:
    dense = np.zeros((4, 8), np.float32)
    dense[0, [0, 1, 2, 3, 4]] = [1, 2, 3, 4, 5]  # 5 items
    dense[1, [5]] = 1  # 1 item: never held out
    dense[2, [1, 6]] = [1, 1]  # 2 items: one held out
    dense[3, :] = np.arange(1, 9)  # 8 items
    return sp.csr_matrix(dense)


@pytest.mark.parametrize(("fraction", "expected"), [(0.2, [1, 0, 1, 2]), (0.5, [2, 0, 1, 4]), (0.01, [1, 0, 1, 1])])
def test_holdout_split_counts(fraction, expected):
    m = _user_items()
    train, test = holdout_split(m, fraction, seed=0)
    assert np.diff(test.indptr).tolist() == expected
    np.testing.assert_array_equal((train + test).toarray(), m.toarray())  # values kept, nothing lost
    assert train.multiply(test).nnz == 0  # disjoint


def test_holdout_split_seeded():
    m = _user_items()
    a, b = holdout_split(m, 0.5, seed=3), holdout_split(m, 0.5, seed=3)
    assert (a[1] != b[1]).nnz == 0
    draws = {tuple(holdout_split(m, 0.5, seed=s)[1][3].indices) for s in range(6)}
    assert len(draws) > 1


def test_ranking_metrics_hand_computed():
    n_items = 5
    train = sp.csr_matrix(([1, 1, 1], ([0, 1, 2], [0, 4, 3])), shape=(3, n_items), dtype=np.float32)
    test = sp.csr_matrix(([1, 1, 1], ([0, 0, 1], [1, 3, 2])), shape=(3, n_items), dtype=np.float32)  # user 2: none
    scores = np.array(
        [
            [9, 5, 4, 1, 0],  # item 0 seen; top-2 = [1, 2]: one hit of two at rank 1
            [3, 0, 2, 1, 9],  # item 4 seen; top-2 = [0, 2]: its one item at rank 2
            [0, 0, 0, 0, 0],
        ],
        dtype=np.float64,
    )
    seen_scores = []
    metrics = ranking_metrics(lambda u: seen_scores.append(list(u)) or scores[u], train, test, k=2)
    assert seen_scores == [[0, 1]]  # only users with held-out items are scored
    recall = (1 / 2 + 1 / 1) / 2
    ndcg = (1.0 / (1 + 1 / np.log2(3)) + (1 / np.log2(3)) / 1.0) / 2
    assert metrics == {"recall@2": pytest.approx(recall), "ndcg@2": pytest.approx(ndcg)}
    chunked = ranking_metrics(lambda u: scores[u], train, test, k=2, chunk=1)
    assert chunked == pytest.approx(metrics)
    perfect = ranking_metrics(lambda u: test[u].toarray() * 10.0, train, test, k=2)
    assert perfect == {"recall@2": pytest.approx(1.0), "ndcg@2": pytest.approx(1.0)}


def test_ranking_metrics_k_beyond_catalogue():
    train = sp.csr_matrix(([1], ([0], [0])), shape=(1, 4), dtype=np.float32)
    test = sp.csr_matrix(([1], ([0], [3])), shape=(1, 4), dtype=np.float32)
    metrics = ranking_metrics(lambda u: np.array([[5.0, 4.0, 3.0, 2.0]]), train, test, k=10)
    assert metrics["recall@10"] == pytest.approx(1.0)  # the held-out item is ranked 3rd of the 3 unseen
    assert metrics["ndcg@10"] == pytest.approx(1 / np.log2(4))


def test_label_probe_hand_case():
    rng = np.random.default_rng(0)
    n = 80
    y = rng.random(n) < 0.5
    items = pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(n)], "image": ["x"] * n, "labels": [["p"] if t else ["q"] for t in y]}
    )
    splits = pd.DataFrame({"item_id": items["item_id"], "split": np.where(np.arange(n) % 2 == 0, "train", "test")})
    informative = np.c_[y * 2.0 - 1 + rng.normal(0, 0.3, n), rng.normal(size=(n, 3))].astype(np.float32)
    noise = rng.normal(size=(n, 4)).astype(np.float32)
    has = np.ones(n, bool)
    good, bad = label_probe(informative, items, splits, has), label_probe(noise, items, splits, has)
    assert good["labels_evaluated"] == 2 and good["test_items"] == n // 2
    assert good["probe_map"] > 0.95
    assert good["probe_map"] > bad["probe_map"] + 0.2
    assert good["popularity_map"] == bad["popularity_map"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# quality on the default synthetic dataset


@pytest.fixture(scope="module")
def default_cf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("default") / "synthetic"
    generate_synthetic(SyntheticParams(), folder)
    validated = validate_dataset(folder, PrepareParams(), SplitParams().min_items_per_label)
    splits = make_split(validated.items, SplitParams())
    return build_cf(validated.items, validated.interactions, splits, CFParams())


def test_default_cf_beats_popularity(default_cf):
    rec = default_cf.report["recommendation"]
    k = CFParams().eval_k
    for metric in (f"recall@{k}", f"ndcg@{k}"):
        assert rec["model"][metric] > 2 * rec["popularity"][metric], (metric, rec)
    assert rec["heldout_interactions"] > 0


def test_default_cf_carries_labels(default_cf):
    probe = default_cf.report["label_probe"]
    assert probe["labels_evaluated"] == SyntheticParams().n_labels
    assert probe["probe_map"] > probe["popularity_map"] + 0.3, probe


def test_default_cf_report_shape(default_cf):
    report = default_cf.report
    assert report["items"] == SyntheticParams().n_items == len(default_cf.index)
    assert report["dim"] == CFParams().factors
    assert report["items_with_vector"] == int((default_cf.index["n_interactions"] > 0).sum())


def test_first_fit_in_a_process_runs_single_threaded_blas():
    """implicit loads scipy's OpenBLAS on import; the BLAS limit must cover it from the very first fit."""
    import subprocess
    import sys

    code = (
        "import numpy as np, scipy.sparse as sp\n"
        "from collab_iu.cf import fit_factors\n"
        "from collab_iu.params import CFParams\n"
        "m = sp.csr_matrix((np.random.default_rng(0).random((20, 10)) < 0.3).astype(np.float32))\n"
        "fit_factors(m, CFParams(factors=4, iterations=2))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "2"}  # as on any multi-core machine
    out = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("binarize", [True, False])
def test_weight_0_is_no_interest_and_all_zero_is_refused(hand, binarize):
    """An impression without a click (weight 0) is no positive, binarized or not: an item seen only that way gets
    no vector; with every weight 0 the fit is refused with a message, not a traceback."""
    from collab_iu.cf import InteractionWeightError

    items, interactions, splits = hand
    seen_only = interactions.assign(weight=np.where(interactions["item_id"] == "g", 0.0, interactions["weight"]))
    result = build_cf(items, seen_only, splits, hand_params(binarize=binarize))
    assert result.report["zero_weight_interactions"] == int((interactions["item_id"] == "g").sum())
    assert result.index.set_index("item_id").loc["g", "n_interactions"] == 0 and not result.vectors[-1].any()
    with pytest.raises(InteractionWeightError, match="no interaction has a weight above 0"):
        build_cf(items, interactions.assign(weight=0.0), splits, hand_params(binarize=binarize))
