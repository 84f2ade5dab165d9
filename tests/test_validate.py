"""The dataset validator: every bad input is reported by file and row; tolerable problems are filtered and counted."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import read_interactions, read_items, tiny_params_tree, write_interactions, write_items
from PIL import Image

from collab_iu.dataset import DatasetError
from collab_iu.params import PrepareParams, params_from_dict
from collab_iu.stages import run_prepare
from collab_iu.validate import validate_dataset

MIN_ITEMS = 3  # split.min_items_per_label


def validate(folder: Path, min_items: int = MIN_ITEMS, **prepare):
    return validate_dataset(folder, PrepareParams(**prepare), min_items)


def fails(folder: Path, min_items: int = MIN_ITEMS, **prepare) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        validate(folder, min_items, **prepare)
    return info.value


def folder_params(root: Path, folder: Path):
    """Tiny params whose default dataset 'mine' is `folder`, with outputs under `root`."""
    data = {"default": "mine", "datasets": {"mine": {"source": "folder", "path": str(folder)}}}
    return params_from_dict(tiny_params_tree(root, data=data))


def image_rows(items: pd.DataFrame) -> np.ndarray:
    return np.flatnonzero(items["image"].notna().to_numpy())


def write_png(path: Path, size: int = 16) -> None:
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(path)


def to_csv(folder: Path) -> None:
    """Rewrite the dataset's tables as CSV (labels joined by '|') and remove the parquet files."""
    items = read_items(folder)
    items["labels"] = ["|".join(labels) for labels in items["labels"]]
    items.to_csv(folder / "items.csv", index=False)
    read_interactions(folder).to_csv(folder / "interactions.csv", index=False)
    (folder / "items.parquet").unlink()
    (folder / "interactions.parquet").unlink()


# ---------------------------------------------------------------------------------------------
# corruptions: each mutates a dataset folder and returns the substrings the error must contain


def dup_item_ids(folder: Path) -> list[str]:
    items = read_items(folder)
    items.loc[5, "item_id"] = items.loc[3, "item_id"]
    write_items(folder, items)
    return ["items.parquet rows 3, 5", f"duplicate item_id {items.loc[3, 'item_id']!r}"]


def unknown_items(folder: Path) -> list[str]:
    inter = read_interactions(folder)
    inter.loc[[7, 11], "item_id"] = ["ghost_a", "ghost_b"]
    write_interactions(folder, inter)
    return ["interactions.parquet rows 7, 11", "item_id not in items.parquet", "ghost_a", "drop_unknown_interactions"]


def many_missing_images(folder: Path) -> list[str]:
    items = read_items(folder)
    rows = image_rows(items)[:20]
    for rel in items.loc[rows, "image"]:
        (folder / rel).unlink()
    return [f"items.parquet rows {', '.join(map(str, rows[:10]))} and 10 more", "20 of", "max_bad_image_fraction"]


def escaping_relative(folder: Path) -> list[str]:
    write_png(folder.parent / "outside.png")  # it exists, so only the location is wrong
    items = read_items(folder)
    items.loc[4, "image"] = "../outside.png"
    write_items(folder, items)
    return ["items.parquet row 4", "escapes the dataset folder"]


def escaping_absolute(folder: Path) -> list[str]:
    target = folder.parent / "outside_abs.png"
    write_png(target)
    items = read_items(folder)
    items.loc[9, "image"] = str(target.resolve())
    write_items(folder, items)
    return ["items.parquet row 9", "escapes the dataset folder"]


def nan_weight(folder: Path) -> list[str]:
    inter = read_interactions(folder)
    inter.loc[3, "weight"] = np.nan
    write_interactions(folder, inter)
    return ["interactions.parquet row 3", "weight is NaN"]


def negative_weight(folder: Path) -> list[str]:
    inter = read_interactions(folder)
    inter.loc[[8, 12], "weight"] = -1.0
    write_interactions(folder, inter)
    return ["interactions.parquet rows 8, 12", "weight is negative"]


def int_item_ids(folder: Path) -> list[str]:
    items = read_items(folder)
    items["item_id"] = np.arange(len(items), dtype=np.int64)
    write_items(folder, items)
    return ["items.parquet", "column item_id has type integer; expected string"]


def string_weights_parquet(folder: Path) -> list[str]:
    inter = read_interactions(folder)
    inter["weight"] = inter["weight"].astype(str)
    write_interactions(folder, inter)
    return ["interactions.parquet", "column weight has type string"]


