"""The raw-dataset importers: tiny fixtures in each exact raw format, the imported catalogue checked exactly."""

from __future__ import annotations

import ast
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import read_interactions
from PIL import Image

from collab_iu.dataset import read_raw_tables
from collab_iu.importers import IMPORTERS, RawFormatError, format_import_report, run_import
from collab_iu.importers.common import UNSAFE_ID_REASON
from collab_iu.params import ImportParams

# ---------------------------------------------------------------------------------------------
# helpers


def write_jpeg(path: Path, shade: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), shade, np.uint8)).save(path, format="JPEG")


def write_corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8 this is not a jpeg")


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))


def catalogue(out: Path) -> dict[str, tuple[str | None, list[str]]]:
    """item_id -> (image, labels) of an imported dataset."""
    items = pd.read_parquet(out / "items.parquet")
    images = [None if pd.isna(img) else img for img in items["image"]]
    return {i: (img, list(labs)) for i, img, labs in zip(items["item_id"], images, items["labels"], strict=True)}


def rows(out: Path) -> dict[tuple[str, str], tuple]:
    """(user_id, item_id) -> the rest of the interaction row."""
    inter = read_interactions(out)
    rest = [c for c in inter.columns if c not in ("user_id", "item_id")]
    return {(u, i): tuple(r) for u, i, *r in inter[["user_id", "item_id", *rest]].itertuples(index=False)}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_canonical(out: Path) -> None:
    items, interactions, problems, _ = read_raw_tables(out)
    assert problems == []
    assert set(interactions["item_id"]) <= set(items["item_id"])


# ---------------------------------------------------------------------------------------------
# MovieLens


def ratings_for(counts: dict[int, int]) -> list[tuple[int, int, float, int]]:
    """(user, movie, rating, timestamp): movie m rated by users 1..n with rating (user % 5) + 1."""
    out = []
    for movie, n in counts.items():
        out += [(user, movie, float(user % 5 + 1), 1_000_000 + 10 * movie + user) for user in range(1, n + 1)]
    return out


ML_COUNTS = {1: 5, 2: 6, 3: 5, 4: 4, 99: 2}  # movie 4 is too rare; 99 is not in the movies file


def make_ml1m(src: Path) -> None:
    write_lines(
        src / "movies.dat",
        [
            "1::Toy Story (1995)::Animation|Children's|Comedy",
            "2::Misérables, Les (1995)::Drama|Musical",
            "3::Untitled (1997)::(no genres listed)",
            "4::Rare Film (1990)::Horror",
        ],
        encoding="latin-1",
    )
    write_lines(src / "ratings.dat", [f"{u}::{m}::{int(r)}::{t}" for u, m, r, t in ratings_for(ML_COUNTS)])
    write_jpeg(src / "posters" / "1.jpg")
    write_corrupt(src / "posters" / "2.jpg")
    write_jpeg(src / "posters" / "4.jpg")  # a dropped movie: its poster is not brought in


def test_movielens_1m(tmp_path):
    src, out = tmp_path / "ml-1m", tmp_path / "out"
    make_ml1m(src)
    report = run_import("movielens", src, out, ImportParams())

    assert catalogue(out) == {
        "1": ("images/1.jpg", ["Animation", "Children's", "Comedy"]),
        "2": (None, ["Drama", "Musical"]),  # corrupt poster
        "3": (None, []),  # no poster; "(no genres listed)" is no label
    }
    inter = rows(out)
    assert len(inter) == 5 + 6 + 5
    assert inter[("4", "2")] == (5.0, 1_000_024)
    assert report["dropped"] == {
        "ratings of movies not in the movies file": 2,
        "movies with < 5 ratings": 1,
        "ratings of movies with < 5 ratings": 4,
    }
    assert report["images"] == {"found": 1, "missing": 1, "corrupt": 1}
    assert report["kept"] == {
        "items": 3,
        "labelled_items": 2,
        "unlabelled_items": 1,
        "users": 6,
        "interactions": 16,
        "labels": 5,
        "images": 1,
        "image_urls": 0,
    }
    assert report["notes"]["layout"] == "ml-1m/10m"
    assert report["notes"]["movies without genres (kept unlabelled)"] == 1
    assert "2" in report["corrupt_images"]
    assert os.path.samefile(out / "images" / "1.jpg", src / "posters" / "1.jpg")  # hard-linked
    assert not (out / "images" / "4.jpg").exists()
    assert not (out / "image_urls.csv").exists()
    assert read_interactions(out)["timestamp"].dtype == np.int64
    assert_canonical(out)


