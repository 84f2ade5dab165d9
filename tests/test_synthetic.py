"""The embedded synthetic generator: deterministic bytes, a valid dataset, labels that drive interactions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import read_interactions, read_items, tiny_synthetic
from PIL import Image

from collab_iu.params import PrepareParams, SyntheticParams
from collab_iu.synthetic import generate_synthetic, label_names
from collab_iu.validate import validate_dataset


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def top_label_share(items: pd.DataFrame, interactions: pd.DataFrame, shuffle_seed: int | None = None) -> float:
    """Mean over users of the share of their interactions whose item carries the user's most frequent label.

    With `shuffle_seed`, item labels are permuted across items first (the no-correlation baseline).
    """
    labels = list(items["labels"])
    if shuffle_seed is not None:
        labels = [labels[k] for k in np.random.default_rng(shuffle_seed).permutation(len(labels))]
    by_item = dict(zip(items["item_id"], labels))
    shares = []
    for _, group in interactions.groupby("user_id"):
        counts = pd.Series([lab for item in group["item_id"] for lab in by_item[item]]).value_counts()
        shares.append(counts.iloc[0] / len(group))
    return float(np.mean(shares))


def test_same_seed_same_bytes(tmp_path, tiny_dataset_master):
    params = tiny_synthetic()
    generate_synthetic(params, tmp_path / "a")
    generate_synthetic(params, tmp_path / "b")
    a, b = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b")
    assert {"items.parquet", "interactions.parquet"} <= set(a)
    assert sum(name.startswith("images/") for name in a) > 100
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name
    assert file_bytes(tiny_dataset_master) == a  # the session fixture used the same parameters


def test_different_seed_different_data(tmp_path):
    generate_synthetic(tiny_synthetic(seed=0), tmp_path / "a")
    generate_synthetic(tiny_synthetic(seed=1), tmp_path / "b")
    a, b = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b")
    assert a["items.parquet"] != b["items.parquet"]
    assert a["interactions.parquet"] != b["interactions.parquet"]
    shared_images = [n for n in a if n.startswith("images/") and n in b]
    assert shared_images and all(a[n] != b[n] for n in shared_images)


def test_regenerating_replaces_folder(tmp_path):
    dest = tmp_path / "ds"
    generate_synthetic(tiny_synthetic(seed=0), dest)
    (dest / "stray.txt").write_text("left over")
    generate_synthetic(tiny_synthetic(seed=0, n_items=100), dest)
    assert not (dest / "stray.txt").exists()
    assert len(read_items(dest)) == 100
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp or old folders left


def test_written_dataset_passes_validation(tiny_dataset_master):
    result = validate_dataset(tiny_dataset_master, PrepareParams(), min_items_per_label=3)
    assert result.report["filtered"] == {}
    assert result.report["items"] == 200
    assert result.report["users"] == 80
    assert result.report["labels"] == 5


def test_summary_matches_files(tmp_path):
    params = tiny_synthetic(seed=3)
    summary = generate_synthetic(params, tmp_path / "ds")
    items, inter = read_items(tmp_path / "ds"), read_interactions(tmp_path / "ds")
    assert summary["items"] == len(items) == params.n_items
    assert summary["interactions"] == len(inter)
    assert summary["users"] == inter["user_id"].nunique() == params.n_users
    assert summary["items_with_image"] == items["image"].notna().sum()
    assert summary["mean_labels_per_item"] == pytest.approx(items["labels"].map(len).mean())


def test_items_have_multi_label_categories(tiny_dataset_master):
    params = tiny_synthetic()
    items = read_items(tiny_dataset_master)
    sizes = items["labels"].map(len)
    assert sizes.min() >= 1
    assert sizes.max() <= params.max_labels_per_item
    assert (sizes > 1).sum() >= 0.1 * len(items)  # a real share is multi-label
    names = set(label_names(params.n_labels))
    assert {lab for labels in items["labels"] for lab in labels} == names
    assert all(len(set(labels)) == len(labels) for labels in items["labels"])


def test_images_are_png_of_the_requested_size(tiny_dataset_master):
    items = read_items(tiny_dataset_master)
    for rel in items["image"].dropna()[:20]:
        with Image.open(tiny_dataset_master / rel) as im:
            assert im.format == "PNG"
            assert im.size == (16, 16)
            assert im.mode == "RGB"


def test_interactions_are_well_formed(tiny_dataset_master):
    items, inter = read_items(tiny_dataset_master), read_interactions(tiny_dataset_master)
    assert inter["item_id"].isin(items["item_id"]).all()
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert inter["weight"].between(1, 5).all()
    assert inter["timestamp"].is_monotonic_increasing


@pytest.mark.parametrize("fraction", [0.0, 0.3])
def test_missing_image_fraction(tmp_path, fraction):
    dest = tmp_path / "ds"
    generate_synthetic(tiny_synthetic(missing_image_fraction=fraction), dest)
    items = read_items(dest)
    missing = items["image"].isna().sum()
    if fraction == 0:
        assert missing == 0
    else:
        assert 0.2 * len(items) < missing < 0.4 * len(items)
    files = {p.name for p in (dest / "images").iterdir()}
    assert {Path(rel).name for rel in items["image"].dropna()} == files
    assert len(files) == len(items) - missing


def test_interactions_correlate_with_labels(tiny_dataset_master):
    items, inter = read_items(tiny_dataset_master), read_interactions(tiny_dataset_master)
    real = top_label_share(items, inter)
    shuffled = max(top_label_share(items, inter, seed) for seed in (0, 1, 2))
    assert real > shuffled + 0.15


def test_no_taste_strength_no_correlation(tmp_path):
    """The control for the test above: with taste_strength 0 users ignore labels."""
    dest = tmp_path / "ds"
    generate_synthetic(tiny_synthetic(taste_strength=0.0), dest)
    items, inter = read_items(dest), read_interactions(dest)
    real = top_label_share(items, inter)
    shuffled = np.mean([top_label_share(items, inter, seed) for seed in (0, 1, 2)])
    assert abs(real - shuffled) < 0.08


def test_labels_must_fit():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_labels_per_item"):
        SyntheticParams(n_labels=2, max_labels_per_item=3)
