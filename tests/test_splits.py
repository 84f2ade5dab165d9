"""Item-level splits (disjoint, stratified, deterministic) and the nested label-ratio mask."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from collab_iu.params import PrepareParams, SplitParams
from collab_iu.splits import SPLITS, SplitError, label_ratio_mask, make_split, split_summary
from collab_iu.validate import validate_dataset


@pytest.fixture(scope="module")
def items(tiny_dataset_master) -> pd.DataFrame:
    """Validated tiny items with 20 items made unlabelled (2 of the 200 have no image)."""
    items = validate_dataset(tiny_dataset_master, PrepareParams(), 3).items.copy()
    items["labels"] = [[] if i % 10 == 1 else list(x) for i, x in enumerate(items["labels"])]
    assert items["image"].isna().sum() >= 1
    return items


def label_counts(items: pd.DataFrame, splits: pd.DataFrame, which: str) -> Counter:
    chosen = items["item_id"].isin(splits.loc[splits["split"] == which, "item_id"])
    return Counter(lab for labels in items.loc[chosen, "labels"] for lab in labels)


def evaluable(items: pd.DataFrame) -> np.ndarray:
    return items["image"].notna().to_numpy() & items["labels"].map(bool).to_numpy()


def test_every_item_in_exactly_one_split(items):
    splits = make_split(items, SplitParams())
    assert list(splits["item_id"]) == list(items["item_id"])
    assert splits["item_id"].is_unique
    assert set(splits["split"]) == set(SPLITS)
    sets = [set(splits.loc[splits["split"] == s, "item_id"]) for s in SPLITS]
    assert sum(map(len, sets)) == len(items)
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_label_in_train_and_test(items, seed):
    params = SplitParams(seed=seed)
    splits = make_split(items, params)
    vocabulary = {lab for labels in items["labels"] for lab in labels}
    for which in ("train", "test"):
        counts = label_counts(items, splits, which)
        assert set(counts) == vocabulary
        assert min(counts.values()) >= params.min_items_per_label


def test_fractions_are_roughly_respected(items):
    params = SplitParams(train=0.5, val=0.2, test=0.3)
    splits = make_split(items, params)
    n_eval = evaluable(items).sum()
    sizes = splits["split"].value_counts()
    assert abs(sizes["test"] - 0.3 * n_eval) <= 0.05 * n_eval
    assert abs(sizes["val"] - 0.2 * n_eval) <= 0.05 * n_eval


def test_unlabelled_and_imageless_items_train_only(items):
    splits = make_split(items, SplitParams())
    not_evaluable = ~evaluable(items)
    assert not_evaluable.sum() >= 20
    assert (splits.loc[not_evaluable, "split"] == "train").all()
    assert (splits.loc[evaluable(items), "split"] != "train").any()


def test_deterministic_per_seed(items):
    a = make_split(items, SplitParams(seed=4))
    b = make_split(items, SplitParams(seed=4))
    c = make_split(items, SplitParams(seed=5))
    pd.testing.assert_frame_equal(a, b)
    assert (a["split"] != c["split"]).any()


def test_zero_val_fraction(items):
    splits = make_split(items, SplitParams(train=0.7, val=0.0, test=0.3))
    assert (splits["split"] == "val").sum() == 0


def test_split_summary(items):
    splits = make_split(items, SplitParams())
    summary = split_summary(items, splits)
    assert summary["items"] == splits["split"].value_counts().to_dict()
    train_eval = evaluable(items) & (splits["split"] == "train").to_numpy()
    assert summary["labelled_train_items"] == int(train_eval.sum())
    assert summary["label_counts"]["test"] == dict(sorted(label_counts(items, splits, "test").items()))


def _hand_items(labels: list[list[str]]) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame({"item_id": [f"i{i:03d}" for i in range(n)], "image": ["x.png"] * n, "labels": labels})


def test_too_rare_label_names_it():
    labels = [["common"] for _ in range(60)]
    for i in range(5):
        labels[i] = ["common", "solo"]
    with pytest.raises(SplitError, match=r"'solo' \(5 items\)") as info:
        make_split(_hand_items(labels), SplitParams(min_items_per_label=3))
    assert "common" not in str(info.value)


def test_impossible_after_redraws_names_the_label():
    labels = [["a"] for _ in range(100)]
    for i in range(6):
        labels[i] = ["a", "b"]  # 6 items: enough in total, but 30% test gives ~2, never 3
    with pytest.raises(SplitError, match=r"after 3 draws.*'b' \(train \d+, test \d+\)"):
        make_split(_hand_items(labels), SplitParams(min_items_per_label=3, max_redraws=3))


def test_items_without_image_do_not_count_for_labels():
    labels = [["common"] for _ in range(60)]
    for i in range(8):
        labels[i] = ["common", "imgless"]
    items = _hand_items(labels)
    items.loc[:3, "image"] = None  # only 4 'imgless' items remain evaluable
    with pytest.raises(SplitError, match=r"'imgless' \(4 items\)"):
        make_split(items, SplitParams(min_items_per_label=3))


# ---------------------------------------------------------------------------------------------
# label_ratio_mask


@pytest.fixture(scope="module")
def train_parts(items):
    splits = make_split(items, SplitParams())
    is_train = (splits["split"] == "train").to_numpy()
    has_image = items["image"].notna().to_numpy()
    candidates = is_train & has_image & items["labels"].map(bool).to_numpy()
    return items["labels"], is_train, has_image, candidates


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_mask_size_and_membership(train_parts, ratio):
    labels, is_train, has_image, candidates = train_parts
    mask = label_ratio_mask(labels, is_train, has_image, ratio, seed=0)
    assert mask.dtype == bool and mask.shape == (len(labels),)
    assert mask.sum() == round(ratio * candidates.sum())
    assert not (mask & ~candidates).any()


def test_mask_stable_and_seeded(train_parts):
    labels, is_train, has_image, _ = train_parts
    a = label_ratio_mask(labels, is_train, has_image, 0.3, seed=7)
    b = label_ratio_mask(labels, is_train, has_image, 0.3, seed=7)
    c = label_ratio_mask(labels, is_train, has_image, 0.3, seed=8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


@pytest.mark.parametrize("seed", [0, 3])
def test_mask_nested(train_parts, seed):
    labels, is_train, has_image, _ = train_parts
    ratios = [0.05, 0.1, 0.2, 0.5, 0.8, 1.0]
    masks = [label_ratio_mask(labels, is_train, has_image, r, seed) for r in ratios]
    for low, high in zip(masks, masks[1:]):
        assert not (low & ~high).any()
        assert low.sum() < high.sum()
    np.testing.assert_array_equal(masks[-1], train_parts[3])


def test_mask_covers_every_label(train_parts):
    labels, is_train, has_image, candidates = train_parts
    vocabulary = {lab for row in labels[candidates] for lab in row}
    ratio = len(vocabulary) / candidates.sum()  # exactly one item per label
    for seed in range(5):
        mask = label_ratio_mask(labels, is_train, has_image, ratio, seed)
        assert mask.sum() == len(vocabulary)
        assert {lab for row in labels[mask] for lab in row} == vocabulary


def test_mask_covers_rare_labels_first():
    labels = [["common"] for _ in range(100)]
    labels[17] = ["common", "rare"]
    for i in (40, 41, 42, 43, 44):
        labels[i] = ["mid"]
    series = pd.Series(labels)
    ones = np.ones(100, dtype=bool)
    for seed in range(10):
        mask = label_ratio_mask(series, ones, ones, 0.03, seed)
        assert mask.sum() == 3
        assert mask[17]
        assert {lab for row in series[mask] for lab in row} == {"common", "rare", "mid"}
    two = label_ratio_mask(series, ones, ones, 0.02, seed=0)
    assert two[17] and two[40:45].any()  # with room for two items, the two rarest labels win


def test_mask_ignores_non_train_and_imageless():
    labels = pd.Series([["a"]] * 10 + [[]] * 5)
    is_train = np.array([True] * 6 + [False] * 4 + [True] * 5)
    has_image = np.array([True, True, True, True, False, True] + [True] * 9)
    mask = label_ratio_mask(labels, is_train, has_image, 1.0, seed=0)
    np.testing.assert_array_equal(np.flatnonzero(mask), [0, 1, 2, 3, 5])


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_mask_rejects_bad_ratio(train_parts, ratio):
    labels, is_train, has_image, _ = train_parts
    with pytest.raises(ValueError, match="label ratio"):
        label_ratio_mask(labels, is_train, has_image, ratio, seed=0)
