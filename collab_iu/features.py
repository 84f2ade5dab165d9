"""The feature cache: a pretrained backbone's frozen blocks run once per image, so that a run trains only what
follows the cut (`train.finetune: tail` or `heads`) and a pretrained backbone becomes affordable on a CPU.

One cache per dataset, backbone, weights, resolution and cut, in `data/<dataset>/features/<key>/`:

- `features.npy`: float16, N x views x (the frozen blocks' output: C x H x W, or D pooled features with
  `finetune: heads`), rows as the image cache's; view 0 is the image as validation and test see it (resized
  to the input size), view 1 (with `augment.flip`) its mirror image, which training draws half of the time;
- `index.parquet`: item_id, row (the image cache's index);
- `report.json`: the spec, the digest of the image cache and of the weights file it was computed from.

Every run of the grid reads the same cache. A cache whose spec or inputs differ is rebuilt by the `features`
step and refused by training, never used silently.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from collab_iu.artifacts import CACHE_INDEX, FEATURES, REPORT
from collab_iu.atomic import atomic_dir, reserve, write_json
from collab_iu.augment import eval_transform
from collab_iu.backbone_blocks import cut
from collab_iu.backbones import BACKBONES, IMAGENET, PackagedWeights
from collab_iu.errors import UserError
from collab_iu.layout import DatasetLayout
from collab_iu.models import backbone_blocks, create_backbone, packaged_file
from collab_iu.params import Params

NOT_USED = "train.finetune is full: the runs train from pixels"  # the features step's report when it has no work
DTYPE = np.float16  # half the disk and memory of float32; scores from it match pixels' to about 1e-3


class FeatureCacheError(UserError, ValueError):
    """A feature cache that is missing, or was built for another spec or from other inputs."""


@dataclass(frozen=True)
class FeatureSpec:
    """What a feature cache depends on besides the images: its key names its folder."""

    backbone: str
    weights: str | None  # null (random), imagenet, or a state-dict file
    size: int  # the network's input size
    trainable_blocks: int  # blocks after the cut (0: the cache holds pooled features)
    views: int  # 1, or 2 with the mirror image (augment.flip)

    @property
    def key(self) -> str:
        if self.weights is None or self.weights == IMAGENET:
            weights = self.weights or "random"
        else:
            weights = "file" + hashlib.sha256(str(self.weights).encode()).hexdigest()[:8]
        cut_at = f"tail{self.trainable_blocks}" if self.trainable_blocks else "pooled"
        return f"{self.backbone}-{weights}-{self.size}px-{cut_at}" + ("-flip" if self.views == 2 else "")


def feature_spec(params: Params) -> FeatureSpec | None:
    """The feature cache that runs of `params` (a dataset's) train from; None when they train from pixels."""
    blocks = params.train.trainable_blocks
    if blocks is None:
        return None
    size = params.augment.output_size or params.cache.image_size
    return FeatureSpec(params.train.backbone, params.train.weights, size, blocks, 2 if params.augment.flip else 1)


def feature_dir(layout: DatasetLayout, spec: FeatureSpec) -> Path:
    return layout.features / spec.key


def _sha256(path: Path) -> str:
    """The file's sha256, computed once per process for a given size and modification time (every run of a grid
    worker checks the same weights file)."""
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _weights_digest(spec: FeatureSpec) -> str | None:
    """The sha256 of the weights file the frozen blocks come from (None for random weights); a file named by
    train.weights is read as `create_backbone` reads it."""
    if spec.weights is None:
        return None
    if spec.weights == IMAGENET:
        source = BACKBONES[spec.backbone].imagenet
        if isinstance(source, PackagedWeights):
            return _sha256(packaged_file(source))
        return source  # torchvision's weights name: its file name carries the hash torch checks
    return _sha256(Path(spec.weights))


def _inputs(layout: DatasetLayout) -> str:
    """The digest of the image cache the features are computed from."""
    digest = hashlib.sha256()
    for name in (CACHE_INDEX, REPORT):
        digest.update((layout.cache / name).read_bytes())
    return digest.hexdigest()[:16]


def expected_report(layout: DatasetLayout, spec: FeatureSpec) -> dict:
    """What a cache of `spec` over the current image cache records (its report's identifying part)."""
    return {"key": spec.key, "spec": asdict(spec), "weights_sha256": _weights_digest(spec), "inputs": _inputs(layout)}


def matching_report(folder: Path, expected: dict) -> dict | None:
    """The cache's report when it is whole and was built for `expected`, else None."""
    try:
        report = json.loads((folder / REPORT).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if any(report.get(k) != v for k, v in expected.items()) or not (folder / FEATURES).is_file():
        return None
    return report


@contextmanager
def _all_cores() -> Iterator[None]:
    """Every core for the extraction (a grid worker runs with its share), then the caller's setting again."""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_feature_cache(
    images: np.ndarray,
    index: pd.DataFrame,
    spec: FeatureSpec,
    dest: Path,
    identity: dict,
    batch_size: int = 64,
) -> dict:
    """Run the frozen blocks of `spec` over the cached `images` (uint8 N x S x S x 3) into `dest` (atomically)."""
    model, _ = create_backbone(spec.backbone, spec.weights)
    blocks = backbone_blocks(spec.backbone, model)
    if spec.trainable_blocks > len(blocks) - 1:
        raise FeatureCacheError(
            f"train.tail_blocks is {spec.trainable_blocks}, but {spec.backbone} has {len(blocks)} blocks: "
            f"choose 1 to {len(blocks) - 1}"
        )
    frozen = cut(blocks, spec.trainable_blocks)[0].eval()
    with torch.inference_mode():
        shape = tuple(frozen(torch.zeros(1, 3, spec.size, spec.size)).shape[1:])
    with atomic_dir(dest) as tmp:
        path = tmp / FEATURES
        out = np.lib.format.open_memmap(path, mode="w+", dtype=DTYPE, shape=(len(images), spec.views, *shape))
        reserve(path)  # a full disk: an OSError naming the file, not a SIGBUS
        with torch.inference_mode(), _all_cores():
            for start in range(0, len(images), batch_size):
                x = eval_transform(torch.from_numpy(np.array(images[start : start + batch_size])), spec.size)
                for view in range(spec.views):
                    out[start : start + len(x), view] = frozen(x.flip(3) if view else x).numpy()
        out.flush()
        del out
        index.to_parquet(tmp / CACHE_INDEX, index=False)
        report = identity | {
            "items": len(images),
            "shape": [len(images), spec.views, *shape],
            "dtype": np.dtype(DTYPE).name,
            "bytes": int(np.prod([len(images), spec.views, *shape])) * np.dtype(DTYPE).itemsize,
        }
        write_json(report, tmp / REPORT)
    return report


def load_features(layout: DatasetLayout, spec: FeatureSpec) -> np.ndarray:
    """The memory-mapped features of `spec`; FeatureCacheError naming the folder and the command when the cache is
    missing or was built for another spec or another image cache."""
    folder = feature_dir(layout, spec)
    if matching_report(folder, expected_report(layout, spec)) is None:
        state = "is missing" if not (folder / REPORT).exists() else "was built from another image cache or weights"
        raise FeatureCacheError(
            f"the feature cache {folder} {state}: run `collab-iu features --dataset {layout.name}` first"
        )
    return np.load(folder / FEATURES, mmap_mode="r")


def feature_report(layout: DatasetLayout, spec: FeatureSpec) -> Path:
    """The report.json of the cache of `spec` (its bytes are part of a run's config hash)."""
    return feature_dir(layout, spec) / REPORT


def random_views(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Training input from the feature cache: each item's view drawn at random (its mirror image half the time
    when the cache has two views), as float32."""
    n, views = batch.shape[:2]
    if views == 1:
        return batch[:, 0].float()
    pick = torch.randint(views, (n,), generator=generator, device=generator.device).to(batch.device)
    return batch[torch.arange(n, device=batch.device), pick].float()


def eval_view(batch: torch.Tensor) -> torch.Tensor:
    """Validation, test and scoring input from the feature cache: the image as it is (view 0), as float32."""
    return batch[:, 0].float()
