"""Backbones (global-pooled feature extractors) and the multitask model: a label head and a CF head.

Backbones are built with random weights or from a local state-dict file: nothing is
ever downloaded (torchvision's default pretrained weights would be fetched from the internet).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from collab_iu.backbones import BACKBONES, check_backbone
from collab_iu.errors import UserError

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


def load_weights(model: nn.Module, path: str | Path, ignore_prefix: str | None = None) -> None:
    """Load a local state-dict file into `model` (CPU, `weights_only=True`).

    Keys under `ignore_prefix` (the classifier) may be absent and are never loaded, so a head
    of any size is accepted. Raises FileNotFoundError, or ValueError listing the missing keys;
    warns about unexpected keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone weights file not found: {path} (weights must be None or a local .pt/.pth state dict; "
            "nothing is downloaded)"
        )
    state = load_weights_file(path)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    if ignore_prefix:
        state = {k: v for k, v in state.items() if not k.startswith(ignore_prefix)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (ignore_prefix and k.startswith(ignore_prefix))]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} backbone keys: {', '.join(missing)}")
    if result.unexpected_keys:
        unexpected = result.unexpected_keys
        warnings.warn(f"{path}: ignored {len(unexpected)} unexpected keys: {', '.join(unexpected)}", stacklevel=3)


def _strip_classifier(model: nn.Module, attr: str) -> int:
    """Replace the classifier by Identity; returns the pooled feature size it took as input."""
    linear = next(m for m in getattr(model, attr).modules() if isinstance(m, nn.Linear))
    setattr(model, attr, nn.Identity())
    return linear.in_features


def create_backbone(name: str, weights: str | Path | None = None) -> tuple[nn.Module, int]:
    """A feature extractor mapping N x 3 x H x W to global-pooled N x feat_dim features, and feat_dim.

    weights: None (random init) or a local state-dict file for the full model, with or
    without its classifier keys.
    """
    spec = BACKBONES[check_backbone(name)]
    module, attribute = spec.constructor.split(":")
    constructor = getattr(importlib.import_module(module), attribute)
    model = constructor(weights=None) if spec.classifier else constructor()
    classifier = spec.classifier
    if weights is not None:
        load_weights(model, weights, f"{classifier}." if classifier else None)
    feat_dim = _strip_classifier(model, classifier) if classifier else model.feat_dim
    return model, feat_dim


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
    """Backbone + multi-label head + (when cf_dim > 0) a head regressing the item's CF vector."""

    def __init__(self, backbone_name: str, num_labels: int, cf_dim: int, weights: str | Path | None = None):
        super().__init__()
        if num_labels < 1 or cf_dim < 0:
            raise ValueError(f"need num_labels >= 1 and cf_dim >= 0, got {num_labels} and {cf_dim}")
        self.backbone, self.feat_dim = create_backbone(backbone_name, weights)
        self.label_head = nn.Linear(self.feat_dim, num_labels)
        self.cf_head = cf_head(self.feat_dim, cf_dim) if cf_dim else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"label_logits": N x num_labels, "cf": N x cf_dim (only with a CF head)}."""
        h = self.features(x)
        out = {"label_logits": self.label_head(h)}
        if self.cf_head is not None:
            out["cf"] = self.cf_head(h)
        return out
