"""Reading image files safely: paths stay inside the dataset folder, decoding errors are reasons.

Every image mode Pillow opens becomes 8-bit RGB the same way, in validation, the cache and `predict`:
- 16-bit samples (I;16*, and 32-bit I within 0..65535: Pillow opens 16-bit PGM as I) keep their
  high byte (`v >> 8`), as Pillow itself reads 16-bit RGB and RGBA PNGs; I values outside 0..65535
  and floating-point (F) images have no defined 8-bit scale and are refused;
- transparency (alpha channels, and palette, grey or RGB images with a tRNS colour) is composited on
  white (BACKGROUND), exactly: round((c * a + 255 * (255 - a)) / 255);
- CMYK (Adobe's inverted CMYK JPEGs are un-inverted by Pillow) by R = round((255 - C) * (255 - K) / 255);
- the EXIF orientation is applied; colour profiles (ICC) are ignored, for every mode alike.
An image whose header declares more than `max_pixels` pixels, or an aspect ratio above MAX_ASPECT, is refused
before it is decoded.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from collab_iu.errors import UserError
from collab_iu.params import PrepareParams

DEFAULT_MAX_PIXELS: int = PrepareParams.model_fields["max_image_pixels"].default  # prepare.max_image_pixels
# Pillow's own decompression-bomb guard is off: every file this module opens is checked from its header
# (`check_pixels`, prepare.max_image_pixels at most 10^9) before anything is decoded, with the documented
# "too large: WxH" reason, which Pillow's guard (raised inside Image.open) would replace by its own wording
Image.MAX_IMAGE_PIXELS = None
MAX_ASPECT = 50  # longest side / shortest side: a panorama passes, a 200000 x 1 sliver does not
BACKGROUND = (255, 255, 255)  # transparent pixels become white, as product photos are shown on a page
GREY16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})
RGB_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}) | GREY16_MODES | ALPHA_MODES
ORIENTATION_TAG = 0x0112  # EXIF: how the stored pixels are turned relative to the upright image
UPRIGHT = {  # orientation -> the transposition that makes the image upright (as PIL.ImageOps.exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageRefusedError(UserError, ValueError):
    """An image that decodes but is not read: too large, or a mode with no defined 8-bit RGB conversion."""


def resolve_inside(root: Path, relative: str) -> Path | None:
    """The absolute path of `relative` under `root`, or None when it would escape `root`."""
    root = root.resolve()
    if Path(relative).is_absolute():
        return None
    try:
        path = (root / relative).resolve()
    except (RuntimeError, OSError):  # a symlink loop (RuntimeError before Python 3.13): file_problem names it
        path = Path(os.path.normpath(root / relative))
    return path if path.is_relative_to(root) else None


def file_problem(path: Path) -> str | None:
    """Why `path` is not a readable file ("missing", "symlink loop", "broken symlink ...", "not a file"), or None."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if path.is_symlink():
            return f"broken symlink (its target {os.readlink(path)} does not exist)"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "missing"
        return f"unreadable: {exc.strerror}"
    return None if stat.S_ISREG(mode) else "not a file"


def problem_of(exc: BaseException) -> str:
    """The one-line reason recorded for an image that could not be read."""
    if isinstance(exc, ImageRefusedError):
        return str(exc).splitlines()[0][:300]
    return f"undecodable: {type(exc).__name__}: {exc}".splitlines()[0][:200]


def check_pixels(im: Image.Image, max_pixels: int) -> None:
    """ImageRefusedError when the size declared in the header is above `max_pixels`, or its aspect ratio above
    MAX_ASPECT (nothing decoded yet)."""
    width, height = im.size
    if width * height > max_pixels:
        raise ImageRefusedError(
            f"too large: {width}x{height} = {width * height:,} pixels, more than "
            f"prepare.max_image_pixels={max_pixels:,} (not decoded)"
        )
    if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
        raise ImageRefusedError(
            f"too elongated: {width}x{height}, an aspect ratio above {MAX_ASPECT}:1 (its centre square would be a "
            "sliver; not decoded)"
        )


def check_mode(im: Image.Image) -> None:
    """ImageRefusedError for a mode with no defined 8-bit RGB conversion (decodes the image)."""
    if im.mode not in RGB_MODES:
        kind = "floating-point samples have no defined 8-bit scale" if im.mode == "F" else "no defined RGB conversion"
        raise ImageRefusedError(f"unsupported image mode {im.mode}: {kind}; save it as 8- or 16-bit RGB or grey")
    if im.mode == "I":
        low, high = im.getextrema()
        if low < 0 or high > 65535:
            raise ImageRefusedError(
                f"unsupported image mode I: values {low}..{high} are not 16-bit (0..65535), no defined 8-bit scale"
            )


def decode_problem(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Why `path` is not a usable image ("missing", "too large: ...", "undecodable: ..."), or None if it decodes."""
    problem = file_problem(path)
    if problem is not None:
        return problem
    try:
        with Image.open(path) as im:
            check_pixels(im, max_pixels)
            im.load()
            check_mode(im)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return problem_of(exc)
    return None


def _grey8(im: Image.Image) -> Image.Image:
    """A 16-bit grey image (I;16*, or I within 0..65535) as L (LA when a tRNS grey marks transparency): v >> 8."""
    values = np.asarray(im)
    grey = (values >> 8).astype(np.uint8)
    transparent = im.info.get("transparency")
    if isinstance(transparent, int):
        alpha = np.where(values == transparent, 0, 255).astype(np.uint8)
        return Image.fromarray(np.dstack([grey, alpha]), "LA")
    return Image.fromarray(grey, "L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any supported mode as 8-bit RGB (see the module docstring); ImageRefusedError for the others."""
    check_mode(im)
    if im.mode in GREY16_MODES:
        im = _grey8(im)
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, BACKGROUND)
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))  # Pillow's paste rounds c*a/255 exactly
        return out
    return im.convert("RGB")


def load_rgb(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None) -> Image.Image:
    """A file's pixels as 8-bit RGB, upright (EXIF orientation applied); refused above `max_pixels`.

    `draft`: a JPEG may be decoded at a reduced scale (1/2 .. 1/8) as long as both sides stay >= `draft`."""
    with Image.open(path) as im:
        check_pixels(im, max_pixels)
        if draft is not None:
            im.draft("RGB", (draft, draft))
        orientation = im.getexif().get(ORIENTATION_TAG)
        rgb = to_rgb(im)
    return rgb.transpose(UPRIGHT[orientation]) if orientation in UPRIGHT else rgb


def load_square_rgb(path: Path, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image, centre-crop it to a square, resize that to size x size; uint8 HxWx3.

    Cropping first bounds the memory by the decoded image and the output: scaling the short side up first
    would turn a 200000 x 1 sliver into a 6,400,000 x 32 image."""
    im = load_rgb(path, max_pixels, draft=size)  # JPEG: decode at reduced scale when it can
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    if (side, side) != (w, h):
        im = im.crop((left, top, left + side, top + side))
    if side != size:
        im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(im, dtype=np.uint8)


def try_load_square_rgb(
    path: Path, size: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray | None, str | None]:
    """`load_square_rgb`, or (None, reason) for a file that cannot be read: the cache and `predict` both use it."""
    problem = file_problem(path)
    if problem is not None:
        return None, problem
    try:
        return load_square_rgb(path, size, max_pixels), None
    except Exception as exc:  # noqa: BLE001 - every decoding failure is reported by its reason
        return None, problem_of(exc)