def test_movielens_copies_when_not_linking(tmp_path):
    src, out = tmp_path / "ml-1m", tmp_path / "out"
    make_ml1m(src)
    run_import("movielens", src, out, ImportParams(link_images=False))
    assert not os.path.samefile(out / "images" / "1.jpg", src / "posters" / "1.jpg")
    assert (out / "images" / "1.jpg").read_bytes() == (src / "posters" / "1.jpg").read_bytes()


def test_movielens_20m_csv(tmp_path):
    src, out = tmp_path / "ml-20m", tmp_path / "out"
    write_lines(
        src / "movies.csv",
        [
            "movieId,title,genres",
            "1,Toy Story (1995),Adventure|Animation",
            '11,"American President, The (1995)",Comedy|Drama|Romance',
            "131262,Innocence (2014),(no genres listed)",
            "7,Too Rare (1999),Comedy",
        ],
    )
    counts = {1: 2, 11: 3, 131262: 2, 7: 1}
    ratings = [f"{u},{m},{r},{t}" for u, m, r, t in ratings_for(counts)]
    write_lines(src / "ratings.csv", ["userId,movieId,rating,timestamp", *ratings])
    report = run_import("movielens", src, out, ImportParams(min_ratings=2))

    assert catalogue(out) == {
        "1": (None, ["Adventure", "Animation"]),
        "11": (None, ["Comedy", "Drama", "Romance"]),
        "131262": (None, []),
    }
    assert len(rows(out)) == 7
    assert rows(out)[("3", "11")] == (4.0, 1_000_113)
    assert report["dropped"] == {"movies with < 2 ratings": 1, "ratings of movies with < 2 ratings": 1}
    assert report["notes"]["layout"] == "ml-20m/25m/latest"
    assert report["images"] == {"found": 0, "missing": 3, "corrupt": 0}
    assert report["labels"] == {"Comedy": 1, "Adventure": 1, "Animation": 1, "Drama": 1, "Romance": 1}
    assert_canonical(out)


def test_movielens_100k_genre_flags(tmp_path):
    src, out = tmp_path / "ml-100k", tmp_path / "out"
    genres = [
        "unknown",
        "Action",
        "Adventure",
        "Animation",
        "Children's",
        "Comedy",
        "Crime",
        "Documentary",
        "Drama",
        "Fantasy",
        "Film-Noir",
        "Horror",
        "Musical",
        "Mystery",
        "Romance",
        "Sci-Fi",
        "Thriller",
        "War",
        "Western",
    ]

    def flags(*names: str) -> str:
        return "|".join("1" if g in names else "0" for g in genres)

    write_lines(
        src / "u.item",
        [
            "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
            + flags("Animation", "Children's", "Comedy"),
            f"2|Café Lumière (1995)|01-Jan-1995||http://us.imdb.com/x|{flags('Action', 'Thriller')}",
            f"267|unknown||||{flags('unknown')}",
        ],
        encoding="latin-1",
    )
    write_lines(src / "u.genre", [f"{g}|{i}" for i, g in enumerate(genres)] + [""])
    counts = {1: 5, 2: 5, 267: 5}
    write_lines(src / "u.data", [f"{u}\t{m}\t{int(r)}\t{t}" for u, m, r, t in ratings_for(counts)])
    write_jpeg(src / "posters" / "2.png")
    report = run_import("movielens", src, out, ImportParams())

    assert catalogue(out) == {
        "1": (None, ["Animation", "Children's", "Comedy"]),
        "2": ("images/2.png", ["Action", "Thriller"]),
        "267": (None, []),  # "unknown" is no genre
    }
    assert len(rows(out)) == 15
    assert report["dropped"] == {}
    assert report["notes"]["layout"] == "ml-100k"
    assert_canonical(out)


