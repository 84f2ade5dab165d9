"""Backbones (every name, no downloads, local weights files) and the multitask model's heads."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from collab_iu import models
from collab_iu.backbones import BACKBONES
from collab_iu.models import MultitaskModel, create_backbone

# pooled feature sizes of the architectures, from their published definitions
FEAT_DIMS = {
    "resnet18": 512,
    "mobilenet_v2": 1280,
    "mobilenet_v3_small": 576,
    "mobilenet_v3_large": 960,
    "regnet_y_400mf": 440,
    "efficientnet_lite0": 1280,
    "small_cnn": 128,
}


@pytest.fixture
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)


@pytest.fixture
def resnet18_file(tmp_path):
    """A full torchvision resnet18 state dict (classifier included) saved with torch.save."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pt"
    torch.save(state, path)
    return path, state


def test_registry_names():
    assert set(BACKBONES) == set(FEAT_DIMS)


@pytest.mark.parametrize("name", list(FEAT_DIMS))
def test_every_backbone_gives_pooled_features(name, no_downloads):
    torch.manual_seed(0)
    backbone, feat_dim = create_backbone(name)
    assert feat_dim == FEAT_DIMS[name]
    backbone.eval()
    with torch.no_grad():
        h = backbone(torch.randn(2, 3, 64, 64))
    assert h.shape == (2, feat_dim)
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in backbone.modules())


def test_unknown_backbone_lists_the_names():
    with pytest.raises(ValueError, match="unknown backbone 'resnet50'") as err:
        create_backbone("resnet50")
    for name in FEAT_DIMS:
        assert name in str(err.value)


def test_weights_file_round_trip(resnet18_file, no_downloads):
    path, state = resnet18_file
    torch.manual_seed(2)  # a different random init, so equality can only come from the file
    backbone, _ = create_backbone("resnet18", weights=path)
    loaded = backbone.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("fc.")}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


def test_weights_file_without_classifier_keys(tmp_path, resnet18_file):
    _, state = resnet18_file
    path = tmp_path / "headless.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, path)
    backbone, _ = create_backbone("resnet18", weights=str(path))
    assert torch.equal(backbone.conv1.weight, state["conv1.weight"])


def test_weights_file_with_a_different_head_size(tmp_path, resnet18_file):
    """A fine-tuned checkpoint (here 19 classes) loads: the classifier is dropped, not loaded."""
    _, state = resnet18_file
    path = tmp_path / "finetuned.pt"
    torch.save(state | {"fc.weight": torch.zeros(19, 512), "fc.bias": torch.zeros(19)}, path)
    backbone, feat_dim = create_backbone("resnet18", weights=path)
    assert feat_dim == 512
    assert torch.equal(backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_weights_are_loaded_weights_only_on_the_cpu(resnet18_file, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    create_backbone("resnet18", weights=resnet18_file[0])
    assert calls == [{"map_location": "cpu", "weights_only": True}]


def test_missing_backbone_keys_are_named(tmp_path, resnet18_file):
    _, state = resnet18_file
    path = tmp_path / "partial.pt"
    torch.save({k: v for k, v in state.items() if k != "layer4.1.bn2.weight"}, path)
    with pytest.raises(ValueError, match=r"lacks 1 backbone keys: layer4\.1\.bn2\.weight"):
        create_backbone("resnet18", weights=path)


def test_unexpected_keys_are_reported(tmp_path, resnet18_file):
    _, state = resnet18_file
    path = tmp_path / "extra.pt"
    torch.save(state | {"projector.weight": torch.zeros(2, 2)}, path)
    with pytest.warns(UserWarning, match="projector.weight"):
        create_backbone("resnet18", weights=path)


def test_missing_weights_file_is_named(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        create_backbone("resnet18", weights=path)
    with pytest.raises(FileNotFoundError, match="DEFAULT"):
        create_backbone("resnet18", weights="DEFAULT")


def test_small_cnn_weights_round_trip(tmp_path):
    torch.manual_seed(3)
    source, _ = create_backbone("small_cnn")
    torch.save(source.state_dict(), tmp_path / "small.pt")
    torch.manual_seed(4)
    loaded, _ = create_backbone("small_cnn", weights=tmp_path / "small.pt")
    for (key, a), b in zip(source.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_multitask_output_shapes():
    model = MultitaskModel("small_cnn", num_labels=7, cf_dim=5)
    out = model(torch.randn(4, 3, 32, 32))
    assert set(out) == {"label_logits", "cf"}
    assert out["label_logits"].shape == (4, 7)
    assert out["cf"].shape == (4, 5)
    assert model.features(torch.randn(4, 3, 32, 32)).shape == (4, 128)


def test_multitask_without_cf_head():
    model = MultitaskModel("small_cnn", num_labels=3, cf_dim=0)
    assert model.cf_head is None
    out = model(torch.randn(4, 3, 32, 32))
    assert set(out) == {"label_logits"}
    assert out["label_logits"].shape == (4, 3)


def test_cf_head_is_the_papers_layer_sequence():
    head = MultitaskModel("small_cnn", num_labels=3, cf_dim=11).cf_head
    assert [type(m) for m in head] == [nn.BatchNorm1d, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head[0].num_features == 128
    assert (head[1].in_features, head[1].out_features) == (128, 128)
    assert head[2].num_features == 128
    assert (head[4].in_features, head[4].out_features) == (128, 11)


def test_multitask_model_loads_backbone_weights(resnet18_file):
    path, state = resnet18_file
    model = MultitaskModel("resnet18", num_labels=4, cf_dim=3, weights=path)
    assert torch.equal(model.backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert model.label_head.in_features == 512


def test_bad_head_sizes():
    with pytest.raises(ValueError):
        MultitaskModel("small_cnn", num_labels=0, cf_dim=4)
    with pytest.raises(ValueError):
        MultitaskModel("small_cnn", num_labels=2, cf_dim=-1)


def test_small_cnn_is_the_small_cpu_default():
    """The CPU default is a small network (its speed is a benchmark's: benchmarks/backbone_throughput.py, not a
    timed test): under 2 % of resnet18's parameters."""
    import torchvision

    small = sum(p.numel() for p in models.SmallCNN().parameters())
    assert small < 0.02 * sum(p.numel() for p in torchvision.models.resnet18().parameters())
