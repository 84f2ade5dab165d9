"""Collaborative-filtering item vectors with `implicit` (ALS or BPR), and their quality.

The vectors are the CF head's regression targets. Quality is measured two ways:
recommendation (recall@k, ndcg@k on held-out interactions, against popularity) and
label information (a linear probe from CF vectors to labels, against label popularity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from collab_iu.artifacts import splits_of
from collab_iu.dataset import label_matrix, label_vocabulary
from collab_iu.errors import UserError
from collab_iu.params import CFParams


@dataclass
class CFResult:
    """Item vectors aligned with `index` (item_id, n_interactions), plus the quality report."""

    vectors: np.ndarray  # float32, items x dim (BPR: the last column is the item bias)
    index: pd.DataFrame
    report: dict


def interaction_matrix(interactions: pd.DataFrame, item_ids: pd.Series, binarize: bool) -> sp.csr_matrix:
    """User x item CSR matrix (float32); items in the order of `item_ids`, users in sorted order."""
    item_pos = pd.Index(item_ids).get_indexer(interactions["item_id"])
    if (item_pos < 0).any():
        raise ValueError("interactions name items missing from the catalogue")
    users = pd.Categorical(interactions["user_id"])
    with np.errstate(over="ignore"):  # a weight beyond float32's range becomes inf, refused below
        values = np.ones(len(interactions), np.float32) if binarize else interactions["weight"].to_numpy(np.float32)
    _check_weights(values)
    m = sp.csr_matrix((values, (users.codes, item_pos)), shape=(len(users.categories), len(item_ids)))
    m.sum_duplicates()
    _check_weights(m.data, "summed per (user, item) pair")
    return m


class InteractionWeightError(UserError, ValueError):
    """Interaction weights the CF fit cannot use (NaN, infinite or negative)."""


def _check_weights(values: np.ndarray, what: str = "") -> None:
    """Refuse weights that are not finite and >= 0 (validation refuses them; tables written another way might not)."""
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if len(bad):
        shown = ", ".join(str(v) for v in values[bad[:3]]) + (", ..." if len(bad) > 3 else "")
        raise InteractionWeightError(
            f"{len(bad)} interaction weight(s){' ' + what if what else ''} are not finite and >= 0 in float32 "
            f"({shown}); the CF fit with cf.binarize=false needs usable weights: fix the dataset, run `collab-iu prepare`"
        )


def _make_model(params: CFParams):
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking

    common = dict(
        factors=params.factors,
        regularization=params.regularization,
        iterations=params.iterations,
        use_gpu=params.use_gpu,
        num_threads=params.num_threads,
        random_state=params.seed,
    )
    if params.algorithm == "als":
        return AlternatingLeastSquares(alpha=params.alpha, calculate_training_loss=False, **common)
    return BayesianPersonalizedRanking(learning_rate=params.learning_rate, **common)


def fit_factors(user_items: sp.csr_matrix, params: CFParams) -> tuple[np.ndarray, np.ndarray]:
    """Fit the CF model; return (user_factors, item_factors) as float32 numpy arrays."""
    import implicit.als  # noqa: F401 - load implicit (and scipy's BLAS) first: a library loaded inside
    import implicit.bpr  # noqa: F401 - threadpool_limits keeps its own thread count

    with threadpool_limits(1, "blas"):  # implicit checks BLAS threads when the model is built
        model = _make_model(params)
        model.fit(user_items, show_progress=False)
    if params.use_gpu:
        model = model.to_cpu()
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


def holdout_split(user_items: sp.csr_matrix, fraction: float, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Hold out `fraction` of each user's interactions (at least one, for users with two or more)."""
    rng = np.random.default_rng(seed)
    coo = user_items.tocoo()
    order = np.lexsort((rng.random(coo.nnz), coo.row))  # per user, a random order of its items
    rows = coo.row[order]
    starts = np.searchsorted(rows, np.arange(user_items.shape[0]))
    rank = np.arange(coo.nnz) - starts[rows]
    per_user = np.diff(np.append(starts, coo.nnz))
    n_out = np.where(per_user >= 2, np.maximum(1, np.round(per_user * fraction)), 0).astype(int)
    test = rank < n_out[rows]
    shape = user_items.shape

    def make(keep: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((coo.data[order][keep], (rows[keep], coo.col[order][keep])), shape=shape)

    return make(~test), make(test)


def ranking_metrics(scores_fn, train: sp.csr_matrix, test: sp.csr_matrix, k: int, chunk: int = 2048) -> dict:
    """recall@k and ndcg@k over users with held-out items; `scores_fn(user_rows)` gives their item scores."""
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    recall, ndcg = [], []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for start in range(0, len(users), chunk):
        batch = users[start : start + chunk]
        scores = np.array(scores_fn(batch), dtype=np.float64, copy=True)
        seen = train[batch]
        scores[seen.nonzero()] = -np.inf
        kk = min(k, scores.shape[1] - 1)
        top = np.argpartition(-scores, kk, axis=1)[:, :kk]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1), 1)
        truth = test[batch]
        hits = np.asarray(truth[np.arange(len(batch))[:, None], top].todense()) > 0
        n_true = np.diff(truth.indptr)
        recall.append(hits.sum(1) / np.minimum(n_true, k))
        ideal = np.array([discounts[: min(n, k)].sum() for n in n_true])
        ndcg.append((hits * discounts[:kk]).sum(1) / ideal)
    return {f"recall@{k}": float(np.concatenate(recall).mean()), f"ndcg@{k}": float(np.concatenate(ndcg).mean())}


