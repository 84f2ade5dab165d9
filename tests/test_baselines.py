"""The paper's baselines: loss_based confidence, triplet positives, and every method trains end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import tiny_params_tree

from collab_iu.experiment import run_train_params, train_run
from collab_iu.grid import METHODS, RunSpec
from collab_iu.layout import dataset_layout
from collab_iu.loss_based import loss_based_raw
from collab_iu.params import params_from_dict
from collab_iu.positives import CoInteractions
from collab_iu.stages import run_cache, run_cf, run_prepare, run_split


def _informative_and_noisy(n: int = 400, labels: int = 4, seed: int = 0):
    """CF vectors that name the label for the first half of the items and are pure noise for the rest."""
    rng = np.random.default_rng(seed)
    y = np.eye(labels, dtype=np.float32)[rng.integers(labels, size=n)]
    noise = rng.normal(size=(n, 8)).astype(np.float32)
    cf = noise.copy()
    informative = np.arange(n) < n // 2
    cf[informative, :labels] += 4 * y[informative]
    return cf, y, informative


def test_loss_based_confidence_is_higher_where_cf_predicts_the_labels():
    cf, y, informative = _informative_and_noisy()
    labelled = np.arange(len(cf)) % 4 != 0  # a quarter is unlabelled
    has_cf = np.ones(len(cf), bool)
    has_cf[[3, 250]] = False
    raw = loss_based_raw(cf, np.where(labelled[:, None], y, 0), labelled, has_cf, seed=0)
    assert raw[3] == 0 and raw[250] == 0 and (raw[has_cf] > 0).all()
    for group in (labelled, ~labelled):  # cross-fitted losses, and expected losses for the unlabelled
        good, bad = raw[group & informative & has_cf], raw[group & ~informative & has_cf]
        assert np.median(good) > 2 * np.median(bad)
    again = loss_based_raw(cf, np.where(labelled[:, None], y, 0), labelled, has_cf, seed=0)
    np.testing.assert_array_equal(raw, again)


def test_loss_based_with_too_few_labelled_items_is_uniform():
    cf, y, _ = _informative_and_noisy(n=20)
    labelled = np.zeros(20, bool)
    labelled[:3] = True
    assert loss_based_raw(cf, y, labelled, np.ones(20, bool), seed=0).tolist() == [1.0] * 20


def test_positives_share_a_user_with_their_anchor():
    interactions = pd.DataFrame(
        {"user_id": ["u1", "u1", "u2", "u2", "u3", "u4", "u4"], "item_id": ["a", "b", "b", "c", "d", "x", "a"]}
    )
    train = np.array(["a", "b", "c", "d"])  # x is not a training item
    co = CoInteractions.build(interactions, train)
    users = interactions.groupby("item_id")["user_id"].apply(set)
    rng = np.random.default_rng(0)
    for _ in range(20):
        positive = co.sample(np.arange(4), rng)
        assert positive[3] == -1  # d's only user has no other training item
        for anchor, p in zip(range(3), positive[:3]):
            assert p != anchor and users[train[anchor]] & users[train[p]]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    params = params_from_dict(tiny_params_tree(root, train={"schedule": "multistep", "milestones": [1]}))
    for stage in (run_prepare, run_split, run_cf, run_cache):
        stage(params)
    return params, dataset_layout(params)


def test_each_method_sets_its_confidence_or_cf_loss(prepared):
    params, _ = prepared
    spec = lambda method: RunSpec(method, 0.5, 0.0 if method == "image_only" else 2.0, 0)  # noqa: E731
    assert run_train_params(params, spec("with_cf_loss_based")).confidence == "loss_based"
    assert run_train_params(params, spec("with_cf_num_interactions")).confidence == "num_interactions"
    triplet = run_train_params(params, spec("triplet"))
    assert (triplet.cf_loss, triplet.confidence) == ("triplet", "uniform")
    assert run_train_params(params, spec("with_cf")).cf_loss == params.train.cf_loss
    assert set(METHODS) == {
        "image_only",
        "with_cf",
        "with_cf_num_interactions",
        "with_cf_loss_based",
        "triplet",
        "cf_pretrain",
        "warm_image_cf",
    }


@pytest.mark.parametrize("method", ["with_cf_loss_based", "with_cf_num_interactions", "triplet"])
def test_baseline_methods_train_and_score(prepared, method):
    params, layout = prepared
    key = f"{method}-r0.5-w2-s0"
    metrics = train_run(params, key, progress=False)
    run = layout.runs / key
    history = json.loads((run / "train.json").read_text())["history"]
    assert 0 < metrics["test_map"] <= 1 and metrics["method"] == method
    assert all(r["loss_cf"] > 0 for r in history)
    assert [r["lr"] for r in history] == [pytest.approx(params.train.lr), pytest.approx(params.train.lr * 0.1)]
    model = json.loads((run / "model.json").read_text())
    assert model["cf_dim"] == params.cf.factors  # the CF head is part of the saved model