def test_movielens_malformed_ratings_line(tmp_path):
    src, out = tmp_path / "ml-1m", tmp_path / "out"
    make_ml1m(src)
    with open(src / "ratings.dat", "a") as f:
        f.write("7::1::4\n")  # line 23: the timestamp is missing
    with pytest.raises(RawFormatError, match=r"ratings\.dat, line 23: expected 4 fields"):
        run_import("movielens", src, out, ImportParams())
    assert not out.exists()


def test_movielens_bad_number_named_by_line(tmp_path):
    src, out = tmp_path / "ml-20m", tmp_path / "out"
    write_lines(src / "movies.csv", ["movieId,title,genres", "1,A (1995),Drama"])
    write_lines(src / "ratings.csv", ["userId,movieId,rating,timestamp", "1,1,4.0,100", "2,1,four,100"])
    with pytest.raises(RawFormatError, match=r"ratings\.csv, line 3: rating is not a number: 'four'"):
        run_import("movielens", src, out, ImportParams())


# ---------------------------------------------------------------------------------------------
# Pinterest


def make_pinterest(src: Path) -> None:
    write_lines(src / "ImageCategoryID.txt", ["Animals|1", "Art|2", "Food & Drink|3"])
    repins = []
    repins += [f"100|u{n % 4}|1|b1" for n in range(6)] + ["100|u9|2|b2" for _ in range(5)]  # 11: Animals wins 6-5
    repins += [f"200|u{n}|3|b3" for n in range(10)]  # exactly 10: dropped
    repins += [f"300|u{n}|3|b4" for n in range(5)] + [f"300|u{n}|2|b5" for n in range(5)] + ["300|u1|1|b6"]
    repins += ["300|u1|99|b7"]  # unknown category: dropped line; 300 keeps 11 (tie 5-5: smallest id, Art)
    repins += [f"400|u{n}|1|b8" for n in range(10)] + ["400|u1|42|b9"]  # 10 left after the unknown line
    repins += [f"../evil|u{n}|1|b" for n in range(11)]  # an id that would escape the images folder
    write_lines(src / "ImageDatasetRepinactivity", repins)
    write_lines(src / "ImageDatasetImagesURLs", [f"{pin}|http://img.example/{pin}.jpg" for pin in (100, 200, 300)])
    write_jpeg(src / "images" / "300.jpg")


def test_pinterest(tmp_path):
    src, out = tmp_path / "pinterest", tmp_path / "out"
    make_pinterest(src)
    report = run_import("pinterest", src, out, ImportParams())

    assert catalogue(out) == {"100": (None, ["Animals"]), "300": ("images/300.jpg", ["Art"])}
    inter = rows(out)
    assert inter[("u0", "100")] == (2.0,)  # u0 repinned pin 100 twice (n = 0, 4)
    assert inter[("u9", "100")] == (5.0,)
    assert inter[("u1", "300")] == (3.0,)  # categories 3, 2 and 1 (the unknown-category line is gone)
    assert sum(w for (w,) in inter.values()) == 22
    assert "timestamp" not in read_interactions(out).columns
    assert report["dropped"] == {
        "repin lines with an unknown category id": 2,
        UNSAFE_ID_REASON: 1,
        "pins with <= 10 repins": 2,
        "repin lines of pins with <= 10 repins": 20,
    }
    assert report["notes"]["pins with conflicting categories (most frequent kept)"] == 2
    assert report["labels"] == {"Animals": 1, "Art": 1}
    urls = pd.read_csv(out / "image_urls.csv", dtype=str)
    assert urls.to_dict("list") == {
        "item_id": ["100", "300"],
        "url": ["http://img.example/100.jpg", "http://img.example/300.jpg"],
    }
    assert not (tmp_path / "evil.jpg").exists()
    assert_canonical(out)