def string_weights_csv(folder: Path) -> list[str]:
    to_csv(folder)
    inter = pd.read_csv(folder / "interactions.csv", dtype=str)
    inter.loc[[4, 9], "weight"] = ["heavy", "n/a"]
    inter.to_csv(folder / "interactions.csv", index=False)
    return ["interactions.csv lines 6, 11", "column weight is not a number"]  # header is line 1


def empty_vocabulary(folder: Path) -> list[str]:
    items = read_items(folder)
    items["labels"] = [[] for _ in range(len(items))]
    write_items(folder, items)
    return ["items.parquet", "empty label vocabulary"]


def rare_label(folder: Path) -> list[str]:
    items = read_items(folder)
    rows = image_rows(items)[:2]
    items["labels"] = [list(x) + (["rare_x"] if i in rows else []) for i, x in enumerate(items["labels"])]
    write_items(folder, items)
    return ["items.parquet", "'rare_x' (2)", "fewer than 6 labelled items", "drop_rare_labels"]


def no_items_file(folder: Path) -> list[str]:
    (folder / "items.parquet").unlink()
    return ["no items.parquet or items.csv"]


def no_interactions_file(folder: Path) -> list[str]:
    (folder / "interactions.parquet").unlink()
    return ["no interactions.parquet or interactions.csv"]


def missing_items_column(folder: Path) -> list[str]:
    write_items(folder, read_items(folder).drop(columns=["labels"]))
    return ["items.parquet", "missing column(s) labels"]


def missing_interactions_column(folder: Path) -> list[str]:
    write_interactions(folder, read_interactions(folder).drop(columns=["user_id"]))
    return ["interactions.parquet", "missing column(s) user_id"]


def infinite_weight(folder: Path) -> list[str]:
    inter = read_interactions(folder)
    inter["weight"] = inter["weight"].astype(np.float64)
    inter.loc[[2, 5], "weight"] = [np.inf, -np.inf]
    inter.loc[9, "weight"] = 1e39  # finite, but inf as the float32 the weights are stored as
    write_interactions(folder, inter)
    return ["interactions.parquet rows 2, 5: weight is infinite", "interactions.parquet row 9: weight is too large"]


def infinite_weight_csv(folder: Path) -> list[str]:
    to_csv(folder)
    inter = pd.read_csv(folder / "interactions.csv", dtype=str)
    inter.loc[[1, 4], "weight"] = ["inf", "-Infinity"]
    inter.to_csv(folder / "interactions.csv", index=False)
    return ["interactions.csv lines 3, 6: weight is infinite"]  # header is line 1


def blank_item_ids(folder: Path) -> list[str]:
    items = read_items(folder)
    items.loc[[2, 6], "item_id"] = ["", "   "]
    items.loc[8, "item_id"] = "item\tx"
    write_items(folder, items)
    inter = read_interactions(folder)
    inter.loc[[3, 4], "item_id"] = [" \t", "line\nbreak"]
    write_interactions(folder, inter)
    return [
        "items.parquet rows 2, 6: item_id is empty or only whitespace",
        "items.parquet row 8: item_id contains a control character",
        "interactions.parquet row 3: item_id is empty or only whitespace",
        "interactions.parquet rows 3, 4: item_id contains a control character",
    ]


CORRUPTIONS = [
    dup_item_ids,
    unknown_items,
    many_missing_images,
    escaping_relative,
    escaping_absolute,
    nan_weight,
    negative_weight,
    int_item_ids,
    string_weights_parquet,
    string_weights_csv,
    empty_vocabulary,
    rare_label,
    no_items_file,
    no_interactions_file,
    missing_items_column,
    missing_interactions_column,
    infinite_weight,
    infinite_weight_csv,
    blank_item_ids,
]


# ---------------------------------------------------------------------------------------------


def test_tiny_dataset_is_valid(tiny_dataset):
    result = validate(tiny_dataset)
    items = read_items(tiny_dataset)
    assert list(result.items["item_id"]) == list(items["item_id"])
    assert result.report["filtered"] == {}
    assert result.report["items"] == len(items)
    assert result.report["interactions"] == len(read_interactions(tiny_dataset))
    assert result.interactions["weight"].dtype == np.float32


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_bad_input_is_fatal_and_located(tiny_dataset, corrupt):
    expected = corrupt(tiny_dataset)
    message = str(fails(tiny_dataset))
    assert str(tiny_dataset) in message
    for part in expected:
        assert part in message, f"{part!r} not in:\n{message}"


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_run_prepare_writes_nothing_on_failure(tiny_dataset, tmp_path, corrupt):
    corrupt(tiny_dataset)
    root = tmp_path / "data"
    params = folder_params(root, tiny_dataset)
    with pytest.raises(DatasetError):
        run_prepare(params)
    assert not (root / "mine" / "prepared").exists()
    assert not root.exists() or not any(root.rglob("*")), list(root.rglob("*"))


