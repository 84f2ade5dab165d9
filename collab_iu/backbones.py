"""The backbone registry, created by name as timm does: name -> where its constructor lives and the
attribute of its ImageNet classifier. Light (torch is imported only when a backbone is built), so the
params schema validates `train.backbone` against it; `collab_iu.models.create_backbone` builds them.
A new backbone is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    constructor: str  # "module:attribute", called with weights=None for torchvision's
    classifier: str | None  # torchvision's ImageNet head (replaced by Identity); None: headless (ours)


BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone("torchvision.models:resnet18", "fc"),
    "mobilenet_v2": Backbone("torchvision.models:mobilenet_v2", "classifier"),
    "mobilenet_v3_small": Backbone("torchvision.models:mobilenet_v3_small", "classifier"),
    "mobilenet_v3_large": Backbone("torchvision.models:mobilenet_v3_large", "classifier"),
    "regnet_y_400mf": Backbone("torchvision.models:regnet_y_400mf", "fc"),
    "small_cnn": Backbone("collab_iu.models:SmallCNN", None),
}


def check_backbone(name: str) -> str:
    """`name` when it is registered; ValueError listing the registered names otherwise."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return name
