"""MovieLens (GroupLens) -> a canonical catalogue of movie posters labelled with genres.

The layout is detected from the files in `source`:
- ml-100k: `u.data` (tab: user, item, rating, timestamp) and `u.item` (pipe, latin-1:
  id|title|release date|video release date|IMDb URL| + one 0/1 flag per genre; the genre
  names come from `u.genre` when present, else the standard 19);
- ml-1m / ml-10m: `movies.dat` (`id::title::Genre1|Genre2`, UTF-8 or latin-1) and
  `ratings.dat` (`user::movie::rating::timestamp`);
- ml-20m / 25m / latest: `movies.csv` (header movieId,title,genres; quoted titles) and
  `ratings.csv` (header userId,movieId,rating,timestamp).

Rules: the pseudo-genres "(no genres listed)" and "unknown" are no labels (such movies are
kept unlabelled); ratings of movies missing from the movies file are dropped; movies with
fewer than `min_ratings` ratings are dropped with their ratings; a repeated movie id keeps
its first line. Interactions are the ratings (weight = rating, timestamp kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from collab_iu.importers.common import (
    Catalogue,
    Column,
    RawFormatError,
    count,
    interaction_table,
    numbered_lines,
    read_delimited,
    read_text,
)
from collab_iu.params import ImportParams

GENRES_100K = [
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
NOT_GENRES = {"(no genres listed)", "unknown"}
LAYOUTS = {  # layout -> (movies file, ratings file)
    "ml-100k": ("u.item", "u.data"),
    "ml-1m/10m": ("movies.dat", "ratings.dat"),
    "ml-20m/25m/latest": ("movies.csv", "ratings.csv"),
}
RATING_COLUMNS = [Column("user", "int"), Column("movie", "int"), Column("rating", "float"), Column("timestamp", "int")]


def detect_layout(source: Path) -> str:
    """Which MovieLens release `source` holds; RawFormatError if none."""
    for layout, names in LAYOUTS.items():
        if all((source / n).is_file() for n in names):
            return layout
    expected = "; ".join(" + ".join(names) for names in LAYOUTS.values())
    raise RawFormatError(source, None, f"no MovieLens files found (expected one of: {expected})")


def raw_files(source: Path) -> list[Path]:
    """The raw files an import of `source` reads."""
    layout = detect_layout(source)
    files = [source / n for n in LAYOUTS[layout]]
    if layout == "ml-100k" and (source / "u.genre").is_file():
        files.append(source / "u.genre")
    return files


def _genre_names(path: Path | None) -> list[str]:
    if path is None:
        return GENRES_100K
    by_index: dict[int, str] = {}
    for number, line in numbered_lines(read_text(path)):
        name, _, index = line.rpartition("|")
        if not name or not index.strip().isdigit():
            raise RawFormatError(path, number, "expected 'genre|index'")
        by_index[int(index)] = name
    if sorted(by_index) != list(range(len(by_index))):
        raise RawFormatError(path, None, f"genre indices are not 0..{len(by_index) - 1}")
    return [by_index[i] for i in range(len(by_index))]


def _movies_100k(path: Path, genres: list[str]) -> tuple[list[int], list[list[str]]]:
    ids, labels = [], []
    width = 5 + len(genres)
    for number, line in numbered_lines(path.read_bytes().decode("latin-1")):
        fields = line.split("|")
        if len(fields) != width:
            raise RawFormatError(path, number, f"expected {width} fields separated by '|', found {len(fields)}")
        flags = fields[5:]
        if not fields[0].strip().isdigit() or any(f not in ("0", "1") for f in flags):
            raise RawFormatError(path, number, "expected an integer movie id and 0/1 genre flags")
        ids.append(int(fields[0]))
        labels.append([g for g, f in zip(genres, flags, strict=True) if f == "1"])
    return ids, labels


def _movies_dat(path: Path) -> tuple[list[int], list[list[str]]]:
    ids, labels = [], []
    for number, line in numbered_lines(read_text(path)):
        fields = line.split("::")
        if len(fields) < 3 or not fields[0].strip().isdigit():
            raise RawFormatError(path, number, "expected 'MovieID::Title::Genre1|Genre2'")
        ids.append(int(fields[0]))
        labels.append([g for g in fields[-1].strip().split("|") if g])
    return ids, labels


def _movies_csv(path: Path) -> tuple[list[int], list[list[str]]]:
    movies = read_delimited(
        path, [Column("movieId", "int"), Column("title"), Column("genres")], sep=",", header=True, quoted=True
    )
    return movies["movieId"].tolist(), [[g for g in s.split("|") if g] for s in movies["genres"]]


def _read(source: Path, layout: str) -> tuple[list[int], list[list[str]], pd.DataFrame]:
    movies_name, ratings_name = LAYOUTS[layout]
    movies_path, ratings_path = source / movies_name, source / ratings_name
    if layout == "ml-100k":
        genre_file = source / "u.genre"
        ids, labels = _movies_100k(movies_path, _genre_names(genre_file if genre_file.is_file() else None))
        ratings = read_delimited(ratings_path, RATING_COLUMNS, sep="\t")
    elif layout == "ml-1m/10m":
        ids, labels = _movies_dat(movies_path)
        ratings = read_delimited(ratings_path, RATING_COLUMNS, sep="::")
    else:
        ids, labels = _movies_csv(movies_path)
        header = ("userId", "movieId", "rating", "timestamp")
        columns = [Column(n, c.kind) for n, c in zip(header, RATING_COLUMNS, strict=True)]
        ratings = read_delimited(ratings_path, columns, sep=",", header=True)
        ratings.columns = [c.name for c in RATING_COLUMNS]
    return ids, labels, ratings


def read_movielens(source: Path, options: ImportParams) -> Catalogue:
    """Parse the MovieLens release in `source` into a catalogue (see the module docstring for the rules)."""
    layout = detect_layout(source)
    ids, labels, ratings = _read(source, layout)
    dropped: dict[str, int] = {}

    genres = [[g for g in gs if g not in NOT_GENRES] for gs in labels]
    movies = pd.DataFrame({"movie": np.asarray(ids, dtype=np.int64), "labels": genres})
    duplicate = movies["movie"].duplicated()
    count(dropped, "repeated movie lines (first kept)", duplicate.sum())
    movies = movies[~duplicate]

    known = ratings["movie"].isin(movies["movie"])
    count(dropped, "ratings of movies not in the movies file", (~known).sum())
    ratings = ratings[known]

    per_movie = ratings["movie"].value_counts().reindex(movies["movie"], fill_value=0)
    rare = per_movie.index[per_movie < options.min_ratings]
    count(dropped, f"movies with < {options.min_ratings} ratings", len(rare))
    count(dropped, f"ratings of movies with < {options.min_ratings} ratings", per_movie[rare].sum())
    movies = movies[~movies["movie"].isin(rare)]
    ratings = ratings[~ratings["movie"].isin(rare)]

    items = pd.DataFrame({"item_id": movies["movie"].astype("str").to_numpy(), "labels": movies["labels"].to_list()})
    interactions = interaction_table(ratings["user"], ratings["movie"], ratings["rating"], ratings["timestamp"])
    notes = {
        "layout": layout,
        "movies without genres (kept unlabelled)": int(sum(not gs for gs in items["labels"])),
    }
    files = [p.name for p in raw_files(source)]
    return Catalogue(items, interactions, None, files, dropped, notes)
