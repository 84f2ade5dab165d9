"""The feature cache and the modes that train from it (train.finetune: tail, heads), and the warm-item method."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_params_tree

from collab_iu.artifacts import BEST, TEST_ITEMS, TEST_SCORES, load_prepared
from collab_iu.backbone_blocks import cut, pool
from collab_iu.backbones import BACKBONES
from collab_iu.experiment import load_run_model, train_run
from collab_iu.features import FeatureCacheError, feature_dir, feature_spec, load_features
from collab_iu.image_cache import load_image_cache
from collab_iu.layout import dataset_layout
from collab_iu.models import backbone_blocks, create_backbone
from collab_iu.params import ParamsError, params_from_dict
from collab_iu.predict import ModelFolderError, load_predictor
from collab_iu.stages import run_cache, run_cf, run_features, run_prepare, run_split
from collab_iu.train import load_training_data, predict_scores, train_model

TRAIN = {"epochs": 2, "batch_size": 32, "device": "cpu", "num_threads": 1, "finetune": "tail", "tail_blocks": 1}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_the_blocks_of_every_backbone_compose_to_it(name):
    """Every cut of every registered backbone gives its features: the frozen part, then the trainable tail."""
    torch.manual_seed(0)
    model, feat_dim = create_backbone(name)
    model.eval()
    blocks = backbone_blocks(name, model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        whole = model(x)
        for trainable in (0, 1, len(blocks) - 1):
            frozen, tail = cut(blocks, trainable)
            assert torch.allclose(tail(frozen(x)), whole, atol=1e-5), trainable
    assert whole.shape == (2, feat_dim) and pool(whole) is whole
    with pytest.raises(ValueError, match=f"trainable blocks must be 0 to {len(blocks) - 1}"):
        cut(blocks, len(blocks))


def _weights(path, seed: int = 0):
    torch.manual_seed(seed)
    model, _ = create_backbone("small_cnn")
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A tiny prepared, split, CF-fitted and cached dataset, and a small_cnn weights file."""
    root = tmp_path_factory.mktemp("features")
    params = params_from_dict(tiny_params_tree(root / "data"))
    for stage in (run_prepare, run_split, run_cf, run_cache):
        stage(params)
    return root, _weights(root / "small_cnn.pt")


def _params(data_root, **train):
    root, weights = data_root
    return params_from_dict(tiny_params_tree(root / "data", train=TRAIN | {"weights": weights} | train))


def test_finetune_from_features_needs_pretrained_weights(tmp_path):
    with pytest.raises(ParamsError, match="it needs pretrained weights"):
        params_from_dict(tiny_params_tree(tmp_path, train={"finetune": "heads"}))


def test_the_cache_is_reused_and_a_new_one_built_for_each_backbone_weights_resolution_and_cut(data_root, tmp_path):
    params = _params(data_root)
    layout = dataset_layout(params)
    first = run_features(params)
    assert first["reused"] is False and first["shape"][1:] == [2, 64, 4, 4]  # two views (flip), after stage 2
    features = feature_dir(layout, feature_spec(params)) / "features.npy"
    stamp = features.stat().st_mtime_ns
    assert run_features(params)["reused"] is True and features.stat().st_mtime_ns == stamp
    other_weights = _weights(tmp_path / "other.pt", seed=1)
    changed = {
        "resolution": _params(data_root).model_copy(
            update={"augment": params.augment.model_copy(update={"output_size": 12})}
        ),
        "cut": _params(data_root, tail_blocks=2),
        "heads": _params(data_root, finetune="heads"),
        "weights": _params(data_root, weights=other_weights),
        "backbone": _params(data_root, backbone="efficientnet_lite0", weights="imagenet"),  # packaged: no network
        "no flip": _params(data_root).model_copy(update={"augment": params.augment.model_copy(update={"flip": False})}),
    }
    keys = {feature_spec(p).key for p in changed.values()} | {feature_spec(params).key}
    assert len(keys) == len(changed) + 1  # each its own cache
    for name, other in changed.items():
        report = run_features(other)
        assert report["reused"] is False, name
    assert run_features(changed["heads"])["shape"][1:] == [2, 128]  # pooled features
    assert run_features(changed["cut"])["shape"][1:] == [2, 32, 8, 8]
    assert features.stat().st_mtime_ns == stamp  # the first cache is still there, untouched


