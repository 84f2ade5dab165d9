"""A paper dataset end to end, as a new user runs it: import the raw files with the CLI, fetch the
image URLs from a local server, declare the dataset in params.yaml and run the stages on it."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import TINY_CF, TINY_TRAIN
from PIL import Image

from collab_iu.params import REAL_IMAGES, Params
from orchestration.cli import main

GENRES = ["Action", "Comedy", "Drama"]


def _jpeg(genre: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (24, 24, 3), dtype=np.uint8)
    pixels[..., genre] += 150  # the genre shows in the colour
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_ml1m(src: Path, n_movies: int = 90, n_users: int = 40) -> None:
    """An ml-1m layout: latin-1 `::` files, posters <movieId>.jpg (one missing), sparse genre-driven ratings."""
    rng = np.random.default_rng(0)
    (src / "posters").mkdir(parents=True)
    movies, ratings = [], []
    for movie in range(1, n_movies + 1):
        genre = movie % 3
        movies.append(f"{movie}::Café {movie} (1999)::{GENRES[genre]}")
        if movie != 7:
            (src / "posters" / f"{movie}.jpg").write_bytes(_jpeg(genre, movie))
    for user in range(1, n_users + 1):
        liked = user % 3
        for movie in range(1, n_movies + 1):
            if rng.random() < (0.5 if movie % 3 == liked else 0.05):
                ratings.append(f"{user}::{movie}::{rng.integers(1, 6)}::{978300000 + movie}")
    (src / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    (src / "ratings.dat").write_text("\n".join(ratings) + "\n")


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = {
        "cf": TINY_CF,
        "cache": {"image_size": 16, "workers": 1},
        "train": TINY_TRAIN,
        "experiment": {
            "methods": ["image_only", "with_cf"],
            "label_ratios": [0.5],
            "cf_weights": [2.0],
            "seeds": [0],
            "workers": 1,
            "bootstrap_resamples": 10,
        },
        "wandb": {"mode": "disabled"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    return tmp_path


def _declare(project: Path, name: str, spec: dict) -> None:
    tree = yaml.safe_load((project / "params.yaml").read_text())
    tree["data"] = {"datasets": {"synthetic": {"source": "synthetic"}, name: spec}, "default": name}
    (project / "params.yaml").write_text(yaml.safe_dump(tree))


def test_movielens_import_then_the_pipeline(project, capsys):
    write_ml1m(project / "ml-1m")
    assert main(["import", "movielens", "--source", "ml-1m", "--name", "ml"]) == 0
    out = capsys.readouterr().out
    assert "add the dataset to params.yaml" in out and "preset: paper_movielens" in out
    report = json.loads((project / "data/ml/raw/import_report.json").read_text())
    counts = pd.Series(
        [line.split("::")[1] for line in (project / "ml-1m/ratings.dat").read_text().split()]
    ).value_counts()
    kept = int((counts >= 5).sum())  # importers.min_ratings
    assert report["kept"]["items"] == kept and report["dropped"] == {
        "movies with < 5 ratings": 90 - kept,
        "ratings of movies with < 5 ratings": int(counts[counts < 5].sum()),
    }
    assert report["images"]["missing"] == int(counts.get("7", 0) >= 5)

    overrides = {"train.epochs": 1, "cache.image_size": 32}  # the real_images preset, at a tiny resolution
    _declare(project, "ml", {"source": "movielens", "path": "ml-1m", "overrides": overrides})
    for stage in ("prepare", "split", "cf", "cache", "features", "train", "evaluate"):  # real_images: features
        assert main([stage]) == 0, stage
    prepared = json.loads((project / "data/ml/prepared/report.json").read_text())
    assert prepared["imported"]["reused"] is True  # the import above, unchanged raw files
    assert prepared["items"] == kept and prepared["items_with_image"] == kept - report["images"]["missing"]
    summary = json.loads((project / "data/ml/evaluation/summary.json").read_text())
    weight = Params().presets[REAL_IMAGES]["experiment.cf_weights"][0]  # a real-images dataset: its preset's
    with_cf = f"with_cf-r0.5-w{weight:g}-s0"
    assert {r["run_key"] for r in summary["runs"]} == {"image_only-r0.5-w0-s0", with_cf}
    assert json.loads((project / f"data/ml/runs/{with_cf}/train.json").read_text())["epochs"] == 1


def test_import_errors_exit_2_naming_the_file(project, capsys):
    (project / "ml-1m").mkdir()
    (project / "ml-1m/movies.dat").write_text("1::Toy Story (1995)\n")  # a field missing
    (project / "ml-1m/ratings.dat").write_text("1::1::5::978300760\n")
    assert main(["import", "movielens", "--source", "ml-1m", "--name", "ml"]) == 2
    err = capsys.readouterr().err
    assert "movies.dat" in err and "line 1" in err
    assert not (project / "data/ml/raw").exists()
    assert main(["import", "amazon", "--name", "nowhere"]) == 2
    assert "give --source" in capsys.readouterr().err


class _Images(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        pin = int(Path(self.path).stem)
        if pin % 10 == 0:  # every tenth pin's image is gone
            self.send_error(404)
            return
        body = _jpeg(pin % 3, pin)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_pinterest_import_fetch_images_then_prepare(project, capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        src = project / "pinterest"
        src.mkdir()
        (src / "ImageCategoryID.txt").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)))
        repins = [f"{pin}|u{(pin + k) % 30}|{pin % 3}|b{pin}" for pin in range(1, 61) for k in range(12)]
        (src / "ImageDatasetRepinactivity").write_text("\n".join(repins) + "\n")
        base = f"http://127.0.0.1:{server.server_port}"
        (src / "ImageDatasetImagesURLs").write_text("".join(f"{pin}|{base}/{pin}.jpg\n" for pin in range(1, 61)))
        _declare(project, "pins", {"source": "pinterest", "path": "pinterest"})

        assert main(["import", "pinterest", "--name", "pins"]) == 0
        assert "collab-iu fetch-images --dataset pins" in capsys.readouterr().out
        raw = project / "data/pins/raw"
        assert pd.read_parquet(raw / "items.parquet")["image"].isna().all()
        assert main(["prepare"]) == 2
        assert "run `collab-iu fetch-images --dataset pins` first" in capsys.readouterr().err
        assert main(["fetch-images", "--dataset", "pins", "--backoff", "0.01", "--strict"]) == 1  # 6 are 404
        fetched = json.loads((raw / "fetch_report.json").read_text())
        assert (fetched["downloaded"], fetched["failed"]) == (54, 6)
        items = pd.read_parquet(raw / "items.parquet")
        assert items["image"].notna().sum() == 54
        assert main(["prepare", "--set", "prepare.max_bad_image_fraction=0.2"]) == 0
        prepared = json.loads((project / "data/pins/prepared/report.json").read_text())
        assert prepared["imported"]["reused"] is False  # the fetched images changed the import's fingerprint
        assert prepared["items_with_image"] == 54 and prepared["labels"] == 3
    finally:
        server.shutdown()