def test_failed_prepare_keeps_previous_output(tiny_dataset, tmp_path):
    root = tmp_path / "data"
    params = folder_params(root, tiny_dataset)
    report = run_prepare(params)
    prepared = root / "mine" / "prepared"
    before = {p.name: p.read_bytes() for p in prepared.iterdir()}
    assert set(before) == {"items.parquet", "interactions.parquet", "report.json"}
    assert report["items"] == 200
    nan_weight(tiny_dataset)
    with pytest.raises(DatasetError):
        run_prepare(params)
    assert {p.name: p.read_bytes() for p in prepared.iterdir()} == before
    assert sorted(p.name for p in (root / "mine").iterdir()) == ["prepared"]  # no temp folder left


def test_duplicate_ids_problem_lists_rows(tiny_dataset):
    dup_item_ids(tiny_dataset)
    err = fails(tiny_dataset)
    [problem] = [p for p in err.problems if "duplicate" in p.message]
    assert problem.file == "items.parquet"
    assert problem.rows == [3, 5]
    # item_000005 is gone from the catalogue, so its interactions now name an unknown item
    assert [p.file for p in err.problems if p is not problem] == ["interactions.parquet"]


def test_unknown_interactions_dropped_when_asked(tiny_dataset):
    unknown_items(tiny_dataset)
    n = len(read_interactions(tiny_dataset))
    result = validate(tiny_dataset, drop_unknown_interactions=True)
    assert result.report["filtered"]["unknown_item_interactions"]["count"] == 2
    assert len(result.interactions) == n - 2
    assert result.interactions["item_id"].isin(result.items["item_id"]).all()
    assert result.report["interactions"] == n - 2


@pytest.mark.parametrize("kind", ["missing", "undecodable"])
def test_few_bad_images_are_tolerated(tiny_dataset, kind):
    items = read_items(tiny_dataset)
    row = int(image_rows(items)[7])
    item_id, rel = items.loc[row, "item_id"], items.loc[row, "image"]
    if kind == "missing":
        (tiny_dataset / rel).unlink()
    else:
        (tiny_dataset / rel).write_bytes(b"this is not a png at all")
    result = validate(tiny_dataset)
    bad = result.report["filtered"]["bad_images"]
    assert bad["count"] == 1
    assert list(bad["items"]) == [item_id]
    assert bad["items"][item_id].startswith(kind)
    assert result.items.loc[row, "image"] is None
    assert result.items["image"].notna().sum() == items["image"].notna().sum() - 1
    assert result.report["items"] == len(items)  # the item stays (for CF)


def test_bad_image_fatal_above_threshold(tiny_dataset):
    items = read_items(tiny_dataset)
    row = int(image_rows(items)[0])
    (tiny_dataset / items.loc[row, "image"]).write_bytes(b"\x89PNG broken")
    assert validate(tiny_dataset, max_bad_image_fraction=0.05).report["filtered"]["bad_images"]["count"] == 1
    message = str(fails(tiny_dataset, max_bad_image_fraction=0.0))
    assert f"items.parquet row {row}: 1 of " in message


def test_check_images_false_only_checks_existence(tiny_dataset):
    items = read_items(tiny_dataset)
    corrupt_row, missing_row = (int(r) for r in image_rows(items)[:2])
    (tiny_dataset / items.loc[corrupt_row, "image"]).write_bytes(b"garbage")
    (tiny_dataset / items.loc[missing_row, "image"]).unlink()
    result = validate(tiny_dataset, check_images=False)
    assert result.report["filtered"]["bad_images"]["items"] == {items.loc[missing_row, "item_id"]: "missing"}


def test_rare_labels_dropped_when_asked(tiny_dataset):
    rare_label(tiny_dataset)
    result = validate(tiny_dataset, drop_rare_labels=True)
    rare = result.report["filtered"]["rare_labels"]
    assert rare == {"count": 1, "labels": {"rare_x": 2}, "needed": 2 * MIN_ITEMS}
    assert not any("rare_x" in labels for labels in result.items["labels"])
    assert "rare_x" not in result.report["label_counts"]