def test_pinterest_gzipped_as_distributed(tmp_path):
    src, plain, gz = tmp_path / "pinterest", tmp_path / "plain", tmp_path / "gz"
    make_pinterest(src)
    run_import("pinterest", src, plain, ImportParams())
    for name in ("ImageDatasetRepinactivity", "ImageDatasetImagesURLs"):
        (src / f"{name}.gz").write_bytes(gzip.compress((src / name).read_bytes()))
        (src / name).unlink()
    report = run_import("pinterest", src, gz, ImportParams())
    assert sorted(report["files"]) == [
        "ImageCategoryID.txt",
        "ImageDatasetImagesURLs.gz",
        "ImageDatasetRepinactivity.gz",
    ]
    assert catalogue(gz) == catalogue(plain) and rows(gz) == rows(plain)


def test_pinterest_threshold_is_an_option(tmp_path):
    src, out = tmp_path / "pinterest", tmp_path / "out"
    make_pinterest(src)
    report = run_import("pinterest", src, out, ImportParams(min_repins=9))
    assert sorted(catalogue(out)) == ["100", "200", "300", "400"]
    assert "pins with <= 9 repins" not in report["dropped"]


def test_pinterest_wrong_field_count(tmp_path):
    src, out = tmp_path / "pinterest", tmp_path / "out"
    make_pinterest(src)
    lines = (src / "ImageDatasetRepinactivity").read_text().splitlines()
    lines[4] = "100|u1|1"  # line 5: the board is missing
    write_lines(src / "ImageDatasetRepinactivity", lines)
    with pytest.raises(RawFormatError, match=r"ImageDatasetRepinactivity, line 5: expected 4 fields separated by '\|'"):
        run_import("pinterest", src, out, ImportParams())
    assert not out.exists()


def test_pinterest_extra_field(tmp_path):
    src, out = tmp_path / "pinterest", tmp_path / "out"
    make_pinterest(src)
    with open(src / "ImageDatasetImagesURLs", "a") as f:
        f.write("\n400|http://a|b\n")  # a blank line, then line 5 with 3 fields
    with pytest.raises(RawFormatError, match=r"ImageDatasetImagesURLs, line 5: expected 2 fields"):
        run_import("pinterest", src, out, ImportParams())


# ---------------------------------------------------------------------------------------------
# Amazon

K2 = ImportParams(k_core=2, min_label_items=2)

# (user, item, rating, time); with k = 2, A4 (one review) goes, then U4, then A5 (cascade).
AMAZON_REVIEWS = [
    ("U1", "A1", 5.0, 200),
    ("U2", "A1", 4.0, 110),
    ("U3", "A1", 3.0, 120),
    ("U1", "A1", 2.0, 100),
    ("U1", "A2", 4.0, 130),
    ("U2", "A2", 4.0, 140),
    ("U3", "A2", 1.0, 150),
    ("U1", "A3", 3.0, 160),
    ("U2", "A3", 5.0, 170),
    ("U4", "A4", 5.0, 180),
    ("U4", "A5", 5.0, 190),
    ("U1", "A5", 2.0, 191),
    ("U1", "A6", 4.0, 192),
    ("U2", "A6", 4.0, 193),
    ("U3", "A6", 4.0, 194),
]

AMAZON_META = [
    "{'asin': 'A1', 'title': \"Bob's Game\", 'price': 3.5, 'imUrl': 'http://img.example/A1.jpg', "
    "'salesRank': {'Toys & Games': 5}, "
    "'categories': [['Toys & Games', 'Games', 'Board Games'], ['Toys & Games', 'Puzzles']]}",
    "{'asin': 'A2', 'imUrl': 'http://img.example/A2.jpg', 'related': {'also_bought': ['A1', 'A3']}, "
    "'categories': [['Toys & Games', 'Games', 'Board Games']]}",
    "{'asin': 'A3', 'imUrl': 'http://img.example/A3.jpg', "
    "'categories': [['Toys & Games', 'Games', 'Card Games'], ['Baby']]}",
    "{'asin': 'A4', 'imUrl': 'http://img.example/A4.jpg', "
    "'categories': [['Toys & Games', 'Dolls']], 'gift': True, 'brand': None}",
    "{'asin': 'A9', 'categories': [['Toys & Games']]}",  # metadata without reviews: ignored
]


