"""Image decoding: every Pillow mode against a reference computed here with numpy, the pixel limit, symlink loops.

The case builders (`mode_cases`, `write_huge_png`) are also used by test_image_cache, test_predict and
test_validate, so that the cache, `predict` and validation are checked on the same files.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from collab_iu.image_io import (
    ImageRefusedError,
    decode_problem,
    file_problem,
    load_rgb,
    load_square_rgb,
    resolve_inside,
    try_load_square_rgb,
)
from collab_iu.params import PrepareParams

SIDE = 12  # every case is SIDE x SIDE: load_square_rgb at SIDE is then the decoded image itself
HUGE = 15000  # write_huge_png's width and height


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: list[bytes]) -> bytes:
    """A PNG file written by hand (filter 0 on every row), for what Pillow cannot write itself."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\0" + row for row in rows), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def write_huge_png(path: Path, side: int = HUGE) -> Path:
    """A valid 1-bit PNG declaring side x side pixels, a few tens of KB on disk (all black)."""
    path.write_bytes(png_bytes(side, side, 1, 0, [bytes((side + 7) // 8)] * side))
    return path


def composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The reference: round((c * a + 255 * (255 - a)) / 255) per channel, in float64."""
    c, a = rgb.astype(np.float64), alpha.astype(np.float64)[..., None]
    return np.round((c * a + 255.0 * (255.0 - a)) / 255.0).astype(np.uint8)


def grey3(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)


def _grey16_cases(folder: Path, rng: np.random.Generator) -> dict[str, tuple[Path, np.ndarray, str]]:
    v = rng.integers(0, 65536, (SIDE, SIDE)).astype(np.uint16)
    v.flat[:4] = [0, 255, 65535, 257 * 200]  # the extremes, and an 8-bit value widened by bit replication
    expected = grey3(v // 256)  # the high byte
    cases = {}
    Image.frombytes("I;16", (SIDE, SIDE), v.astype("<u2").tobytes()).save(folder / "grey16.png")
    cases["grey16_png"] = (folder / "grey16.png", expected, "I;16")
    Image.frombytes("I;16B", (SIDE, SIDE), v.astype(">u2").tobytes()).save(folder / "grey16b.tiff")
    cases["grey16b_tiff"] = (folder / "grey16b.tiff", expected, "I;16B")
    (folder / "grey16.pgm").write_bytes(f"P5\n{SIDE} {SIDE}\n65535\n".encode() + v.astype(">u2").tobytes())
    cases["grey32_pgm"] = (folder / "grey16.pgm", expected, "I")  # Pillow opens 16-bit PGM as 32-bit I
    key = int(v[5, 5])
    Image.frombytes("I;16", (SIDE, SIDE), v.astype("<u2").tobytes()).save(folder / "grey16_trns.png", transparency=key)
    cases["grey16_trns_png"] = (folder / "grey16_trns.png", np.where((v == key)[..., None], 255, expected), "I;16")
    rgb16 = rng.integers(0, 65536, (SIDE, SIDE, 3)).astype(np.uint16)
    rows = [row.astype(">u2").tobytes() for row in rgb16]
    (folder / "rgb16.png").write_bytes(png_bytes(SIDE, SIDE, 16, 2, rows))
    cases["rgb16_png"] = (folder / "rgb16.png", (rgb16 // 256).astype(np.uint8), "RGB")
    return cases


def _alpha_cases(folder: Path, rng: np.random.Generator) -> dict[str, tuple[Path, np.ndarray, str]]:
    cases = {}
    palette = rng.integers(0, 256, (4, 3)).astype(np.uint8)
    palette_alpha = np.array([255, 128, 0, 40], np.uint8)
    index = rng.integers(0, 4, (SIDE, SIDE)).astype(np.uint8)
    im = Image.fromarray(index, "P")
    im.putpalette(palette.flatten().tolist())
    im.save(folder / "palette_trns.png", transparency=palette_alpha.tobytes())
    cases["palette_trns_png"] = (
        folder / "palette_trns.png",
        composite_on_white(palette[index], palette_alpha[index]),
        "P",
    )
    la = rng.integers(0, 256, (SIDE, SIDE, 2)).astype(np.uint8)
    la[0, 0, 1], la[0, 1, 1] = 0, 255
    Image.fromarray(la, "LA").save(folder / "la.png")
    cases["la_png"] = (folder / "la.png", composite_on_white(grey3(la[..., 0]), la[..., 1]), "LA")
    rgba = rng.integers(0, 256, (SIDE, SIDE, 4)).astype(np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    cases["rgba_png"] = (folder / "rgba.png", composite_on_white(rgba[..., :3], rgba[..., 3]), "RGBA")
    grey = rng.integers(0, 256, (SIDE, SIDE)).astype(np.uint8)
    Image.fromarray(grey, "L").save(folder / "grey_trns.png", transparency=int(grey[3, 3]))
    cases["grey_trns_png"] = (
        folder / "grey_trns.png",
        np.where((grey == grey[3, 3])[..., None], 255, grey3(grey)),
        "L",
    )
    rgb = rng.integers(0, 256, (SIDE, SIDE, 3)).astype(np.uint8)
    key = tuple(int(x) for x in rgb[2, 7])
    Image.fromarray(rgb, "RGB").save(folder / "rgb_trns.png", transparency=key)
    cases["rgb_trns_png"] = (folder / "rgb_trns.png", np.where((rgb == key).all(-1)[..., None], 255, rgb), "RGB")
    return cases


def _other_cases(folder: Path, rng: np.random.Generator) -> dict[str, tuple[Path, np.ndarray, str]]:
    cases = {}
    cmyk = rng.integers(0, 256, (SIDE, SIDE, 4)).astype(np.uint8)
    Image.fromarray(cmyk, "CMYK").save(folder / "cmyk.tiff")
    c, k = cmyk[..., :3].astype(np.float64), cmyk[..., 3:].astype(np.float64)
    cases["cmyk_tiff"] = (folder / "cmyk.tiff", np.round((255 - c) * (255 - k) / 255).astype(np.uint8), "CMYK")
    bits = rng.integers(0, 2, (SIDE, SIDE)).astype(bool)
    Image.fromarray(bits).save(folder / "bits.png")
    cases["one_bit_png"] = (folder / "bits.png", grey3(bits * 255), "1")
    stored = rng.integers(0, 256, (SIDE, SIDE, 3)).astype(np.uint8)
    # EXIF orientation 6: the stored pixels are shown turned 90 degrees clockwise; 3: 180 degrees; 2: mirrored
    for orientation, shown in ((6, np.rot90(stored, k=-1)), (3, stored[::-1, ::-1]), (2, stored[:, ::-1])):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(stored, "RGB").save(folder / f"exif{orientation}.png", exif=exif)
        cases[f"exif{orientation}_png"] = (folder / f"exif{orientation}.png", np.ascontiguousarray(shown), "RGB")
    return cases


def mode_cases(folder: Path) -> dict[str, tuple[Path, np.ndarray, str]]:
    """name -> (a SIDE x SIDE file of one mode, its expected 8-bit RGB computed with numpy, the mode Pillow opens)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(14)
    return _grey16_cases(folder, rng) | _alpha_cases(folder, rng) | _other_cases(folder, rng)


CASE_NAMES = (
    *("grey16_png", "grey16b_tiff", "grey32_pgm", "grey16_trns_png", "rgb16_png"),
    *("palette_trns_png", "la_png", "rgba_png", "grey_trns_png", "rgb_trns_png"),
    *("cmyk_tiff", "one_bit_png", "exif6_png", "exif3_png", "exif2_png"),
)


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray, str]]:
    return mode_cases(tmp_path_factory.mktemp("modes"))


def test_cases_cover_the_modes(cases):
    assert tuple(cases) == CASE_NAMES
    for name, (path, _, mode) in cases.items():
        with Image.open(path) as im:
            assert im.mode == mode, name  # each file really is of the mode its case tests


@pytest.mark.parametrize("name", CASE_NAMES)
def test_every_mode_decodes_to_its_reference(cases, name):
    path, expected, _ = cases[name]
    np.testing.assert_array_equal(np.asarray(load_rgb(path)), expected)
    pixels, problem = try_load_square_rgb(path, SIDE)  # what the cache and `predict` call
    assert problem is None
    np.testing.assert_array_equal(pixels, expected)
    assert decode_problem(path) is None


def test_16_bit_grey_keeps_its_brightness(tmp_path):
    """The issue's case: a 16-bit grey ramp of true mean 127.5 (8-bit units) was read as almost white (254)."""
    ramp = np.tile(np.arange(0, 65536, 256, dtype=np.uint16), (64, 1))  # 64 x 256, each column one level
    Image.frombytes("I;16", (256, 64), ramp.astype("<u2").tobytes()).save(tmp_path / "ramp.png")
    decoded = np.asarray(load_rgb(tmp_path / "ramp.png"))
    assert decoded.mean() == pytest.approx(127.5)
    np.testing.assert_array_equal(decoded[0, :, 0], np.arange(256))


def test_adobe_cmyk_jpeg(tmp_path):
    """Pillow writes CMYK JPEGs as Adobe does (inverted samples, APP14 marker) and un-inverts them on reading."""
    cmyk = np.random.default_rng(3).integers(0, 256, (16, 16, 4)).astype(np.uint8)
    cmyk[:] = cmyk[::4, ::4].repeat(4, 0).repeat(4, 1)  # flat 4x4 blocks: little JPEG loss
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "cmyk.jpg", quality=100, subsampling=0)
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK" and "adobe" in im.info
        stored = np.asarray(im).astype(np.float64)
    assert np.abs(stored - cmyk).mean() < 4  # not inverted (inverted: about 128 apart on average)
    expected = np.round((255 - stored[..., :3]) * (255 - stored[..., 3:]) / 255)
    np.testing.assert_array_equal(np.asarray(load_rgb(tmp_path / "cmyk.jpg")), expected)


def test_modes_without_an_8_bit_scale_are_refused(tmp_path):
    Image.fromarray(np.full((4, 4), 0.5, np.float32), "F").save(tmp_path / "float.tiff")
    wide = np.array([[0, 70000], [5, 6]], np.int32)
    Image.fromarray(wide.astype(np.int32), "I").save(tmp_path / "wide.tiff")
    negative = np.array([[-1, 0], [5, 6]], np.int32)
    Image.fromarray(negative, "I").save(tmp_path / "negative.tiff")
    assert decode_problem(tmp_path / "float.tiff").startswith("unsupported image mode F: floating-point")
    assert "values 0..70000 are not 16-bit" in decode_problem(tmp_path / "wide.tiff")
    assert "values -1..6 are not 16-bit" in decode_problem(tmp_path / "negative.tiff")
    with pytest.raises(ImageRefusedError, match="mode F"):
        load_square_rgb(tmp_path / "float.tiff", 4)
    assert try_load_square_rgb(tmp_path / "wide.tiff", 2)[1].startswith("unsupported image mode I")


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    return write_huge_png(tmp_path_factory.mktemp("huge") / "huge.png")


def test_huge_image_refused_from_its_header(huge_png, monkeypatch):
    assert huge_png.stat().st_size < 100_000  # a small file declaring 15000 x 15000 = 225 megapixels
    with Image.open(huge_png) as im:
        assert im.size == (HUGE, HUGE)

    def no_decoding(self):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    reason = decode_problem(huge_png)
    assert reason == (
        "too large: 15000x15000 = 225,000,000 pixels, more than prepare.max_image_pixels=100,000,000 (not decoded)"
    )
    assert try_load_square_rgb(huge_png, 8) == (None, reason)
    with pytest.raises(ImageRefusedError, match="15000x15000"):
        load_square_rgb(huge_png, 8)


def test_pixel_limit_is_a_parameter(tmp_path):
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "small.png")
    assert decode_problem(tmp_path / "small.png", max_pixels=1200) is None
    assert decode_problem(tmp_path / "small.png", max_pixels=1199).startswith("too large: 40x30 = 1,200 pixels")
    assert try_load_square_rgb(tmp_path / "small.png", 10, max_pixels=1200)[1] is None
    assert "max_image_pixels=1,199" in try_load_square_rgb(tmp_path / "small.png", 10, max_pixels=1199)[1]


