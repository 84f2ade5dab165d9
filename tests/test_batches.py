"""The input path (collab_iu/batches.py): the device-resident cache and the prefetching thread give the same
batches, so a run's result does not depend on the way; the training loop's options (compile, GPU stats)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny_params_tree

from collab_iu.artifacts import BEST, CHECKPOINT
from collab_iu.batches import fits_on_device, image_source
from collab_iu.gpu_stats import GpuStats
from collab_iu.layout import dataset_layout
from collab_iu.params import params_from_dict
from collab_iu.stages import run_cache, run_cf, run_prepare, run_split
from collab_iu.train import load_training_data, train_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("batches")
    params = params_from_dict(tiny_params_tree(root, train={"epochs": 2, "batch_size": 16, "num_threads": 1}))
    for step in (run_prepare, run_split, run_cf, run_cache):
        step(params)
    return params, dataset_layout(params)


def test_both_ways_give_the_same_batches_in_order():
    images = np.random.default_rng(0).integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    rows = [np.array([3, 1, 4]), np.array([1, 5, 9, 2, 6]), np.array([49])]
    resident, prefetched = image_source(images, CPU, "device"), image_source(images, CPU, "prefetch")
    assert (resident.mode, prefetched.mode) == ("device", "prefetch")
    for a, b, r in zip(resident.batches(rows), prefetched.batches(rows), rows, strict=True):
        assert a.dtype == b.dtype == torch.uint8 and torch.equal(a, b) and torch.equal(a, torch.from_numpy(images[r]))


def test_auto_keeps_the_cache_memory_mapped_on_the_cpu():
    images = np.zeros((4, 8, 8, 3), np.uint8)
    assert image_source(images, CPU, "auto").mode == "prefetch" and not fits_on_device(1, CPU, 0.5)


def test_a_gathering_error_reaches_the_training_loop_and_an_early_stop_ends_the_thread():
    images = np.zeros((10, 4, 4, 3), np.uint8)
    source = image_source(images, CPU, "prefetch")
    with pytest.raises(IndexError):
        list(source.batches([np.array([0]), np.array([99])]))  # row 99 does not exist
    many = source.batches([np.array([i % 10]) for i in range(1000)])
    next(many)
    many.close()  # the consumer stops after one batch: the gatherer must not hang on a full queue
    import threading

    assert not [t for t in threading.enumerate() if t.name == "collab_iu-prefetch" and t.is_alive()]


def test_a_run_trains_to_the_same_files_either_way(prepared, tmp_path):
    params, layout = prepared
    data = load_training_data(layout, params, label_ratio=1.0, seed=0)
    for mode in ("device", "prefetch"):
        train = params.train.model_copy(update={"input": mode})
        train_model(data, train, params.augment, tmp_path / mode, progress=False)
    for name in ("train.json", BEST, CHECKPOINT):
        assert (tmp_path / "device" / name).read_bytes() == (tmp_path / "prefetch" / name).read_bytes(), name


def test_compile_wraps_the_forward_pass_and_reports_its_time(prepared, tmp_path, monkeypatch):
    """train.compile: the steps run through torch.compile's module, the saved weights are the plain model's,
    and the first epoch's record says how long the first (compiling) step took."""
    params, layout = prepared
    data = load_training_data(layout, params, label_ratio=1.0, seed=0)
    compiled = []

    def fake_compile(model):  # the real one needs a C++ toolchain and a minute: the wiring is what is tested
        compiled.append(model)
        return lambda x: model(x)

    monkeypatch.setattr(torch, "compile", fake_compile)
    records = []
    train = params.train.model_copy(update={"compile": True})
    train_model(data, train, params.augment, tmp_path / "c", progress=False, on_epoch_end=records.append)
    assert len(compiled) == 1
    assert records[0]["compile_s"] > 0 and "compile_s" not in records[1]
    saved = torch.load(tmp_path / "c" / BEST, weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in saved)
    assert "compile_s" not in (tmp_path / "c" / "train.json").read_text()


def test_gpu_stats_are_empty_on_the_cpu(prepared, tmp_path):
    assert GpuStats(CPU).report() == {}
    params, layout = prepared
    data = load_training_data(layout, params, label_ratio=1.0, seed=0)
    summary = train_model(data, params.train, params.augment, tmp_path / "r", progress=False)
    assert "gpu_memory_peak_gb" not in summary and "gpu_memory_peak_gb" not in json.loads(
        (tmp_path / "r" / "train.json").read_text()
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_cache_goes_to_the_device_and_the_run_reports_its_gpu(prepared, tmp_path):
    params, layout = prepared
    data = load_training_data(layout, params, label_ratio=1.0, seed=0)
    cuda = torch.device("cuda")
    assert image_source(data.images, cuda, "auto").mode == "device"  # a tiny cache fits
    train = params.train.model_copy(update={"device": "cuda"})
    summary = train_model(data, train, params.augment, tmp_path / "g", progress=False)
    assert summary["gpu_memory_peak_gb"] > 0
