"""The image cache: every image decoded and resized once into one memory-mapped uint8 array.

`images.npy` is N x S x S x 3 (uint8), `index.parquet` maps item_id -> row. Training reads
batches straight from the memory map and never decodes a file.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from collab_iu.artifacts import CACHE_IMAGES, CACHE_INDEX, REPORT
from collab_iu.atomic import atomic_dir, reserve, write_json
from collab_iu.errors import UserError
from collab_iu.image_io import DEFAULT_MAX_PIXELS, resolve_inside, try_load_square_rgb


@dataclass
class ImageCache:
    """A loaded cache: the memory-mapped array and its item-id index."""

    images: np.ndarray  # memmap, N x S x S x 3 uint8
    index: pd.DataFrame  # item_id, row

    def rows(self, item_ids) -> np.ndarray:
        """Cache rows of `item_ids` (-1 where an item has no cached image)."""
        return pd.Index(self.index["item_id"]).get_indexer(pd.Index(item_ids))


def _decode(args: tuple[Path | None, int, int]) -> tuple[np.ndarray | None, str | None]:
    path, size, max_pixels = args
    if path is None:
        return None, "image path escapes the dataset folder"
    return try_load_square_rgb(path, size, max_pixels)  # exactly as `predict` decodes a file


def build_image_cache(
    items: pd.DataFrame,
    image_root: str | Path,
    size: int,
    workers: int,
    dest: str | Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bad_fraction: float = 1.0,
) -> dict:
    """Decode every item image into `dest/images.npy` (atomically); report missing or corrupt ones by item id.

    `max_pixels` (prepare.max_image_pixels): an image declaring more pixels is reported, never decoded.
    `max_bad_fraction` (prepare.max_bad_image_fraction): images may have vanished or changed since `prepare`
    validated them; above this share of failures BadImagesError names them and nothing is written."""
    image_root = Path(image_root)
    with_image = items[items["image"].notna()]
    paths = [resolve_inside(image_root, rel) for rel in with_image["image"]]
    failed: dict[str, str] = {}
    with atomic_dir(dest) as tmp:
        out = np.lib.format.open_memmap(
            tmp / CACHE_IMAGES, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3)
        )
        reserve(tmp / CACHE_IMAGES)  # a full disk: an OSError naming the file, not a SIGBUS
        kept_ids: list[str] = []
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_decode, ((p, size, max_pixels) for p in paths), chunksize=64)
            for item_id, (pixels, problem) in zip(with_image["item_id"], results):
                if problem is not None:
                    failed[item_id] = problem
                    continue
                out[len(kept_ids)] = pixels
                kept_ids.append(item_id)
        out.flush()
        del out
        if paths and len(failed) / len(paths) > max_bad_fraction:
            raise BadImagesError(failed, len(paths), max_bad_fraction)
        if failed:  # shrink to the rows actually written
            full = np.load(tmp / CACHE_IMAGES, mmap_mode="r")
            np.save(tmp / "compact.npy", full[: len(kept_ids)])
            del full
            (tmp / "compact.npy").replace(tmp / CACHE_IMAGES)
        pd.DataFrame({"item_id": kept_ids, "row": np.arange(len(kept_ids), dtype=np.int64)}).to_parquet(
            tmp / CACHE_INDEX, index=False
        )
        report = {
            "images": len(kept_ids),
            "image_size": size,
            "items_without_image": int(items["image"].isna().sum()),
            "failed": {"count": len(failed), "items": failed},
            "bytes": int(len(kept_ids) * size * size * 3),
        }
        write_json(report, tmp / REPORT)
    return report


class BadImagesError(UserError, ValueError):
    """More images failed to decode than prepare.max_bad_image_fraction allows (they changed since `prepare`)."""

    def __init__(self, failed: dict[str, str], total: int, limit: float):
        shown = "; ".join(f"item {item}: {why}" for item, why in list(failed.items())[:3])
        super().__init__(
            f"{len(failed)} of {total} images ({len(failed) / total:.0%}) could not be read, more than "
            f"prepare.max_bad_image_fraction={limit}: {shown}{'; ...' if len(failed) > 3 else ''}. They were "
            "readable when `collab-iu prepare` validated the dataset: restore them, or run prepare again"
        )


def load_image_cache(folder: str | Path) -> ImageCache:
    """Open a built cache read-only (memory-mapped)."""
    folder = Path(folder)
    images = np.load(folder / CACHE_IMAGES, mmap_mode="r")
    index = pd.read_parquet(folder / CACHE_INDEX)
    if len(index) != len(images):
        raise ValueError(f"{folder}: index has {len(index)} rows but {CACHE_IMAGES} has {len(images)}")
    return ImageCache(images=images, index=index)