def make_amazon(src: Path, interactions: str = "reviews", category: str = "Toys_and_Games") -> None:
    if interactions == "reviews":
        lines = [
            json.dumps(
                {
                    "reviewerID": u,
                    "asin": i,
                    "reviewerName": "X",
                    "helpful": [0, 0],
                    "reviewText": "ok, fine",
                    "overall": r,
                    "summary": "s",
                    "unixReviewTime": t,
                    "reviewTime": "01 1, 2014",
                }
            )
            for u, i, r, t in AMAZON_REVIEWS
        ]
        src.mkdir(parents=True, exist_ok=True)
        with gzip.open(src / f"reviews_{category}.json.gz", "wt") as f:
            f.write("\n".join(lines) + "\n")
    else:
        write_lines(src / f"ratings_{category}.csv", [f"{u},{i},{r},{t}" for u, i, r, t in AMAZON_REVIEWS])
    write_lines(src / f"meta_{category}.json", AMAZON_META)
    write_jpeg(src / "images" / "A1.jpg")
    write_corrupt(src / "images" / "A3.jpg")


@pytest.mark.parametrize("interactions", ["reviews", "ratings"])
def test_amazon(tmp_path, interactions):
    src, out = tmp_path / "amazon", tmp_path / "out"
    make_amazon(src, interactions)
    write_jpeg(out / "images" / "A2.jpg", shade=40)  # downloaded by an earlier run
    report = run_import("amazon", src, out, K2)

    assert catalogue(out) == {
        "A1": ("images/A1.jpg", ["Games", "Games > Board Games"]),  # "Puzzles" (1 item) removed
        "A2": ("images/A2.jpg", ["Games", "Games > Board Games"]),
        "A3": (None, ["Games"]),  # "Games > Card Games" (1 item) merged into "Games"; corrupt image
        "A6": (None, []),  # no metadata
    }
    inter = rows(out)
    assert len(inter) == 11
    assert inter[("U1", "A1")] == (5.0, 200)  # the latest of U1's two reviews of A1
    assert ("U4", "A5") not in inter and ("U1", "A5") not in inter
    assert report["dropped"] == {
        "repeated reviews of an item by one user (latest kept)": 1,
        "users with < 2 interactions (2-core)": 1,
        "items with < 2 interactions (2-core)": 2,
        "interactions removed by the 2-core filter": 3,
        "labels merged into their parent (< 2 items)": 1,
        "top-level labels removed (< 2 items)": 1,
    }
    assert report["notes"]["top_category"] == "Toys & Games"
    assert report["notes"]["items without metadata (kept unlabelled, no URL)"] == 1
    assert report["images"] == {"found": 2, "missing": 1, "corrupt": 1}
    assert report["labels"] == {"Games": 3, "Games > Board Games": 2}
    urls = pd.read_csv(out / "image_urls.csv", dtype=str)
    assert urls["item_id"].tolist() == ["A1", "A2", "A3"]
    assert urls["url"].tolist()[0] == "http://img.example/A1.jpg"
    with Image.open(out / "images" / "A2.jpg") as im:
        assert np.asarray(im)[0, 0, 0] < 80  # the earlier download, untouched
    assert_canonical(out)


def test_amazon_labels_and_top_category_options(tmp_path):
    src, out = tmp_path / "amazon", tmp_path / "out"
    make_amazon(src)
    run_import("amazon", src, out, ImportParams(k_core=2, min_label_items=1))
    assert catalogue(out)["A1"][1] == ["Games", "Games > Board Games", "Puzzles"]
    assert catalogue(out)["A3"][1] == ["Games", "Games > Card Games"]
    report = run_import("amazon", src, out, ImportParams(k_core=2, min_label_items=1, top_category="Baby"), force=True)
    assert report["notes"]["items with metadata but no label under the top category (kept unlabelled)"] == 3
    assert all(labels == [] for _, labels in catalogue(out).values())  # "Baby" paths have no level below the root


