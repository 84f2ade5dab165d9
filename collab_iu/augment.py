"""Training augmentation on batches of tensors, so the same code runs on the CPU and the GPU.

Input: a uint8 batch N x H x W x 3 (as read from the image cache). Output: float
N x 3 x S x S, normalised. Random resized crop and horizontal flip are one affine
resampling per image (`grid_sample`); colour jitter and greyscale are per-image factors.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # the GPU benchmark runs with torch, torchvision and numpy only
    from collab_iu.params import AugmentParams

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GREY = (0.299, 0.587, 0.114)


def to_float_nchw(batch: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [0, 1]."""
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


def normalise(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def _uniform(n: int, low: float, high: float, g: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


class BatchAugment:
    """Random resized crop, flip, colour jitter and greyscale for a whole batch at once."""

    def __init__(self, params: AugmentParams, output_size: int):
        self.p = params
        self.size = output_size

    def crop_flip(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        n, device = x.shape[0], x.device
        area = _uniform(n, *self.p.scale, g, device)
        log_ratio = _uniform(n, math.log(self.p.ratio[0]), math.log(self.p.ratio[1]), g, device)
        ratio = torch.exp(log_ratio)
        w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width/height as a fraction of the image
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (torch.rand(n, generator=g, device=device) * 2 - 1) * (1 - w)
        cy = (torch.rand(n, generator=g, device=device) * 2 - 1) * (1 - h)
        sign = torch.ones(n, device=device)
        if self.p.flip:
            sign = torch.where(torch.rand(n, generator=g, device=device) < 0.5, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3, device=device, dtype=x.dtype)
        theta[:, 0, 0] = w * sign
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = h
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, [n, 3, self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def colour(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        n, device = x.shape[0], x.device
        grey_w = torch.tensor(_GREY, device=device, dtype=x.dtype).view(1, 3, 1, 1)
        if self.p.brightness:
            x = x * _uniform(n, 1 - self.p.brightness, 1 + self.p.brightness, g, device).view(n, 1, 1, 1)
        if self.p.contrast:
            mean = (x * grey_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
            c = _uniform(n, 1 - self.p.contrast, 1 + self.p.contrast, g, device).view(n, 1, 1, 1)
            x = (x - mean) * c + mean
        if self.p.saturation:
            grey = (x * grey_w).sum(1, keepdim=True)
            s = _uniform(n, 1 - self.p.saturation, 1 + self.p.saturation, g, device).view(n, 1, 1, 1)
            x = (x - grey) * s + grey
        if self.p.grayscale:
            to_grey = (torch.rand(n, generator=g, device=device) < self.p.grayscale).view(n, 1, 1, 1)
            x = torch.where(to_grey, (x * grey_w).sum(1, keepdim=True).expand_as(x), x)
        return x.clamp_(0.0, 1.0)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 N x H x W x 3 (any device) -> normalised float N x 3 x S x S on the same device."""
        x = to_float_nchw(batch)
        x = self.crop_flip(x, generator)
        x = self.colour(x, generator)
        return normalise(x)


def eval_transform(batch: torch.Tensor, output_size: int) -> torch.Tensor:
    """The deterministic counterpart for validation, test and prediction: resize and normalise."""
    x = to_float_nchw(batch)
    if x.shape[-1] != output_size or x.shape[-2] != output_size:
        x = F.interpolate(x, size=(output_size, output_size), mode="bilinear", align_corners=False, antialias=True)
    return normalise(x)
