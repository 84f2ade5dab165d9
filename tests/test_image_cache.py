"""The memory-mapped image cache and the batch augmentation that reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from collab_iu.augment import IMAGENET_MEAN, IMAGENET_STD, BatchAugment, eval_transform, normalise, to_float_nchw
from collab_iu.image_cache import build_image_cache, load_image_cache
from collab_iu.image_io import load_square_rgb
from collab_iu.params import AugmentParams, PrepareParams
from collab_iu.validate import validate_dataset

SIZE = 16


@pytest.fixture(scope="module")
def tiny_items(tiny_dataset_master) -> pd.DataFrame:
    return validate_dataset(tiny_dataset_master, PrepareParams(), 3).items


@pytest.fixture(scope="module")
def cache_dir(tiny_items, tiny_dataset_master, tmp_path_factory) -> tuple[Path, dict]:
    dest = tmp_path_factory.mktemp("cache") / "cache"
    report = build_image_cache(tiny_items, tiny_dataset_master, size=12, workers=2, dest=dest)
    return dest, report


def test_cache_shape_dtype_and_files(cache_dir, tiny_items):
    dest, report = cache_dir
    assert sorted(p.name for p in dest.iterdir()) == ["images.npy", "index.parquet", "report.json"]
    cache = load_image_cache(dest)
    n = int(tiny_items["image"].notna().sum())
    assert cache.images.shape == (n, 12, 12, 3)
    assert cache.images.dtype == np.uint8
    assert report["images"] == n and report["image_size"] == 12
    assert report["bytes"] == n * 12 * 12 * 3
    assert report["failed"] == {"count": 0, "items": {}}
    assert report["items_without_image"] == int(tiny_items["image"].isna().sum()) > 0


def test_cache_opens_read_only(cache_dir):
    cache = load_image_cache(cache_dir[0])
    assert isinstance(cache.images, np.memmap)
    assert not cache.images.flags.writeable
    with pytest.raises(ValueError):
        cache.images[0, 0, 0, 0] = 1


def test_cache_rows_aligned_with_item_ids(cache_dir, tiny_items, tiny_dataset_master):
    cache = load_image_cache(cache_dir[0])
    with_image = tiny_items[tiny_items["image"].notna()]
    assert list(cache.index["item_id"]) == list(with_image["item_id"])  # catalogue order
    np.testing.assert_array_equal(cache.index["row"], np.arange(len(cache.index)))
    image_of = dict(zip(with_image["item_id"], with_image["image"]))
    for row, item_id in enumerate(cache.index["item_id"]):
        expected = load_square_rgb(tiny_dataset_master / image_of[item_id], 12)
        np.testing.assert_array_equal(cache.images[row], expected, err_msg=item_id)
    assert len({cache.images[r].tobytes() for r in range(len(cache.index))}) == len(cache.index)


def test_cache_rows_lookup(cache_dir, tiny_items):
    cache = load_image_cache(cache_dir[0])
    no_image = tiny_items.loc[tiny_items["image"].isna(), "item_id"].iloc[0]
    ids = [cache.index["item_id"].iloc[5], no_image, "not_an_item", cache.index["item_id"].iloc[0]]
    np.testing.assert_array_equal(cache.rows(ids), [5, -1, -1, 0])


def test_failed_images_reported_and_left_out(tiny_items, copy_dataset, tmp_path):
    folder = copy_dataset()
    items = tiny_items.copy()
    rows = np.flatnonzero(items["image"].notna().to_numpy())
    corrupt, missing, escaping = (int(r) for r in rows[[3, 10, 20]])
    (folder / items.loc[corrupt, "image"]).write_bytes(b"not an image")
    (folder / items.loc[missing, "image"]).unlink()
    items.loc[escaping, "image"] = "../elsewhere.png"
    report = build_image_cache(items, folder, size=SIZE, workers=2, dest=tmp_path / "cache")
    failed = report["failed"]
    ids = items["item_id"]
    assert failed["count"] == 3
    assert failed["items"][ids[missing]] == "missing"
    assert failed["items"][ids[corrupt]].startswith("undecodable")
    assert "escapes" in failed["items"][ids[escaping]]
    cache = load_image_cache(tmp_path / "cache")
    assert len(cache.index) == len(rows) - 3 == report["images"]
    assert cache.images.shape == (len(rows) - 3, SIZE, SIZE, 3)
    assert not cache.index["item_id"].isin(ids[[corrupt, missing, escaping]]).any()
    # the rows left are still aligned with their items after the array was compacted
    kept = items[items["image"].notna() & ~items.index.isin([corrupt, missing, escaping])]
    assert list(cache.index["item_id"]) == list(kept["item_id"])
    last = kept.iloc[-1]
    np.testing.assert_array_equal(cache.images[-1], load_square_rgb(folder / last["image"], SIZE))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "ds"]  # no temp folders left


def test_rebuild_replaces_cache(tiny_items, tiny_dataset_master, tmp_path):
    dest = tmp_path / "cache"
    build_image_cache(tiny_items, tiny_dataset_master, size=8, workers=1, dest=dest)
    (dest / "stray").write_text("x")
    build_image_cache(tiny_items.iloc[:30], tiny_dataset_master, size=SIZE, workers=1, dest=dest)
    cache = load_image_cache(dest)
    assert cache.images.shape[1:] == (SIZE, SIZE, 3)
    assert len(cache.index) == int(tiny_items.iloc[:30]["image"].notna().sum())
    assert not (dest / "stray").exists()


def test_load_rejects_mismatched_index(cache_dir, tmp_path):
    import shutil

    dest = tmp_path / "cache"
    shutil.copytree(cache_dir[0], dest)
    index = pd.read_parquet(dest / "index.parquet")
    index.iloc[:-1].to_parquet(dest / "index.parquet", index=False)
    with pytest.raises(ValueError, match="index has"):
        load_image_cache(dest)


def test_load_square_rgb_resizes_and_centre_crops(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    pixels[:, :4] = (0, 255, 0)  # cropped away
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    Image.fromarray(pixels, "RGB").convert("P").save(tmp_path / "palette.png")
    out = load_square_rgb(tmp_path / "wide.png", 10)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert tuple(out[5, 1]) == (255, 0, 0)
    assert tuple(out[5, 8]) == (0, 0, 255)
    assert not (out[..., 1] > 128).any()  # the green border was outside the centre crop
    assert load_square_rgb(tmp_path / "palette.png", 10).shape == (10, 10, 3)  # converted to RGB


# ---------------------------------------------------------------------------------------------
# augmentation


def _batch(n: int = 6, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8))


def _bounds() -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (0 - mean) / std, (1 - mean) / std


@pytest.mark.parametrize("output_size", [SIZE, 12, 24])
def test_augment_shape_dtype_range(output_size):
    out = BatchAugment(AugmentParams(), output_size)(_batch(), torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, output_size, output_size)
    assert out.dtype == torch.float32
    low, high = _bounds()
    assert (out >= low - 1e-5).all() and (out <= high + 1e-5).all()
    assert out.std() > 0.1


def test_augment_deterministic_with_generator():
    augment, batch = BatchAugment(AugmentParams(grayscale=0.5), 12), _batch()
    a = augment(batch, torch.Generator().manual_seed(3))
    b = augment(batch, torch.Generator().manual_seed(3))
    c = augment(batch, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_augment_identity_crop_and_flip():
    """With a full-size crop and no colour jitter, each output is the image or its mirror."""
    params = AugmentParams(scale=(1.0, 1.0), ratio=(1.0, 1.0), brightness=0, contrast=0, saturation=0)
    batch = _batch(n=16)
    out = BatchAugment(params, SIZE)(batch, torch.Generator().manual_seed(0))
    plain = normalise(to_float_nchw(batch))
    same = [torch.allclose(o, p, atol=1e-4) for o, p in zip(out, plain)]
    mirrored = [torch.allclose(o, p.flip(-1), atol=1e-4) for o, p in zip(out, plain)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert any(same) and any(mirrored)
    no_flip = BatchAugment(params.model_copy(update={"flip": False}), SIZE)(batch, torch.Generator().manual_seed(0))
    assert torch.allclose(no_flip, plain, atol=1e-4)


def test_augment_grayscale_makes_channels_equal():
    params = AugmentParams(grayscale=1.0, brightness=0, contrast=0, saturation=0)
    out = BatchAugment(params, 12)(_batch(), torch.Generator().manual_seed(0))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    raw = out * std + mean
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-5) and torch.allclose(raw[:, 1], raw[:, 2], atol=1e-5)


def test_augment_does_not_modify_its_input():
    batch = _batch()
    copy = batch.clone()
    BatchAugment(AugmentParams(), 12)(batch, torch.Generator().manual_seed(0))
    assert torch.equal(batch, copy)


@pytest.mark.parametrize("output_size", [SIZE, 8, 20])
def test_eval_transform(output_size):
    batch = _batch(n=3)
    out = eval_transform(batch, output_size)
    assert out.shape == (3, 3, output_size, output_size)
    assert out.dtype == torch.float32
    assert torch.equal(eval_transform(batch, output_size), out)
    if output_size == SIZE:
        assert torch.allclose(out, normalise(to_float_nchw(batch)))


def test_augment_reads_cache_batches(cache_dir):
    cache = load_image_cache(cache_dir[0])
    batch = torch.from_numpy(np.array(cache.images[:4]))  # a writable copy of the memmap rows
    out = BatchAugment(AugmentParams(), 12)(batch, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 12, 12)
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# every image mode, the pixel limit and symlink loops, as the cache reads them


def test_cache_decodes_every_mode_like_its_reference(tmp_path):
    from test_image_io import CASE_NAMES, SIDE, mode_cases, write_huge_png

    cases = mode_cases(tmp_path / "ds" / "images")
    write_huge_png(tmp_path / "ds" / "images" / "huge.png")
    (tmp_path / "ds" / "images" / "loop.png").symlink_to("loop.png")
    Image.fromarray(np.full((4, 4), 0.5, np.float32), "F").save(tmp_path / "ds" / "images" / "float.tiff")
    names = [*CASE_NAMES, "huge", "loop", "float"]
    files = [str(cases[n][0].relative_to(tmp_path / "ds")) for n in CASE_NAMES]
    items = pd.DataFrame(
        {"item_id": names, "image": [*files, "images/huge.png", "images/loop.png", "images/float.tiff"]}
    )
    report = build_image_cache(items, tmp_path / "ds", size=SIDE, workers=2, dest=tmp_path / "cache")
    cache = load_image_cache(tmp_path / "cache")
    assert list(cache.index["item_id"]) == list(CASE_NAMES)
    for row, name in enumerate(CASE_NAMES):
        np.testing.assert_array_equal(cache.images[row], cases[name][1], err_msg=name)
    failed = report["failed"]["items"]
    assert sorted(failed) == ["float", "huge", "loop"]
    assert failed["huge"].startswith("too large: 15000x15000 = 225,000,000 pixels")
    assert failed["loop"] == "symlink loop"
    assert failed["float"].startswith("unsupported image mode F")


def test_cache_pixel_limit_is_its_argument(tiny_items, tiny_dataset_master, tmp_path):
    items = tiny_items.iloc[:10]
    n = int(items["image"].notna().sum())
    report = build_image_cache(items, tiny_dataset_master, size=8, workers=1, dest=tmp_path / "a", max_pixels=16 * 16)
    assert report["images"] == n  # the tiny dataset's images are 16 x 16
    report = build_image_cache(items, tiny_dataset_master, size=8, workers=1, dest=tmp_path / "b", max_pixels=255)
    assert report["images"] == 0 and report["failed"]["count"] == n
    assert all(why.startswith("too large: 16x16 = 256 pixels") for why in report["failed"]["items"].values())


def test_images_that_vanished_after_prepare_stop_the_cache(tmp_path, monkeypatch, capsys):
    """prepare validated the images; they are moved away before `cache`: exit 2 naming them and the share, and no
    cache (prepare.max_bad_image_fraction applies again)."""
    import shutil

    import yaml
    from helpers import tiny_params_tree

    from orchestration.cli import main

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_tree(tmp_path / "data")))
    monkeypatch.chdir(tmp_path)
    assert main(["prepare"]) == 0
    images = tmp_path / "data" / "synthetic" / "raw" / "images"
    shutil.move(images, tmp_path / "moved")
    capsys.readouterr()
    assert main(["cache"]) == 2
    err = capsys.readouterr().err
    assert "images (100%) could not be read, more than prepare.max_bad_image_fraction=0.05: item " in err, err
    assert "missing" in err and "run prepare again" in err and "Traceback" not in err
    assert not (tmp_path / "data" / "synthetic" / "cache").exists()