def test_amazon_default_k_core_drops_everything_small(tmp_path):
    src, out = tmp_path / "amazon", tmp_path / "out"
    make_amazon(src)
    report = run_import("amazon", src, out, ImportParams())  # 5-core: no user has 5 items
    assert report["kept"]["items"] == 0 and report["kept"]["interactions"] == 0
    assert report["dropped"]["interactions removed by the 5-core filter"] == 14


@pytest.mark.parametrize(
    "bad_line",
    [
        "{'asin': 'A3', 'categories': [['Toys & Games', 'Games']",  # unbalanced
        "{'asin': 'A3', 'categories': [['Toys & Games']], 'x': __import__('os').system('touch {marker}')}",
        "__import__('os').system('touch {marker}')",
        "['asin', 'A3']",
    ],
)
def test_amazon_malformed_meta_line(tmp_path, bad_line):
    src, out = tmp_path / "amazon", tmp_path / "out"
    marker = tmp_path / "executed"
    make_amazon(src)
    bad_line = bad_line.replace("{marker}", str(marker))
    write_lines(src / "meta_Toys_and_Games.json", [*AMAZON_META[:2], bad_line, *AMAZON_META[2:]])
    with pytest.raises(RawFormatError, match=r"meta_Toys_and_Games\.json, line 3: not a dict literal"):
        run_import("amazon", src, out, K2)
    assert not marker.exists()
    assert not out.exists()


def test_amazon_never_calls_eval():
    import collab_iu.importers.amazon as amazon

    tree = ast.parse(Path(amazon.__file__).read_text())
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"eval", "exec", "compile"}


def test_amazon_bad_review_line(tmp_path):
    src, out = tmp_path / "amazon", tmp_path / "out"
    make_amazon(src, "ratings")
    with open(src / "ratings_Toys_and_Games.csv", "a") as f:
        f.write("U9,A1,5.0\n")
    with pytest.raises(RawFormatError, match=r"ratings_Toys_and_Games\.csv, line 16: expected 4 fields"):
        run_import("amazon", src, out, K2)


def test_amazon_review_missing_key(tmp_path):
    src, out = tmp_path / "amazon", tmp_path / "out"
    make_amazon(src, "ratings")
    good = '{"reviewerID": "U1", "asin": "A1", "overall": 5.0, "unixReviewTime": 1}'
    write_lines(src / "reviews_Toys_and_Games.json", [good, '{"reviewerID": "U1", "overall": 5.0}'])
    with pytest.raises(RawFormatError, match=r"reviews_Toys_and_Games\.json, line 2: missing 'asin'"):
        run_import("amazon", src, out, K2)


def test_amazon_loose_review_lines_are_read_as_literals(tmp_path):
    from collab_iu.importers.amazon import read_reviews

    path = tmp_path / "reviews_X.json"
    write_lines(
        path,
        [
            '{"reviewerID": "U1", "asin": "A1", "overall": 5.0, "unixReviewTime": 7}',
            "",
            "{'reviewerID': 'U2', 'asin': 'A1', 'overall': 3, 'unixReviewTime': 8, 'helpful': (0, 1)}",
        ],
    )
    assert read_reviews(path).to_dict("list") == {
        "user": ["U1", "U2"],
        "item": ["A1", "A1"],
        "rating": [5.0, 3.0],
        "timestamp": [7, 8],
    }


def test_amazon_several_categories(tmp_path):
    src = tmp_path / "amazon"
    make_amazon(src, category="Toys_and_Games")
    make_amazon(src, "ratings", category="Clothing_Shoes_and_Jewelry")
    with pytest.raises(RawFormatError, match="several categories.*Clothing_Shoes_and_Jewelry, Toys_and_Games"):
        run_import("amazon", src, tmp_path / "out", K2)


