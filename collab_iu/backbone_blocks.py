"""A backbone as a chain of blocks, so it can be cut: the frozen blocks before the cut run once per image (the
feature cache, collab_iu/features.py) and the trainable blocks after it train from their output.

Each backbone of the registry (collab_iu/backbones.py) names the function here that lists its blocks
(`collab_iu.models.backbone_blocks` calls it). Applied in
turn to a normalised image and then global-average-pooled (`pool`), the blocks give exactly the backbone's
features. The blocks are views of the backbone's own modules: training them trains the backbone, and its
state dict stays the whole model's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Block(nn.Module):
    """One block: `fn(x)` over modules the backbone owns (registered here too, for their parameters)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *parts: nn.Module):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling of N x C x H x W maps to N x C features (a pooled input is returned as is)."""
    return x.mean((2, 3)) if x.dim() == 4 else x


def sequential_blocks(model: nn.Sequential) -> list[nn.Module]:
    """small_cnn: its conv-BN-ReLU stages (the max pool goes with the second); its own pooling is `pool`."""
    layers = [m for m in model if not isinstance(m, nn.AdaptiveAvgPool2d | nn.Flatten)]
    starts = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    return [nn.Sequential(*layers[a:b]) for a, b in zip(starts, [*starts[1:], len(layers)], strict=True)]


def resnet_blocks(model: nn.Module) -> list[nn.Module]:
    """torchvision's ResNets: the stem, then layer1 to layer4."""
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    return [stem, model.layer1, model.layer2, model.layer3, model.layer4]


def features_blocks(model: nn.Module) -> list[nn.Module]:
    """torchvision's MobileNets: the entries of `features` (the last is the 1x1 head convolution)."""
    return list(model.features)


def regnet_blocks(model: nn.Module) -> list[nn.Module]:
    """torchvision's RegNets: the stem, then the four stages of the trunk."""
    return [model.stem, *model.trunk_output]


def lite_blocks(model: nn.Module) -> list[nn.Module]:
    """EfficientNet-Lite0: the stem (with the input scaling), its 16 MBConv blocks, the 1x1 head convolution."""
    import torch.nn.functional as F

    def stem(x: torch.Tensor) -> torch.Tensor:
        return F.relu6(model._bn0(model._conv_stem(x * model.input_scale + model.input_shift)))

    def head(x: torch.Tensor) -> torch.Tensor:
        return F.relu6(model._bn1(model._conv_head(x)))

    return [Block(stem, model._conv_stem, model._bn0), *model._blocks, Block(head, model._conv_head, model._bn1)]


def cut(blocks: list[nn.Module], trainable: int) -> tuple[nn.Module, nn.Module]:
    """(frozen, tail): the blocks before the last `trainable` ones, and those (then `pool`). With 0 trainable
    blocks the frozen part ends with the pooling and the tail is empty: the heads train on pooled features."""
    if not 0 <= trainable <= len(blocks) - 1:
        raise ValueError(f"trainable blocks must be 0 to {len(blocks) - 1} (the backbone has {len(blocks)} blocks)")
    split = len(blocks) - trainable
    frozen = nn.Sequential(*blocks[:split])
    if not trainable:
        frozen.append(Block(pool))
    return frozen, Tail(blocks[split:])


class Tail(nn.Module):
    """The trainable blocks after the cut, then `pool`: cached features -> the backbone's pooled features."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return pool(x)
