"""How well a CF head predicts CF vectors: R² and cosine on known arrays, and measured on every trained run."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import tiny_params_tree

from collab_iu.artifacts import METRICS_JSON, load_prepared, load_splits
from collab_iu.cf_fit import cf_fit_quality
from collab_iu.experiment import train_run
from collab_iu.image_cache import load_image_cache
from collab_iu.layout import dataset_layout
from collab_iu.params import params_from_dict
from collab_iu.stages import run_cache, run_cf, run_prepare, run_split
from collab_iu.train import VAL_CF_KEYS, TrainingData, load_training_data, train_model


@pytest.fixture
def target() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(50, 4)) * [1.0, 2.0, 0.5, 3.0] + [1.0, -2.0, 0.0, 5.0]


def test_perfect_prediction(target):
    assert cf_fit_quality(target, target) == {"r2": pytest.approx(1.0), "cosine": pytest.approx(1.0), "items": 50}


def test_predicting_the_mean_scores_r2_zero(target):
    assert cf_fit_quality(np.broadcast_to(target.mean(0), target.shape), target)["r2"] == pytest.approx(0.0, abs=1e-12)


def test_negated_prediction_has_cosine_minus_one(target):
    quality = cf_fit_quality(-target, target)
    assert quality["cosine"] == pytest.approx(-1.0)
    assert quality["r2"] < 0


def test_r2_is_pooled_over_dimensions(target):
    """SSE and SST summed over every dimension: sklearn's variance-weighted multi-output R²."""
    from sklearn.metrics import r2_score

    pred = target + np.random.default_rng(1).normal(size=target.shape)
    expected = 1 - ((pred - target) ** 2).sum() / ((target - target.mean(0)) ** 2).sum()
    r2 = cf_fit_quality(pred, target)["r2"]
    assert r2 == pytest.approx(expected) == r2_score(target, pred, multioutput="variance_weighted")
    assert 0 < r2 < 1


def test_cosine_ignores_scale_but_not_direction(target):
    assert cf_fit_quality(3.0 * target, target)["cosine"] == pytest.approx(1.0)
    orthogonal = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert cf_fit_quality(orthogonal[::-1], orthogonal)["cosine"] == pytest.approx(0.0)


def test_nothing_to_measure_is_none():
    assert cf_fit_quality(np.zeros((0, 3)), np.zeros((0, 3))) == {"r2": None, "cosine": None, "items": 0}
    constant = np.ones((5, 2))
    assert cf_fit_quality(constant, constant)["r2"] is None  # no variance to explain
    assert cf_fit_quality(np.full((5, 2), np.nan), constant)["cosine"] is None  # a diverged model


def test_shapes_must_match():
    with pytest.raises(ValueError, match="one shape"):
        cf_fit_quality(np.zeros((3, 2)), np.zeros((3, 4)))


# ---------------------------------------------------------------------------- measured on trained runs


def _prepare(root: Path, **groups) -> tuple:
    params = params_from_dict(tiny_params_tree(root, **groups))
    for stage in (run_prepare, run_split, run_cf, run_cache):
        stage(params)
    return params, dataset_layout(params)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return _prepare(tmp_path_factory.mktemp("cf_fit"))


def test_validation_targets_are_prepared_like_the_training_targets(prepared):
    """Centred and scaled with the training items' mean and scale; validation items only."""
    params, layout = prepared
    assert params.train.standardize_cf
    data = load_training_data(layout, params, label_ratio=0.5, seed=0)
    items, _ = load_prepared(layout)
    split = load_splits(layout).set_index("item_id")["split"].reindex(items["item_id"]).to_numpy()
    rows = load_image_cache(layout.cache).rows(items["item_id"])
    vectors = np.load(layout.cf / "item_vectors.npy")
    has = pd.read_parquet(layout.cf / "item_index.parquet")["n_interactions"].to_numpy() > 0
    train, val = (split == "train") & (rows >= 0), (split == "val") & (rows >= 0)
    mean = vectors[train & has].mean(0)
    scale = np.sqrt(vectors[train & has].var(0).mean())
    np.testing.assert_array_equal(data.val_rows, rows[val])
    np.testing.assert_array_equal(data.val_has_cf, has[val])
    assert data.val_has_cf.any()
    expected = np.where(has[val][:, None], (vectors[val] - mean) / scale, 0.0)
    np.testing.assert_allclose(data.val_cf_target, expected, rtol=1e-4, atol=1e-5)
    train_expected = np.where(has[train][:, None], (vectors[train] - mean) / scale, 0.0)
    np.testing.assert_allclose(data.cf_target, train_expected, rtol=1e-4, atol=1e-5)