def test_min_items_per_label_drives_rare_labels(tiny_dataset):
    counts = validate(tiny_dataset).report["label_counts"]
    smallest = min(counts.values())
    message = str(fails(tiny_dataset, min_items=smallest // 2 + 1))
    assert f"fewer than {2 * (smallest // 2 + 1)} labelled items" in message
    assert min(counts, key=counts.get) in message


def test_missing_folder(tmp_path):
    assert "no such dataset folder" in str(fails(tmp_path / "nowhere"))


def test_several_problems_in_one_message(tiny_dataset):
    escaping_relative(tiny_dataset)
    items = read_items(tiny_dataset)
    write_items(tiny_dataset, pd.concat([items, items.iloc[[3]]], ignore_index=True))  # a second item_000003
    inter = read_interactions(tiny_dataset)
    inter.loc[3, "weight"] = np.nan
    inter.loc[8, "weight"] = -2.0
    inter.loc[11, "item_id"] = "ghost"
    write_interactions(tiny_dataset, inter)
    err = fails(tiny_dataset)
    message = str(err)
    assert f"has {len(err.problems)} problem(s)" in message
    assert len(err.problems) == 5
    for part in [
        f"items.parquet rows 3, {len(items)}: duplicate item_id 'item_000003'",
        "items.parquet row 4: image path escapes",
        "interactions.parquet row 3: weight is NaN",
        "interactions.parquet row 8: weight is negative",
        "interactions.parquet row 11: item_id not in items.parquet",
    ]:
        assert part in message, f"{part!r} not in:\n{message}"


def test_label_problems_reported_with_table_problems(tiny_dataset):
    """A rare label and a duplicate id come in one message, not one run after the other."""
    rare_label(tiny_dataset)
    items = read_items(tiny_dataset)
    write_items(tiny_dataset, pd.concat([items, items.iloc[[7]]], ignore_index=True))
    message = str(fails(tiny_dataset))
    assert "duplicate item_id 'item_000007'" in message
    assert "'rare_x' (2)" in message


def test_rare_label_counts_ignore_bad_images(tiny_dataset):
    """A label whose only images are corrupt is too rare, in the same run that tolerates the corrupt images."""
    items = read_items(tiny_dataset)
    rows = image_rows(items)[:6]
    items["labels"] = [list(x) + (["fragile"] if i in rows else []) for i, x in enumerate(items["labels"])]
    write_items(tiny_dataset, items)
    for row in rows[:1]:
        (tiny_dataset / items.loc[row, "image"]).write_bytes(b"not an image")
    assert "'fragile' (5)" in str(fails(tiny_dataset, max_bad_image_fraction=0.5))


def test_csv_timestamps_may_be_dates(copy_dataset):
    folder = copy_dataset("csv")
    to_csv(folder)
    inter = pd.read_csv(folder / "interactions.csv", dtype=str, keep_default_na=False)
    inter["timestamp"] = "2024-03-01T12:00:00"
    inter.loc[4, "timestamp"] = "yesterday"
    inter.to_csv(folder / "interactions.csv", index=False)
    assert "interactions.csv line 6: column timestamp is neither a number nor a date" in str(fails(folder))
    inter.loc[4, "timestamp"] = "2024-03-02"
    inter.to_csv(folder / "interactions.csv", index=False)
    result = validate(folder)
    assert str(result.interactions["timestamp"].iloc[4]).startswith("2024-03-02")


def test_csv_variant_matches_parquet(tiny_dataset, copy_dataset):
    csv_folder = copy_dataset("csv")
    to_csv(csv_folder)
    assert sorted(p.name for p in csv_folder.iterdir()) == ["images", "interactions.csv", "items.csv"]
    assert "|" in (csv_folder / "items.csv").read_text()  # the multi-label rows are joined by '|'
    from_parquet, from_csv = validate(tiny_dataset), validate(csv_folder)
    assert from_csv.report["files"] == {"items": "items.csv", "interactions": "interactions.csv"}
    assert list(from_csv.items["item_id"]) == list(from_parquet.items["item_id"])
    assert list(from_csv.items["image"]) == list(from_parquet.items["image"])
    assert [list(x) for x in from_csv.items["labels"]] == [list(x) for x in from_parquet.items["labels"]]
    assert from_csv.report["label_counts"] == from_parquet.report["label_counts"]
    cols = ["user_id", "item_id", "weight"]
    pd.testing.assert_frame_equal(from_csv.interactions[cols], from_parquet.interactions[cols], check_dtype=False)


def test_csv_rows_are_reported_as_lines(copy_dataset):
    folder = copy_dataset("csv")
    to_csv(folder)
    items = pd.read_csv(folder / "items.csv", dtype=str, keep_default_na=False)
    items.loc[5, "item_id"] = items.loc[3, "item_id"]
    items.to_csv(folder / "items.csv", index=False)
    assert "items.csv lines 5, 7: duplicate item_id" in str(fails(folder))


def test_csv_empty_labels_mean_unlabelled(copy_dataset):
    folder = copy_dataset("csv")
    to_csv(folder)
    items = pd.read_csv(folder / "items.csv", dtype=str, keep_default_na=False)
    items.loc[[2, 6], "labels"] = ""
    items.to_csv(folder / "items.csv", index=False)
    result = validate(folder)
    assert list(result.items.loc[[2, 6], "labels"]) == [[], []]
    assert result.report["labelled_items"] == len(items) - 2


def test_duplicate_interactions_are_merged(tiny_dataset):
    inter = read_interactions(tiny_dataset)
    extra = inter.iloc[[0, 1]].copy()
    extra["weight"] = [2.0, 3.0]
    write_interactions(tiny_dataset, pd.concat([inter, extra], ignore_index=True))
    result = validate(tiny_dataset)
    assert result.report["filtered"]["merged_duplicate_interactions"] == {"count": 2}
    assert len(result.interactions) == len(inter)
    merged = result.interactions.set_index(["user_id", "item_id"])["weight"]
    key = (inter.loc[0, "user_id"], inter.loc[0, "item_id"])
    assert merged.loc[key] == pytest.approx(inter.loc[0, "weight"] + 2.0)


def test_rows_are_positions_not_a_stored_index(tiny_dataset):
    """A table saved with the pandas index of a concatenation (0..n-1 twice) is reported by row position."""
    items = read_items(tiny_dataset)
    doubled = pd.concat([items, items.assign(item_id=items["item_id"] + "_b")])  # index 0..199, 0..199
    doubled.iloc[len(items), doubled.columns.get_loc("item_id")] = items["item_id"].iat[0]  # row 200 = row 0
    doubled.to_parquet(tiny_dataset / "items.parquet")  # index stored
    assert list(pd.read_parquet(tiny_dataset / "items.parquet").index[[0, len(items)]]) == [0, 0]
    [problem] = [p for p in fails(tiny_dataset).problems if "duplicate" in p.message]
    assert problem.rows == [0, len(items)]
    assert "items.parquet rows 0, 200: duplicate item_id" in problem.render()


def test_a_stored_index_does_not_shift_filtered_rows(tiny_dataset):
    """Bad images are set to null at their own rows, whatever index the file stored."""
    items = read_items(tiny_dataset)
    row = int(image_rows(items)[3])
    (tiny_dataset / items.loc[row, "image"]).unlink()
    items.index = np.arange(len(items))[::-1]  # a stored index in reverse order
    items.to_parquet(tiny_dataset / "items.parquet")
    result = validate(tiny_dataset)
    assert result.items["image"].isna().to_numpy().nonzero()[0].tolist() == sorted(
        {row, *np.flatnonzero(items["image"].isna().to_numpy())}
    )
    assert list(result.items["item_id"]) == list(items["item_id"])


def test_a_named_stored_index_is_a_column(tiny_dataset):
    items = read_items(tiny_dataset)
    items.set_index("item_id").to_parquet(tiny_dataset / "items.parquet")  # item_id stored as the index
    assert list(validate(tiny_dataset).items["item_id"]) == list(items["item_id"])


def test_unknown_columns_are_ignored_and_reported(tiny_dataset, copy_dataset):
    items = read_items(tiny_dataset)
    write_items(tiny_dataset, items.assign(price=1.5, colour="red"))
    inter = read_interactions(tiny_dataset)
    write_interactions(tiny_dataset, inter.assign(session=7))
    result = validate(tiny_dataset)
    entry = result.report["filtered"]["unknown_columns"]
    assert entry["count"] == 3
    assert entry["columns"] == {"items.parquet": ["price", "colour"], "interactions.parquet": ["session"]}
    assert "items.parquet: price, colour; interactions.parquet: session" in entry["effect"]
    assert list(result.items.columns) == ["item_id", "image", "labels"]
    csv = copy_dataset("csv")
    to_csv(csv)
    (csv / "items.csv").write_text(  # a CSV written with its index: an unnamed first column
        pd.read_csv(csv / "items.csv", dtype=str, keep_default_na=False).to_csv()
    )
    assert validate(csv).report["filtered"]["unknown_columns"]["columns"] == {"items.csv": ["Unnamed: 0"]}
    assert "unknown_columns" not in validate(copy_dataset("clean")).report["filtered"]


def test_the_cf_step_refuses_unusable_weights_that_reach_it():
    """Validation refuses them; a prepared table written another way is refused by the CF step, by name."""
    from collab_iu.cf import InteractionWeightError, interaction_matrix

    inter = pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["a", "b", "a"], "weight": [1.0, np.inf, 2.0]})
    assert interaction_matrix(inter, pd.Series(["a", "b"]), binarize=True).sum() == 3  # weights unused
    for bad in (np.inf, np.nan, -1.0, 1e39):
        with pytest.raises(InteractionWeightError, match=r"1 interaction weight\(s\) are not finite and >= 0"):
            interaction_matrix(inter.assign(weight=[1.0, bad, 2.0]), pd.Series(["a", "b"]), binarize=False)
    repeated = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "a"], "weight": [3e38, 3e38]})
    with pytest.raises(InteractionWeightError, match=r"summed per \(user, item\) pair"):
        interaction_matrix(repeated, pd.Series(["a"]), binarize=False)


