"""The training loop: a run learns, selects by validation mAP, and resumes to the same weights."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_params_tree

from collab_iu.artifacts import BEST, CHECKPOINT
from collab_iu.layout import dataset_layout
from collab_iu.params import params_from_dict
from collab_iu.stages import run_cache, run_cf, run_prepare, run_split
from collab_iu.train import load_training_data, train_model

TINY_TRAIN = {"epochs": 2, "batch_size": 32, "device": "cpu", "num_threads": 1}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    params = params_from_dict(tiny_params_tree(root, train=TINY_TRAIN))
    for stage in (run_prepare, run_split, run_cf, run_cache):
        stage(params)
    return params, dataset_layout(params)


class Interrupted(Exception):
    pass


def _stop_after_first_epoch(record: dict) -> None:
    if record["epoch"] == 1:
        raise Interrupted


def _weights(path):
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return saved.get("model", saved)


def test_label_ratio_limits_labelled_items(prepared):
    params, layout = prepared
    data = load_training_data(layout, params, label_ratio=0.2, seed=0)
    n_labelled_train = sum(1 for _ in data.train_labels if _.any())
    assert data.train_labelled.sum() == n_labelled_train  # only kept items carry labels
    full = load_training_data(layout, params, label_ratio=1.0, seed=0)
    assert data.train_labelled.sum() == round(0.2 * full.train_labelled.sum())
    assert data.cf_target.shape[0] == len(data.train_rows) == len(data.cf_confidence)


def test_interrupted_run_resumes_to_the_same_weights(prepared, tmp_path):
    params, layout = prepared
    data = load_training_data(layout, params, label_ratio=0.5, seed=0)
    straight = train_model(data, params.train, params.augment, tmp_path / "a", progress=False)
    with pytest.raises(Interrupted):
        train_model(
            data, params.train, params.augment, tmp_path / "b", progress=False, on_epoch_end=_stop_after_first_epoch
        )
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["state"]["epoch"] == 1
    resumed = train_model(data, params.train, params.augment, tmp_path / "b", progress=False)
    a, b = _weights(tmp_path / "a" / CHECKPOINT), _weights(tmp_path / "b" / CHECKPOINT)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    untimed = lambda history: [{k: v for k, v in r.items() if k != "images_per_s"} for r in history]  # noqa: E731
    assert untimed(resumed["history"]) == untimed(straight["history"])
    assert resumed["best_epoch"] == straight["best_epoch"]
    for name in (CHECKPOINT, BEST, "train.json"):  # the same files, byte for byte (DVC's hashes)
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_image_only_has_no_cf_head_and_history_per_epoch(prepared, tmp_path):
    params, layout = prepared
    data = load_training_data(layout, params, label_ratio=1.0, seed=1)
    p = params.train.model_copy(update={"cf_weight": 0.0})
    summary = train_model(data, p, params.augment, tmp_path, progress=False)
    assert [r["epoch"] for r in summary["history"]] == [1, 2]
    assert summary["best_val_map"] == max(r["val_map"] for r in summary["history"])
    assert not any(k.startswith("cf_head") for k in _weights(tmp_path / BEST))
    assert "loss_cf" not in summary["history"][0]


def test_cf_pretrain_runs_two_stages(prepared):
    """Stage 1 learns the CF target only; stage 2 starts from its backbone and learns labels only."""
    from collab_iu.artifacts import METRICS_JSON
    from collab_iu.experiment import train_run

    params, layout = prepared
    metrics = train_run(params, "cf_pretrain-r0.5-w2-s0", progress=False)
    run = layout.runs / "cf_pretrain-r0.5-w2-s0"
    stage1 = json.loads((run / "pretrain" / "train.json").read_text())
    assert stage1["epochs"] == params.experiment.pretrain_epochs
    assert all(r["loss_label"] > 0 and r["loss_total"] == pytest.approx(2.0 * r["loss_cf"]) for r in stage1["history"])
    pretrained, final = _weights(run / "pretrain" / BEST), _weights(run / BEST)
    assert any(k.startswith("cf_head") for k in pretrained) and not any(k.startswith("cf_head") for k in final)
    assert "loss_cf" not in json.loads((run / "train.json").read_text())["history"][0]
    assert (run / METRICS_JSON).exists() and 0 < metrics["test_map"] <= 1


def test_stage_two_starts_from_the_pretrained_backbone(prepared, tmp_path):
    params, layout = prepared
    data = load_training_data(layout, params, label_ratio=1.0, seed=0)
    cf_only = params.train.model_copy(update={"label_weight": 0.0, "epochs": 1})
    train_model(data, cf_only, params.augment, tmp_path / "s1", progress=False)
    labels_only = params.train.model_copy(update={"cf_weight": 0.0, "epochs": 1, "lr": 1e-12})
    init = tmp_path / "s1" / BEST
    train_model(data, labels_only, params.augment, tmp_path / "s2", progress=False, init_backbone=init)
    before, after = _weights(init), _weights(tmp_path / "s2" / BEST)
    conv = next(k for k in before if k.startswith("backbone.") and k.endswith("weight"))
    assert torch.allclose(before[conv], after[conv], atol=1e-6)  # lr ~ 0: the stage-1 weights carried over


def test_same_inputs_give_byte_identical_run_files(prepared, tmp_path):
    """Training writes no timing and no temporary name: DVC hashes of a run folder are reproducible."""
    params, layout = prepared
    data = load_training_data(layout, params, label_ratio=1.0, seed=0)
    seen = []
    for name in ("a", "b"):
        train_model(data, params.train, params.augment, tmp_path / name, progress=False, on_epoch_end=seen.append)
    for file in ("train.json", BEST, CHECKPOINT):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    assert "images_per_s" not in (tmp_path / "a" / "train.json").read_text()
    assert all(record["images_per_s"] > 0 for record in seen)  # the throughput is reported to the observers


def test_image_only_reads_no_cf_output(prepared, tmp_path):
    """An image_only run trains without the CF folder, and a new CF fit leaves its config (so its reuse) alone."""
    import shutil

    from collab_iu.experiment import run_config, train_run
    from collab_iu.grid import parse_run_key

    params, layout = prepared
    shutil.copytree(layout.root, tmp_path / "data")
    params = params.model_copy(update={"data": params.data.model_copy(update={"root": tmp_path / "data"})})
    moved = dataset_layout(params)
    image_only, with_cf = parse_run_key("image_only-r1-w0-s0"), parse_run_key("with_cf-r1-w2-s0")
    before = {spec.method: run_config(params, spec, moved)["config_hash"] for spec in (image_only, with_cf)}
    run_cf(params.model_copy(update={"cf": params.cf.model_copy(update={"factors": params.cf.factors + 2})}))
    after = {spec.method: run_config(params, spec, moved)["config_hash"] for spec in (image_only, with_cf)}
    assert after["image_only"] == before["image_only"] and after["with_cf"] != before["with_cf"]

    shutil.rmtree(moved.cf)
    metrics = train_run(params, image_only, progress=False)
    assert metrics["test_map"] > 0 and metrics["val_cf_r2"] is None
    with pytest.raises(FileNotFoundError):
        train_run(params, with_cf, progress=False)