def test_metrics_hold_the_cf_fit_of_runs_with_a_cf_head(prepared):
    params, layout = prepared
    with_cf = train_run(params, "with_cf-r0.5-w2-s0", progress=False)
    saved = json.loads((layout.runs / "with_cf-r0.5-w2-s0" / METRICS_JSON).read_text())
    assert {k: saved[k] for k in VAL_CF_KEYS} == {k: with_cf[k] for k in VAL_CF_KEYS}
    assert math.isfinite(saved["val_cf_r2"]) and saved["val_cf_r2"] <= 1
    assert -1 <= saved["val_cf_cosine"] <= 1
    data = load_training_data(layout, params, label_ratio=0.5, seed=0)
    assert saved["val_cf_items"] == int(data.val_has_cf.sum()) > 0
    history = json.loads((layout.runs / "with_cf-r0.5-w2-s0" / "train.json").read_text())["history"]
    assert saved["val_cf_r2"] == history[saved["best_epoch"] - 1]["val_cf_r2"]  # the best epoch's head

    for key in ("image_only-r0.5-w0-s0", "triplet-r0.5-w2-s0"):  # no CF head; a head of embeddings
        train_run(params, key, progress=False)
        saved = json.loads((layout.runs / key / METRICS_JSON).read_text())
        assert {k: saved[k] for k in VAL_CF_KEYS} == dict.fromkeys(VAL_CF_KEYS), key
        history = json.loads((layout.runs / key / "train.json").read_text())["history"]
        assert not any(k.startswith("val_cf") for r in history for k in r), key


def test_cf_pretrain_reports_its_pretraining_head(prepared):
    params, layout = prepared
    metrics = train_run(params, "cf_pretrain-r0.5-w2-s0", progress=False)
    stage1 = json.loads((layout.runs / "cf_pretrain-r0.5-w2-s0" / "pretrain" / "train.json").read_text())
    assert metrics["val_cf_r2"] == stage1["history"][-1]["val_cf_r2"] is not None
    assert metrics["val_cf_items"] > 0


def test_cold_start_has_no_validation_targets(tmp_path):
    params, layout = _prepare(tmp_path / "data", cf={"cold_start": True}, train={"epochs": 1})
    metrics = train_run(params, "with_cf-r0.5-w2-s0", progress=False)
    assert (metrics["val_cf_items"], metrics["val_cf_r2"], metrics["val_cf_cosine"]) == (0, None, None)


def _colour_target(data: TrainingData) -> TrainingData:
    """A CF target the pixels determine (each image's mean colour, standardised) for every item."""

    def colour(rows: np.ndarray) -> np.ndarray:
        return data.images[rows].reshape(len(rows), -1, 3).mean(1).astype(np.float32)

    train, val = colour(data.train_rows), colour(data.val_rows)
    mean, scale = train.mean(0), train.std()
    return dataclasses.replace(
        data,
        cf_target=(train - mean) / scale,
        cf_confidence=np.ones(len(train), np.float32),
        val_cf_target=(val - mean) / scale,
        val_has_cf=np.ones(len(val), bool),
    )


def test_r2_is_high_when_pixels_determine_the_target_and_not_otherwise(prepared, tmp_path):
    """The mechanism: a head trained on a learnable target predicts unseen items; on noise it cannot."""
    params, layout = prepared
    learnable = _colour_target(load_training_data(layout, params, label_ratio=1.0, seed=0))
    rng = np.random.default_rng(0)
    noise = dataclasses.replace(
        learnable,
        cf_target=rng.normal(size=learnable.cf_target.shape).astype(np.float32),
        val_cf_target=rng.normal(size=learnable.val_cf_target.shape).astype(np.float32),
    )
    cf_only = params.train.model_copy(
        update={"cf_weight": 10.0, "label_weight": 0.0, "cf_loss": "mse", "epochs": 8, "lr": 3e-3}
    )
    untrained = cf_only.model_copy(update={"epochs": 1, "lr": 1e-12})
    runs = {"learnable": (learnable, cf_only), "untrained": (learnable, untrained), "noise": (noise, cf_only)}
    fit = {name: train_model(d, p, params.augment, tmp_path / name, progress=False) for name, (d, p) in runs.items()}
    assert fit["learnable"]["val_cf_r2"] > 0.6 and fit["learnable"]["val_cf_cosine"] > 0.8
    assert fit["untrained"]["val_cf_r2"] < 0.1 and fit["noise"]["val_cf_r2"] < 0.1
    assert fit["learnable"]["val_cf_items"] == len(learnable.val_rows)
