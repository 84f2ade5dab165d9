"""`collab-iu predict`: new images scored from pixels exactly as their cached copies, bad files skipped."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
import yaml
from helpers import tiny_params_tree

from collab_iu.artifacts import load_prepared
from collab_iu.experiment import load_run_model, train_run
from collab_iu.image_cache import load_image_cache
from collab_iu.layout import dataset_layout
from collab_iu.params import params_from_dict
from collab_iu.predict import CSV_COLUMNS, ModelFolderError, predict_images
from collab_iu.stages import run_cache, run_cf, run_prepare, run_split
from collab_iu.train import predict_scores
from orchestration.cli import main as cli_entry

RUN_KEY = "with_cf-r1-w1-s0"
TINY_TRAIN = {"epochs": 1, "batch_size": 32, "device": "cpu", "num_threads": 1}
# cache at 12 px, model input 16 px: predict must decode at the cache size, then resize like eval does
SIZES = {"cache": {"image_size": 12, "workers": 1}, "augment": {"output_size": 16}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_data")
    params = params_from_dict(tiny_params_tree(root, train=TINY_TRAIN, **SIZES))
    for stage in (run_prepare, run_split, run_cf, run_cache):
        stage(params)
    train_run(params, RUN_KEY, progress=False)
    layout = dataset_layout(params)
    return params, layout, layout.runs / RUN_KEY


@pytest.fixture(scope="module")
def sample(trained):
    """(raw image paths, cache rows) of six items of the dataset."""
    _, layout, _ = trained
    items, _ = load_prepared(layout)
    cache = load_image_cache(layout.cache)
    rows = cache.rows(items["item_id"])
    chosen = np.flatnonzero(rows >= 0)[:6]
    return [layout.raw / items["image"].iloc[i] for i in chosen], rows[chosen]


@pytest.fixture
def images_dir(sample, tmp_path):
    """A folder tree with three of the sample images (one in a subfolder) and a non-image file."""
    paths, _ = sample
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(paths[0], folder / "b.png")
    shutil.copy(paths[1], folder / "a.PNG")
    shutil.copy(paths[2], folder / "sub" / "c.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def corrupt(tmp_path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    return path


@pytest.fixture
def cli_main():
    """The `collab-iu` entry point, in this process."""
    return cli_entry


def test_scores_match_the_cached_images(trained, sample):
    _, layout, run_dir = trained
    paths, rows = sample
    model, info = load_run_model(run_dir)
    vocabulary = info["vocabulary"]
    expected = predict_scores(
        model, load_image_cache(layout.cache).images, rows, info["input_size"], torch.device("cpu")
    )

    full, skipped = predict_images(run_dir, paths, top_k=len(vocabulary), batch_size=4)
    assert skipped == []
    assert [p["path"] for p in full] == paths
    for prediction, row in zip(full, expected):
        scores = dict(prediction["labels"])
        assert sorted(scores) == sorted(vocabulary)
        np.testing.assert_allclose([scores[label] for label in vocabulary], row, atol=1e-5)

    top, _ = predict_images(run_dir, paths)  # top_k=3
    for prediction, row in zip(top, expected):
        labels = prediction["labels"]
        assert len(labels) == 3
        scores = [s for _, s in labels]
        assert all(label in vocabulary for label, _ in labels)
        assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)
        np.testing.assert_allclose(scores, np.sort(row)[::-1][:3], atol=1e-5)


def test_folder_expands_recursively_and_sorted(trained, images_dir, sample):
    _, _, run_dir = trained
    predictions, skipped = predict_images(run_dir, [images_dir], top_k=2)
    assert [p["path"] for p in predictions] == [
        images_dir / "a.PNG",
        images_dir / "b.png",
        images_dir / "sub" / "c.png",
    ]
    assert skipped == []  # notes.txt is not an image suffix: not even tried
    direct, _ = predict_images(run_dir, [sample[0][0]], top_k=2)
    assert predictions[1]["labels"] == direct[0]["labels"]  # b.png is a copy of the first sample image


def test_unreadable_files_are_skipped_and_the_rest_predicted(trained, sample, corrupt, tmp_path):
    _, _, run_dir = trained
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(sample[0][0].read_bytes()[:60])
    missing = tmp_path / "nope.png"
    predictions, skipped = predict_images(run_dir, [corrupt, sample[0][0], missing, truncated, sample[0][1]])
    assert [p["path"] for p in predictions] == [sample[0][0], sample[0][1]]
    reasons = dict(skipped)
    assert set(reasons) == {corrupt, missing, truncated}
    assert reasons[missing] == "missing"
    assert reasons[corrupt].startswith("undecodable") and reasons[truncated].startswith("undecodable")


def test_invalid_model_folder(tmp_path, sample):
    with pytest.raises(ModelFolderError, match="model.json and best.pt missing"):
        predict_images(tmp_path, sample[0][:1])
    with pytest.raises(ModelFolderError, match="no such run folder"):
        predict_images(tmp_path / "absent", sample[0][:1])
    (tmp_path / "best.pt").write_bytes(b"")
    with pytest.raises(ModelFolderError, match=r"best.pt is a file: --model takes the run folder that holds it"):
        predict_images(tmp_path / "best.pt", sample[0][:1])


def test_cli_prints_one_line_per_image(trained, images_dir, cli_main, capsys):
    _, _, run_dir = trained
    vocabulary = load_run_model(run_dir)[1]["vocabulary"]
    assert cli_main(["predict", "--model", str(run_dir), str(images_dir), "--top-k", "2", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(images_dir / n) for n in ("a.PNG", "b.png", "sub/c.png")]
    for line in lines:
        pairs = [pair.rsplit(" ", 1) for pair in line.split("\t")[1].split(", ")]
        assert len(pairs) == 2 and all(label in vocabulary and 0 <= float(s) <= 1 for label, s in pairs)


def test_cli_csv_and_skips_exit_1(trained, images_dir, corrupt, cli_main, capsys, tmp_path):
    _, _, run_dir = trained
    out = tmp_path / "out" / "pred.csv"
    missing = tmp_path / "missing.jpg"
    argv = ["predict", "--model", str(run_dir), str(images_dir), str(corrupt), str(missing), "--output", str(out)]
    assert cli_main([*argv, "--device", "cpu"]) == 3  # some skipped: its own code, not a bug's
    err = capsys.readouterr().err
    assert f"skipped {corrupt}: undecodable" in err and f"skipped {missing}: missing" in err
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == CSV_COLUMNS
    assert len(rows) == 3 * 3  # three images, top 3
    assert [r["rank"] for r in rows[:3]] == ["1", "2", "3"]
    assert [float(r["score"]) for r in rows[:3]] == sorted((float(r["score"]) for r in rows[:3]), reverse=True)
    assert not [p for p in out.parent.iterdir() if p.name != "pred.csv"]  # no temporary file left


def test_cli_exit_2_when_nothing_readable_or_bad_model(trained, corrupt, cli_main, capsys, tmp_path):
    _, _, run_dir = trained
    assert cli_main(["predict", "--model", str(run_dir), str(corrupt), "--device", "cpu"]) == 2
    assert "error: none of the images could be read" in capsys.readouterr().err

    not_a_run = tmp_path / "not_a_run"
    not_a_run.mkdir()
    assert cli_main(["predict", "--model", str(not_a_run), str(corrupt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(not_a_run) in err and "model.json" in err


def test_cli_bare_run_key_resolved_via_params(trained, sample, cli_main, capsys, tmp_path):
    params, _, _ = trained
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    argv = ["predict", "--model", RUN_KEY, str(sample[0][0]), "--params", str(config), "--device", "cpu"]
    assert cli_main(argv) == 0
    assert capsys.readouterr().out.startswith(f"{sample[0][0]}\t")
    assert cli_main(["predict", "--model", "image_only-r1-w0-s9", str(sample[0][0]), "--params", str(config)]) == 2
    assert "no such run folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# every image mode, the pixel limit and symlink loops, as `predict` reads them


def test_every_mode_predicts_like_its_reference(trained, tmp_path):
    """Each mode's file scores as the 8-bit RGB PNG of its numpy reference (test_image_io) does."""
    from PIL import Image
    from test_image_io import CASE_NAMES, mode_cases

    _, _, run_dir = trained
    cases = mode_cases(tmp_path / "modes")
    (tmp_path / "refs").mkdir()
    references = [tmp_path / "refs" / f"{name}.png" for name in CASE_NAMES]
    for name, ref in zip(CASE_NAMES, references):
        Image.fromarray(cases[name][1], "RGB").save(ref)
    vocabulary = load_run_model(run_dir)[1]["vocabulary"]
    files = [cases[name][0] for name in CASE_NAMES]
    predictions, skipped = predict_images(run_dir, [*files, *references], top_k=len(vocabulary), batch_size=64)
    assert skipped == []
    scores = {p["path"]: dict(p["labels"]) for p in predictions}
    for name, file, ref in zip(CASE_NAMES, files, references):
        got, want = ([scores[p][label] for label in vocabulary] for p in (file, ref))
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=name)