def test_pixel_limit_parameter_bounds():
    assert PrepareParams().max_image_pixels == 100_000_000
    assert Image.MAX_IMAGE_PIXELS is None  # Pillow's guard is off: the header check is the one that applies
    assert PrepareParams(max_image_pixels=1_000_000_000).max_image_pixels == 1_000_000_000
    for bad in (0, 1_000_000_001):
        with pytest.raises(ValueError, match="max_image_pixels"):
            PrepareParams(max_image_pixels=bad)


def test_file_problems_are_named(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(good)
    (tmp_path / "loop.png").symlink_to("loop.png")
    (tmp_path / "ping.png").symlink_to("pong.png")
    (tmp_path / "pong.png").symlink_to("ping.png")
    (tmp_path / "broken.png").symlink_to("absent.png")
    (tmp_path / "link.png").symlink_to("good.png")
    (tmp_path / "folder.png").mkdir()
    assert file_problem(good) is None and file_problem(tmp_path / "link.png") is None
    assert file_problem(tmp_path / "loop.png") == file_problem(tmp_path / "ping.png") == "symlink loop"
    assert file_problem(tmp_path / "broken.png") == "broken symlink (its target absent.png does not exist)"
    assert file_problem(tmp_path / "absent.png") == "missing"
    assert file_problem(tmp_path / "folder.png") == "not a file"
    assert decode_problem(tmp_path / "loop.png") == "symlink loop"
    assert try_load_square_rgb(tmp_path / "loop.png", 4) == (None, "symlink loop")


def test_resolve_inside_a_symlink_loop(tmp_path):
    """Path.resolve raises on a loop (Python < 3.13): the dataset check must report it, not crash."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "loop.png").symlink_to("loop.png")
    path = resolve_inside(tmp_path, "images/loop.png")
    assert path == tmp_path.resolve() / "images" / "loop.png"
    assert decode_problem(path) == "symlink loop"
    (tmp_path / "outside.png").symlink_to("outside.png")
    assert resolve_inside(tmp_path / "images", "../outside.png") is None  # a loop outside is still refused


def test_a_sliver_is_refused_from_its_header_and_a_wide_image_is_cropped_before_it_is_resized(tmp_path):
    """A 1,000,000 x 1 PNG of a few KB is refused before decoding (it once took gigabytes: its short side was
    scaled up to the cache size before the crop): the process grows by less than 50 MB; a 40:1 panorama is
    cropped to its centre square, then resized."""
    import subprocess
    import sys

    sliver = tmp_path / "sliver.png"
    Image.new("RGB", (1_000_000, 1), (200, 10, 10)).save(sliver, optimize=True)
    assert sliver.stat().st_size < 20_000
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from collab_iu.image_io import try_load_square_rgb\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "pixels, problem = try_load_square_rgb(Path(sys.argv[1]), 224)\n"
        "print(problem)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(sliver)], capture_output=True, text=True, check=True)
    problem, grown_mb = out.stdout.splitlines()
    assert problem.startswith("too elongated: 1000000x1, an aspect ratio above 50:1") and int(grown_mb) < 50
    assert decode_problem(sliver).startswith("too elongated")  # validation refuses it the same way

    wide = tmp_path / "wide.png"
    stripes = np.zeros((10, 400, 3), np.uint8)
    stripes[:, 198:202] = 255  # a white bar in the middle of the centre square (columns 195 to 204)
    Image.fromarray(stripes).save(wide)
    pixels, problem = try_load_square_rgb(wide, 20)
    assert problem is None and pixels.shape == (20, 20, 3)
    assert pixels[:, 10].min() > 200 and pixels[:, 0].max() == 0  # the centre square, stretched to 20 x 20


def test_a_header_beyond_pillows_own_limit_gets_the_documented_reason(tmp_path):
    """50000 x 50000 declared (2.5 billion pixels: Pillow's own guard would refuse it inside Image.open with its
    "decompression bomb" wording): the reason is this module's, from the header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 50_000, 50_000, 1, 0, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b""))
    assert decode_problem(path) == (
        "too large: 50000x50000 = 2,500,000,000 pixels, more than prepare.max_image_pixels=100,000,000 (not decoded)"
    )
    assert try_load_square_rgb(path, 32)[1] == decode_problem(path)