def test_dataset_folder_copy_is_independent(tiny_dataset_master, copy_dataset):
    """The session dataset must stay pristine however tests corrupt their copies."""
    folder = copy_dataset("victim")
    shutil.rmtree(folder / "images")
    assert (tiny_dataset_master / "images").is_dir()
    n_images = read_items(tiny_dataset_master)["image"].notna().sum()
    assert len(list((tiny_dataset_master / "images").iterdir())) == n_images


# ---------------------------------------------------------------------------------------------
# the pixel limit and symlink loops


def test_too_large_image_is_a_bad_image(tiny_dataset):
    """A small PNG declaring 15000 x 15000 is counted as a bad image, named with its size, never decoded."""
    from test_image_io import write_huge_png

    items = read_items(tiny_dataset)
    row = int(image_rows(items)[4])
    item_id, rel = items.loc[row, "item_id"], items.loc[row, "image"]
    write_huge_png(tiny_dataset / rel)
    bad = validate(tiny_dataset).report["filtered"]["bad_images"]
    assert bad["count"] == 1 and bad["files"] == {item_id: rel}
    assert bad["items"][item_id] == (
        "too large: 15000x15000 = 225,000,000 pixels, more than prepare.max_image_pixels=100,000,000 (not decoded)"
    )
    message = str(fails(tiny_dataset, max_bad_image_fraction=0.0))
    assert f"items.parquet row {row}: 1 of " in message
    assert f"{rel}: too large: 15000x15000 = 225,000,000 pixels" in message