# ---------------------------------------------------------------------------------------------
# the import as a whole


def test_reimport_is_reused_until_something_changes(tmp_path):
    src, out = tmp_path / "ml-1m", tmp_path / "out"
    make_ml1m(src)
    first = run_import("movielens", src, out, ImportParams())
    assert first["reused"] is False
    before = snapshot(out)

    again = run_import("movielens", src, out, ImportParams())
    assert again["reused"] is True
    assert again["source_fingerprint"] == first["source_fingerprint"]
    assert snapshot(out) == before

    assert run_import("movielens", src, out, ImportParams(), force=True)["reused"] is False
    assert run_import("movielens", src, out, ImportParams(min_ratings=4))["reused"] is False  # options changed

    write_jpeg(out / "images" / "3.jpg")  # fetched into the dataset after the import
    report = run_import("movielens", src, out, ImportParams(min_ratings=4))
    assert report["reused"] is False
    assert catalogue(out)["3"][0] == "images/3.jpg"

    with open(src / "ratings.dat", "a") as f:
        f.write("50::3::4::5\n")
    assert run_import("movielens", src, out, ImportParams(min_ratings=4))["kept"]["interactions"] == 21


def test_prior_images_survive_reimport(tmp_path):
    src, out = tmp_path / "pinterest", tmp_path / "out"
    make_pinterest(src)
    run_import("pinterest", src, out, ImportParams())
    write_jpeg(out / "images" / "100.jpg")  # the downloader fetched pin 100
    report = run_import("pinterest", src, out, ImportParams())
    assert report["reused"] is False
    assert catalogue(out)["100"][0] == "images/100.jpg"
    assert (out / "images" / "100.jpg").exists()
    assert report["images"] == {"found": 2, "missing": 0, "corrupt": 0}


def test_format_error_leaves_previous_import_untouched(tmp_path):
    src, out = tmp_path / "ml-1m", tmp_path / "out"
    make_ml1m(src)
    run_import("movielens", src, out, ImportParams())
    before = snapshot(out)
    with open(src / "movies.dat", "a") as f:
        f.write("five::Broken\n")
    with pytest.raises(RawFormatError, match=r"movies\.dat, line 5"):
        run_import("movielens", src, out, ImportParams(), force=True)
    assert snapshot(out) == before


def test_explicit_images_folder(tmp_path):
    src, out, pictures = tmp_path / "ml-1m", tmp_path / "out", tmp_path / "pictures"
    make_ml1m(src)
    write_jpeg(pictures / "3.jpeg")
    report = run_import("movielens", src, out, ImportParams(), images=pictures)
    assert {i: img for i, (img, _) in catalogue(out).items()} == {"1": None, "2": None, "3": "images/3.jpeg"}
    assert report["images"] == {"found": 1, "missing": 2, "corrupt": 0}
    with pytest.raises(RawFormatError, match="images folder does not exist"):
        run_import("movielens", src, out, ImportParams(), images=tmp_path / "nowhere", force=True)


def test_unknown_kind_and_missing_files(tmp_path):
    assert sorted(IMPORTERS) == ["amazon", "movielens", "pinterest"]
    with pytest.raises(ValueError, match="unknown dataset kind"):
        run_import("flickr", tmp_path, tmp_path / "out", ImportParams())
    for kind in IMPORTERS:
        with pytest.raises(RawFormatError):
            run_import(kind, tmp_path, tmp_path / "out", ImportParams())
    assert not (tmp_path / "out").exists()


def test_format_import_report(tmp_path):
    src, out = tmp_path / "pinterest", tmp_path / "out"
    make_pinterest(src)
    text = format_import_report(run_import("pinterest", src, out, ImportParams()))
    assert "kept: 2 items (2 labelled, 0 unlabelled)" in text
    assert "images: 1 found, 1 missing, 0 corrupt; 2 image URLs" in text
    assert "pins with <= 10 repins: 2" in text
    assert "Animals (1)" in text
    assert "reused" in format_import_report(run_import("pinterest", src, out, ImportParams()))