def test_too_large_and_refused_images_are_skipped(trained, sample, tmp_path, cli_main, capsys):
    from PIL import Image
    from test_image_io import write_huge_png

    _, _, run_dir = trained
    good = sample[0][0]
    huge = write_huge_png(tmp_path / "huge.png")
    Image.fromarray(np.full((4, 4), 0.5, np.float32), "F").save(tmp_path / "float.tiff")
    predictions, skipped = predict_images(run_dir, [huge, good, tmp_path / "float.tiff"])
    assert [p["path"] for p in predictions] == [good]
    reasons = dict(skipped)
    assert reasons[huge].startswith("too large: 15000x15000 = 225,000,000 pixels, more than prepare.max_image_pixels")
    assert reasons[tmp_path / "float.tiff"].startswith("unsupported image mode F")
    _, skipped = predict_images(run_dir, [good], max_pixels=15)
    assert skipped[0][1].startswith("too large: ") and "max_image_pixels=15 " in skipped[0][1]
    assert cli_main(["predict", "--model", str(run_dir), str(huge), "--device", "cpu"]) == 2
    assert f"skipped {huge}: too large: 15000x15000" in capsys.readouterr().err


def test_symlink_loops_are_reported_not_dropped(trained, sample, tmp_path, cli_main, capsys):
    _, _, run_dir = trained
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(sample[0][0], folder / "good.png")
    (folder / "loop.png").symlink_to("loop.png")
    (folder / "broken.png").symlink_to("gone.png")
    predictions, skipped = predict_images(run_dir, [folder, folder / "loop.png"])
    assert [p["path"] for p in predictions] == [folder / "good.png"]
    assert skipped == [
        (folder / "broken.png", "broken symlink (its target gone.png does not exist)"),
        (folder / "loop.png", "symlink loop"),
        (folder / "loop.png", "symlink loop"),  # named: a loop, not "missing"
    ]
    assert cli_main(["predict", "--model", str(run_dir), str(folder), "--device", "cpu"]) == 3
    err = capsys.readouterr().err
    assert f"skipped {folder / 'loop.png'}: symlink loop" in err and f"skipped {folder / 'broken.png'}: broken" in err
    only_loop = tmp_path / "only_loop"
    only_loop.mkdir()
    (only_loop / "x.jpg").symlink_to("x.jpg")
    assert cli_main(["predict", "--model", str(run_dir), str(only_loop), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.startswith(f"skipped {only_loop / 'x.jpg'}: symlink loop\n")
