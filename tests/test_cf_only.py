"""A dataset with labels and interactions but no images: `prepare.cf_only` prepares it for the CF
diagnosis (prepare, split, cf: does the label probe beat popularity?); the cache and training refuse it
with one message, in the core, the CLI and Dagster alike."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import TINY_CF, read_items, tiny_params_tree, write_items

from collab_iu.dataset import CFOnlyDatasetError, DatasetError
from collab_iu.experiment import train_run
from collab_iu.params import REAL_IMAGES, Params, PrepareParams, SplitParams, params_from_dict
from collab_iu.splits import make_split
from collab_iu.stages import run_cache, run_cf, run_prepare, run_split
from collab_iu.validate import validate_dataset
from orchestration.cli import main

MIN_ITEMS = 3  # split.min_items_per_label
NO_IMAGE_MESSAGE = "empty label vocabulary: no item with a usable image has a label"
REFUSAL = ("dataset 'mine' was prepared for the CF diagnosis only (prepare.cf_only: true)", "training needs images")


def drop_images(folder: Path, rows: np.ndarray | None = None) -> None:
    """Null the `image` of `rows` (default: every item) and delete their files (every file when all go)."""
    items = read_items(folder)
    rows = np.arange(len(items)) if rows is None else rows
    for rel in items["image"].iloc[rows].dropna():
        (folder / rel).unlink()
    items.loc[rows, "image"] = None
    write_items(folder, items)
    if rows.size == len(items):
        shutil.rmtree(folder / "images")


@pytest.fixture
def imageless(copy_dataset) -> Path:
    """The tiny synthetic dataset (labels, interactions) with every image removed."""
    folder = copy_dataset("imageless")
    drop_images(folder)
    return folder


def dataset_params(root: Path, folder: Path, overrides: dict | None = None):
    """Tiny params whose default dataset 'mine' is `folder` (with `overrides` for it only)."""
    spec = {"source": "folder", "path": str(folder), "overrides": overrides or {}}
    return params_from_dict(tiny_params_tree(root, data={"default": "mine", "datasets": {"mine": spec}}))


# --- validation ------------------------------------------------------------------------------


def test_without_the_option_an_imageless_dataset_still_fails(imageless):
    with pytest.raises(DatasetError) as info:
        validate_dataset(imageless, PrepareParams(), MIN_ITEMS)
    message = str(info.value)
    assert f"items.parquet: {NO_IMAGE_MESSAGE}" in message
    assert "prepare.cf_only: true" in message  # and the way out


def test_cf_only_counts_every_labelled_item(imageless):
    result = validate_dataset(imageless, PrepareParams(cf_only=True), MIN_ITEMS)
    items = read_items(imageless)
    expected = Counter(label for labels in items["labels"] for label in labels)
    report = result.report
    assert report["cf_only"] is True
    assert report["items_with_image"] == 0 and report["items"] == len(items)
    assert report["labelled_items"] == int(sum(len(x) > 0 for x in items["labels"]))
    assert report["label_counts"] == dict(expected) and report["labels"] == len(expected)
    assert report["filtered"] == {}


def test_cf_only_tolerates_any_share_of_missing_images(tiny_dataset):
    with_image = np.flatnonzero(read_items(tiny_dataset)["image"].notna().to_numpy())
    gone = with_image[: len(with_image) // 2]
    items = read_items(tiny_dataset)
    for rel in items["image"].iloc[gone]:
        (tiny_dataset / rel).unlink()  # the paths stay in items.parquet: missing files
    with pytest.raises(DatasetError, match="prepare.max_bad_image_fraction"):
        validate_dataset(tiny_dataset, PrepareParams(), MIN_ITEMS)
    result = validate_dataset(tiny_dataset, PrepareParams(cf_only=True), MIN_ITEMS)
    assert result.report["filtered"]["bad_images"]["count"] == len(gone)
    assert result.report["items_with_image"] == len(with_image) - len(gone)
    assert result.items["image"].iloc[gone].isna().all()


def test_cf_only_rare_labels_are_counted_over_labelled_items(imageless):
    items = read_items(imageless)
    items["labels"] = [list(x) + (["rare_x"] if i < 2 else []) for i, x in enumerate(items["labels"])]
    write_items(imageless, items)
    with pytest.raises(DatasetError) as info:
        validate_dataset(imageless, PrepareParams(cf_only=True), MIN_ITEMS)
    assert "'rare_x' (2)" in str(info.value) and "fewer than 6 labelled items, too few" in str(info.value)
    result = validate_dataset(imageless, PrepareParams(cf_only=True, drop_rare_labels=True), MIN_ITEMS)
    assert result.report["filtered"]["rare_labels"]["labels"] == {"rare_x": 2}


def test_cf_only_without_any_label_is_still_fatal(imageless):
    items = read_items(imageless)
    items["labels"] = [[] for _ in range(len(items))]
    write_items(imageless, items)
    with pytest.raises(DatasetError, match="empty label vocabulary: no item has a label"):
        validate_dataset(imageless, PrepareParams(cf_only=True), MIN_ITEMS)


# --- split -----------------------------------------------------------------------------------


def test_split_without_images_stratifies_every_labelled_item(tiny_dataset_master):
    items = read_items(tiny_dataset_master)
    items["labels"] = [list(x) for x in items["labels"]]
    items.loc[items.index % 2 == 0, "image"] = None  # half the labelled items lose their image
    splits = make_split(items, SplitParams(), require_images=False)
    merged = items.merge(splits, on="item_id")
    held_out = merged[merged["split"] != "train"]
    assert held_out["labels"].map(bool).all()
    assert held_out["image"].isna().any() and held_out["image"].notna().any()
    for part in ("train", "test"):
        counts = Counter(label for labels in merged.loc[merged["split"] == part, "labels"] for label in labels)
        assert min(counts.values()) >= SplitParams().min_items_per_label and len(counts) == 5, part
    # with images required (the default) imageless items never leave train
    default = items.merge(make_split(items, SplitParams()), on="item_id")
    assert (default.loc[default["image"].isna(), "split"] == "train").all()


# --- the stages ------------------------------------------------------------------------------


@pytest.fixture
def diagnosed(imageless, tmp_path):
    """(params, data root) after prepare, split and cf of the imageless dataset, cf_only set for it alone."""
    root = tmp_path / "data"
    params = dataset_params(root, imageless, {"prepare.cf_only": True})
    assert params.prepare.cf_only is False and params.for_dataset("mine").prepare.cf_only is True
    run_prepare(params)
    run_split(params)
    run_cf(params)
    return params, root / "mine"


def test_prepare_split_cf_on_a_dataset_without_images(diagnosed):
    _, base = diagnosed
    prepared = json.loads((base / "prepared/report.json").read_text())
    assert prepared["cf_only"] is True and prepared["items_with_image"] == 0 and prepared["labels"] == 5
    split_report = json.loads((base / "split/report.json").read_text())
    assert split_report["cf_only"] is True
    items = pd.read_parquet(base / "prepared/items.parquet").merge(pd.read_parquet(base / "split/splits.parquet"))
    labelled = items["labels"].map(len) > 0
    test = labelled & (items["split"] == "test")
    assert test.sum() > 0 and items["image"].isna().all()
    assert split_report["labelled_train_items"] == int((labelled & (items["split"] == "train")).sum())

    probe = json.loads((base / "cf/report.json").read_text())["label_probe"]
    assert probe["test_items"] == int(test.sum())  # every test item has interactions in the tiny data
    assert probe["labels_evaluated"] == 5
    assert 0 < probe["popularity_map"] < probe["probe_map"] <= 1
    assert probe["lift"] == pytest.approx(probe["probe_map"] / probe["popularity_map"])
    # popularity of a label = its share of the test items (the AP of a constant score)
    shares = [np.mean([lab in x for x in items.loc[test, "labels"]]) for lab in sorted(prepared["label_counts"])]
    assert probe["popularity_map"] == pytest.approx(np.mean(shares))
    assert probe["verdict"] == "the interactions carry label information beyond popularity"


def test_cache_and_training_refuse_a_cf_only_dataset(diagnosed):
    params, base = diagnosed
    for attempt in (lambda: run_cache(params), lambda: train_run(params, "with_cf-r1-w2-s0", progress=False)):
        with pytest.raises(CFOnlyDatasetError) as info:
            attempt()
        assert all(part in str(info.value) for part in REFUSAL)
        assert "prepare.cf_only: false" in str(info.value)  # how to train it
    assert sorted(p.name for p in base.iterdir()) == ["cf", "prepared", "split"]


# --- the command line and Dagster ------------------------------------------------------------


def write_project(work: Path, folder: Path, **overrides) -> None:
    tree = tiny_params_tree(
        Path("data"),
        data={
            "default": "mine",
            "datasets": {"mine": {"source": "folder", "path": str(folder), "overrides": overrides}},
        },
    )
    tree["data"]["root"] = "data"
    (work / "params.yaml").write_text(yaml.safe_dump(tree))


def test_cli_prepare_split_cf_then_cache_and_train_exit_2(imageless, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    write_project(work, imageless)
    assert main(["prepare"]) == 2
    assert NO_IMAGE_MESSAGE in capsys.readouterr().err
    assert main(["prepare", "--set", "prepare.cf_only=true"]) == 0
    assert "for the CF diagnosis only (prepare.cf_only)" in capsys.readouterr().out
    assert main(["split"]) == 0 and main(["cf"]) == 0
    out = capsys.readouterr().out
    probe = json.loads((work / "data/mine/cf/report.json").read_text())["label_probe"]
    line = (
        f"label probe mAP {probe['probe_map']:.3f} vs popularity {probe['popularity_map']:.3f} "
        f"(x{probe['lift']:.1f}; 5 labels, {probe['test_items']} test items): "
        "the interactions carry label information beyond popularity"
    )
    assert line in out
    weight = Params().presets[REAL_IMAGES]["experiment.cf_weights"][0]  # a folder dataset: real_images
    for command in (["cache"], ["train", "--run", f"with_cf-r1-w{weight:g}-s0"], ["train"], ["evaluate"]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.startswith("error: ") and all(part in err for part in REFUSAL), command
        assert "data/mine/cf/report.json" in err
    assert not (work / "data/mine/cache").exists() and not (work / "data/mine/runs").exists()


def test_run_and_dagster_diagnose_then_refuse(imageless, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    write_project(work, imageless, **{"prepare.cf_only": True})
    assert main(["run"]) == 2
    captured = capsys.readouterr()
    assert "catalogue, splits, cf_embeddings materialised for mine" in captured.out
    assert "label probe mAP" in captured.out and "vs popularity" in captured.out
    assert all(part in captured.err for part in REFUSAL)
    assert sorted(p.name for p in (work / "data/mine").iterdir()) == ["cf", "prepared", "split"]
    # the image cache asset (what dvc.yaml's cache stage runs) fails with the same message
    assert main(["materialize", "image_cache", "--partition", "mine"]) == 2
    err = capsys.readouterr().err
    assert "materialising image_cache [mine] failed" in err and all(part in err for part in REFUSAL)


# --- MovieLens without posters ---------------------------------------------------------------

GENRES = ["unknown", "Action", "Comedy", "Drama"]


def write_ml100k(src: Path, n_movies: int = 60, n_users: int = 40) -> None:
    """An ml-100k layout without posters: genre flags in u.item, genre-driven ratings in u.data."""
    rng = np.random.default_rng(0)
    src.mkdir(parents=True)
    movies, ratings = [], []
    for movie in range(1, n_movies + 1):
        flags = ["0"] * len(GENRES)
        flags[1 + movie % 3] = "1"
        movies.append(f"{movie}|Movie {movie} (1999)|01-Jan-1999||http://example.org|{'|'.join(flags)}")
    for user in range(1, n_users + 1):
        for movie in range(1, n_movies + 1):
            if rng.random() < (0.5 if movie % 3 == user % 3 else 0.05):
                ratings.append(f"{user}\t{movie}\t{rng.integers(1, 6)}\t{881250949 + movie}")
    (src / "u.item").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    (src / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)))
    (src / "u.data").write_text("\n".join(ratings) + "\n")


def test_movielens_without_posters(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_ml100k(tmp_path / "ml-100k")
    spec = {"source": "movielens", "path": "ml-100k"}
    tree = {"data": {"default": "ml", "datasets": {"ml": spec}}, "cf": TINY_CF, "wandb": {"mode": "disabled"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    assert main(["import", "movielens", "--name", "ml"]) == 0
    assert "no images: training needs them" in capsys.readouterr().out
    items = pd.read_parquet(tmp_path / "data/ml/raw/items.parquet")
    assert items["image"].isna().all() and items["labels"].map(len).gt(0).all()
    assert main(["prepare"]) == 2
    assert NO_IMAGE_MESSAGE in capsys.readouterr().err

    spec["overrides"] = {"prepare.cf_only": True}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    for stage in ("prepare", "split", "cf"):
        assert main([stage]) == 0, stage
    probe = json.loads((tmp_path / "data/ml/cf/report.json").read_text())["label_probe"]
    assert probe["labels_evaluated"] == 3 and probe["probe_map"] > 1.5 * probe["popularity_map"]
    assert "the interactions carry label information beyond popularity" in capsys.readouterr().out
    assert main(["cache"]) == 2
    assert "dataset 'ml' was prepared for the CF diagnosis only" in capsys.readouterr().err