def recommendation_quality(user_items: sp.csr_matrix, params: CFParams) -> dict:
    """Fit on all but a held-out share per user; score the held-out items against popularity."""
    train, test = holdout_split(user_items, params.eval_holdout, params.seed)
    user_f, item_f = fit_factors(train, params)
    popularity = np.asarray(train.sum(0)).ravel()
    model = ranking_metrics(lambda u: user_f[u] @ item_f.T, train, test, params.eval_k)
    pop = ranking_metrics(lambda u: np.broadcast_to(popularity, (len(u), len(popularity))), train, test, params.eval_k)
    return {"model": model, "popularity": pop, "heldout_interactions": int(test.nnz)}


def label_probe(vectors: np.ndarray, items: pd.DataFrame, splits: pd.DataFrame, has_cf: np.ndarray) -> dict:
    """Macro AP on test items of a logistic-regression probe from CF vectors to labels, vs label popularity.

    A high probe AP means the CF vectors carry label information: the premise of the method.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.preprocessing import StandardScaler

    split = splits_of(splits, items["item_id"])
    labelled = np.array([bool(x) for x in items["labels"]]) & has_cf
    train, test = labelled & (split == "train"), labelled & (split == "test")
    vocabulary = label_vocabulary(items.loc[train, "labels"])
    y = label_matrix(items["labels"], vocabulary)
    x = StandardScaler().fit(vectors[train]).transform(vectors)
    probe_scores, pop_scores, used = [], [], []
    for j in range(len(vocabulary)):
        if y[train, j].min() == y[train, j].max() or not y[test, j].any():
            continue
        clf = LogisticRegression(C=1.0, max_iter=500).fit(x[train], y[train, j])
        probe_scores.append(average_precision_score(y[test, j], clf.decision_function(x[test])))
        pop_scores.append(y[test, j].mean())  # AP of a constant score = prevalence
        used.append(vocabulary[j])
    probe = {
        "probe_map": float(np.mean(probe_scores)) if used else None,
        "popularity_map": float(np.mean(pop_scores)) if used else None,
        "labels_evaluated": len(used),
        "test_items": int(test.sum()),
    }
    if used:
        probe["lift"] = probe["probe_map"] / probe["popularity_map"]
        probe["verdict"] = probe_verdict(probe["lift"])
    return probe


CLEAR_LIFT, SOME_LIFT = 1.5, 1.1  # probe mAP / popularity mAP: clearly / somewhat above popularity


def probe_verdict(lift: float) -> str:
    """What the probe's lift over label popularity says (about the CF vectors, not about training)."""
    if lift >= CLEAR_LIFT:
        return "the interactions carry label information beyond popularity"
    if lift >= SOME_LIFT:
        return "the interactions carry some label information beyond popularity"
    return "the interactions carry little label information beyond popularity"


def probe_line(probe: dict) -> str:
    """One line on the label probe: 'label probe mAP 0.420 vs popularity 0.095 (x4.4; ...): the interactions ...'."""
    if probe["probe_map"] is None:
        return f"label probe: no label has training and test items with CF vectors ({probe['test_items']} test items)"
    counts = f"{probe['labels_evaluated']} labels, {probe['test_items']} test items"
    return (
        f"label probe mAP {probe['probe_map']:.3f} vs popularity {probe['popularity_map']:.3f} "
        f"(x{probe['lift']:.1f}; {counts}): {probe['verdict']}"
    )


def build_cf(items: pd.DataFrame, interactions: pd.DataFrame, splits: pd.DataFrame, params: CFParams) -> CFResult:
    """Fit CF item vectors for every catalogue item and measure their quality.

    Interactions of weight 0 (an impression without a click) are left out of the fit, with either
    `binarize` (counted in the report), and CF refuses a dataset where none is above 0. With `cold_start`,
    interactions of validation and test items are withheld from the fit; those items (and items without interactions) get zero vectors and
    n_interactions = 0, which the training loop reads as "no CF target".
    """
    report: dict = {"algorithm": params.algorithm, "cold_start": params.cold_start}
    used = interactions
    if params.cold_start:
        held = set(splits.loc[splits["split"] != "train", "item_id"])
        used = interactions[~interactions["item_id"].isin(held)]
        report["withheld_interactions"] = int(len(interactions) - len(used))
    zero = used["weight"].to_numpy() == 0  # an impression without a click: no evidence of interest, either way
    if zero.any():
        report["zero_weight_interactions"] = int(zero.sum())
        used = used[~zero]
    if not len(used):
        raise InteractionWeightError(
            "no interaction has a weight above 0 (weight 0 means no interest and is left out of the CF fit): "
            "the CF fit has nothing to learn from"
        )
    user_items = interaction_matrix(used, items["item_id"], params.binarize)
    n_interactions = np.asarray((user_items > 0).sum(0)).ravel().astype(np.int64)
    _, vectors = fit_factors(user_items, params)
    has_cf = n_interactions > 0
    vectors = np.where(has_cf[:, None], vectors, 0.0).astype(np.float32)
    report |= {
        "items": len(items),
        "items_with_vector": int(has_cf.sum()),
        "users": int(user_items.shape[0]),
        "interactions": int(user_items.nnz),
        "dim": int(vectors.shape[1]),
        "label_probe": label_probe(vectors, items, splits, has_cf),
    }
    if params.eval_holdout > 0:
        report["recommendation"] = recommendation_quality(user_items, params)
    index = pd.DataFrame({"item_id": items["item_id"].to_numpy(), "n_interactions": n_interactions})
    return CFResult(vectors=vectors, index=index, report=report)