def test_max_image_pixels_is_honoured(tiny_dataset):
    n = int(read_items(tiny_dataset)["image"].notna().sum())
    assert "bad_images" not in validate(tiny_dataset, max_image_pixels=16 * 16).report["filtered"]  # 16 x 16 images
    message = str(fails(tiny_dataset, max_image_pixels=16 * 16 - 1))
    assert f"{n} of {n} images are missing, undecodable or too large" in message
    assert "too large: 16x16 = 256 pixels, more than prepare.max_image_pixels=255" in message and "; ..." in message


@pytest.mark.parametrize("check_images", [True, False])
def test_symlink_loop_image_is_reported(tiny_dataset, check_images):
    """A loop made Path.resolve raise (a traceback); it is a bad image with its reason."""
    items = read_items(tiny_dataset)
    row = int(image_rows(items)[2])
    path = tiny_dataset / items.loc[row, "image"]
    path.unlink()
    path.symlink_to(path.name)
    bad = validate(tiny_dataset, check_images=check_images).report["filtered"]["bad_images"]
    assert bad["items"] == {items.loc[row, "item_id"]: "symlink loop"}


def test_a_csv_beside_a_parquet_is_refused_naming_both(tiny_dataset, prepare_params):
    """Which of the two is current is not known: the parquet must not win silently."""
    items = pd.read_parquet(tiny_dataset / "items.parquet")
    items.assign(labels=items["labels"].map("|".join)).to_csv(tiny_dataset / "items.csv", index=False)
    with pytest.raises(DatasetError, match=r"both items.parquet and items.csv in .*: keep the current one"):
        validate_dataset(tiny_dataset, prepare_params, 3)