def test_a_cache_from_other_weights_or_images_is_refused_then_rebuilt(data_root, tmp_path):
    root, _ = data_root
    weights = _weights(tmp_path / "w.pt")
    params = _params(data_root, weights=weights)
    layout = dataset_layout(params)
    spec = feature_spec(params)
    run_features(params)
    load_features(layout, spec)
    _weights(tmp_path / "w.pt", seed=7)  # the same file name, other weights
    with pytest.raises(FeatureCacheError, match="was built from another image cache or weights.*collab-iu features"):
        load_features(layout, spec)
    with pytest.raises(FeatureCacheError):
        load_training_data(layout, params, 1.0, 0)
    assert run_features(params)["reused"] is False
    load_features(layout, spec)
    shutil.rmtree(feature_dir(layout, spec))
    with pytest.raises(FeatureCacheError, match="is missing"):
        load_features(layout, spec)


def test_a_run_from_the_feature_cache_trains_only_the_tail_and_predicts_from_pixels(data_root):
    params = _params(data_root)
    layout = dataset_layout(params)
    run_features(params)
    key = "with_cf-r1-w2-s0"
    metrics = train_run(params, key, progress=False)
    run_dir = layout.runs / key
    # best.pt is the whole network: its frozen blocks are the weights file's, unchanged
    start = torch.load(params.train.weights, weights_only=True)
    best = torch.load(run_dir / BEST, weights_only=True)
    frozen = [k for k in start if k.startswith(("0.", "1."))]  # small_cnn's first stage (conv, BN)
    tail = [k for k in start if k.startswith(("7.", "8."))]  # its last stage: trained
    assert frozen and all(torch.equal(best[f"backbone.{k}"], start[k]) for k in frozen)
    assert any(not torch.equal(best[f"backbone.{k}"], start[k]) for k in tail)
    # the test scores (from the cached features) are the whole network's from pixels, to float16 precision
    model, info = load_predictor(run_dir)
    items, _ = load_prepared(layout)
    cache = load_image_cache(layout.cache)
    test_ids = pd.read_parquet(run_dir / TEST_ITEMS)["item_id"]
    rows = cache.rows(test_ids)
    pixels = predict_scores(model, cache.images, rows, info["input_size"], torch.device("cpu"))
    np.testing.assert_allclose(pixels, np.load(run_dir / TEST_SCORES), atol=2e-3)
    assert 0 <= metrics["test_map"] <= 1 and json.loads((run_dir / "model.json").read_text())["cf_input_dim"] == 0


def test_heads_mode_trains_the_heads_alone(data_root):
    params = _params(data_root, finetune="heads")
    layout = dataset_layout(params)
    run_features(params)
    train_run(params, "image_only-r1-w0-s0", progress=False)
    start = torch.load(params.train.weights, weights_only=True)
    best = torch.load(layout.runs / "image_only-r1-w0-s0" / BEST, weights_only=True)
    assert all(torch.equal(best[f"backbone.{k}"], v) for k, v in start.items())  # no backbone weight moved


def _with_shuffled_test_labels(root, dest):
    """A copy of the data root whose prepared test items carry other labels (their split unchanged)."""
    shutil.copytree(root / "data", dest / "data")
    prepared = dest / "data" / "synthetic" / "prepared" / "items.parquet"
    items = pd.read_parquet(prepared)
    split = pd.read_parquet(dest / "data" / "synthetic" / "split" / "splits.parquet").set_index("item_id")["split"]
    test = items["item_id"].map(split).eq("test").to_numpy()
    labels = items["labels"].to_numpy().copy()
    labels[test] = np.roll(labels[test], 1)
    items["labels"] = labels
    items.to_parquet(prepared, index=False)
    return test.sum()


def test_the_warm_item_method_never_sees_test_labels(data_root, tmp_path):
    root, weights = data_root
    params = _params(data_root, finetune="full", weights=None)
    assert _with_shuffled_test_labels(root, tmp_path) > 0
    other = params_from_dict(tiny_params_tree(tmp_path / "data", train=TRAIN | {"finetune": "full"}))
    states = []
    for p, out in ((params, tmp_path / "a"), (other, tmp_path / "b")):
        data = load_training_data(dataset_layout(p), p, 1.0, 0, cf_input=True)
        train_model(data, p.train.model_copy(update={"cf_weight": 0.0}), p.augment, out, progress=False)
        states.append(torch.load(out / BEST, weights_only=True))
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_the_warm_item_method_reads_cf_vectors_and_predict_refuses_it(data_root):
    params = _params(data_root, finetune="full", weights=None)
    layout = dataset_layout(params)
    metrics = train_run(params, "warm_image_cf-r1-w0-s0", progress=False)
    run_dir = layout.runs / "warm_image_cf-r1-w0-s0"
    info = json.loads((run_dir / "model.json").read_text())
    assert info["cf_input_dim"] == 8 and 0 <= metrics["test_map"] <= 1  # tiny CF: 8 factors
    model, _ = load_run_model(run_dir)
    with pytest.raises(ValueError, match="it needs their CF vectors"):
        model(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ModelFolderError, match="classifies warm items from their CF vectors"):
        load_predictor(run_dir)
