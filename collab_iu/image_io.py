"""Reading image files safely: paths stay inside the dataset folder, decoding errors are reasons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = 200_000_000  # refuse decompression bombs, allow large product photos


def resolve_inside(root: Path, relative: str) -> Path | None:
    """The absolute path of `relative` under `root`, or None when it would escape `root`."""
    root = root.resolve()
    if Path(relative).is_absolute():
        return None
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) else None


def decode_problem(path: Path) -> str | None:
    """Why `path` is not a usable image ("missing", "undecodable: ..."), or None if it decodes."""
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as im:
            im.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return f"undecodable: {type(exc).__name__}: {exc}".splitlines()[0][:200]
    return None


def load_square_rgb(path: Path, size: int) -> np.ndarray:
    """Decode an image, resize its short side to `size`, centre-crop to size x size; uint8 HxWx3."""
    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # JPEG: decode at reduced scale when it can
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8)
