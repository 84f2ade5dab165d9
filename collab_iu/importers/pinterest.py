"""Pinterest (Zhong et al., social-curation repins) -> a canonical catalogue.

`source` holds:
- `ImageDatasetRepinactivity` (or `.txt`, or `.gz` as distributed): `pin_id|user_id|category_id|board_id` per repin;
- `ImageCategoryID.txt` (or no suffix): `name|category_id`;
- `ImageDatasetImagesURLs` (or `.txt`, `.gz`), optional: `pin_id|url`.

Rules, in this order:
1. repin lines whose category id is not in the category file are dropped;
2. pins whose id cannot name a file (`/`, `\\`, leading `.`) are dropped;
3. pins keep only with MORE than `min_repins` remaining repin lines;
4. a pin's single label is its most frequent category over its repins (ties: the smallest
   category id); pins whose repins disagree are counted in the notes;
5. interactions are (user, pin) pairs, weight = how many times that user repinned that pin.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from collab_iu.importers.common import (
    Catalogue,
    Column,
    RawFormatError,
    count,
    drop_unsafe_ids,
    interaction_table,
    numbered_lines,
    read_delimited,
    read_text,
)
from collab_iu.params import ImportParams

REPINS = ("ImageDatasetRepinactivity", "ImageDatasetRepinactivity.txt", "ImageDatasetRepinactivity.gz")
CATEGORIES = ("ImageCategoryID.txt", "ImageCategoryID")
URLS = ("ImageDatasetImagesURLs", "ImageDatasetImagesURLs.txt", "ImageDatasetImagesURLs.gz")


def _first(source: Path, names: tuple[str, ...]) -> Path | None:
    return next((source / n for n in names if (source / n).is_file()), None)


def raw_files(source: Path) -> list[Path]:
    """The raw files an import of `source` reads (repins, categories[, urls]); RawFormatError if one is missing."""
    files = []
    for names in (REPINS, CATEGORIES):
        path = _first(source, names)
        if path is None:
            raise RawFormatError(source, None, f"no {' or '.join(names)} (is this the Pinterest data?)")
        files.append(path)
    urls = _first(source, URLS)
    return files + ([urls] if urls else [])


def read_categories(path: Path) -> dict[int, str]:
    """Category id -> name from `name|category_id` lines."""
    names: dict[int, str] = {}
    for number, line in numbered_lines(read_text(path)):
        if "|" not in line:
            raise RawFormatError(path, number, "expected 'name|category_id'")
        name, raw_id = (part.strip() for part in line.rsplit("|", 1))
        try:
            category = int(raw_id)
        except ValueError:
            raise RawFormatError(path, number, f"category id is not an integer: {raw_id!r}") from None
        if not name:
            raise RawFormatError(path, number, "empty category name")
        if names.get(category, name) != name:
            raise RawFormatError(path, number, f"category id {category} is already {names[category]!r}")
        names[category] = name
    if not names:
        raise RawFormatError(path, None, "no categories")
    return names


def read_pinterest(source: Path, options: ImportParams) -> Catalogue:
    """Parse the Pinterest files in `source` into a catalogue (see the module docstring for the rules)."""
    files = raw_files(source)
    repin_path, category_path = files[:2]
    names = read_categories(category_path)
    repins = read_delimited(
        repin_path,
        [Column("pin_id"), Column("user_id"), Column("category"), Column("board_id", required=False)],
        sep="|",
    )
    dropped: dict[str, int] = {}

    category = pd.to_numeric(repins["category"].str.strip(), errors="coerce")
    known = category.isin(list(names))
    count(dropped, "repin lines with an unknown category id", (~known).sum())
    repins = pd.DataFrame(
        {"pin": repins["pin_id"][known], "user": repins["user_id"][known], "category": category[known].astype("int64")}
    )
    repins = drop_unsafe_ids(repins, "pin", dropped)

    per_pin = repins["pin"].value_counts()
    rare = per_pin.index[per_pin <= options.min_repins]
    count(dropped, f"pins with <= {options.min_repins} repins", len(rare))
    count(dropped, f"repin lines of pins with <= {options.min_repins} repins", per_pin[rare].sum())
    repins = repins[~repins["pin"].isin(rare)]

    votes = repins.groupby(["pin", "category"]).size().rename("n").reset_index()
    conflicting = int((votes.groupby("pin").size() > 1).sum())
    winners = votes.sort_values(["pin", "n", "category"], ascending=[True, False, True]).drop_duplicates("pin")
    items = pd.DataFrame(
        {"item_id": winners["pin"].to_numpy(), "labels": [[names[c]] for c in winners["category"]]}
    ).reset_index(drop=True)

    pairs = repins.groupby(["user", "pin"]).size()
    interactions = interaction_table(pairs.index.get_level_values("user"), pairs.index.get_level_values("pin"), pairs)

    urls = None
    if len(files) > 2:
        table = read_delimited(files[2], [Column("pin_id"), Column("url")], sep="|")
        table = table[table["pin_id"].isin(items["item_id"])].drop_duplicates("pin_id")
        urls = pd.DataFrame({"item_id": table["pin_id"].to_numpy(), "url": table["url"].str.strip().to_numpy()})

    notes = {"pins with conflicting categories (most frequent kept)": conflicting, "categories": len(names)}
    if urls is None:
        notes["url file"] = f"none ({' or '.join(URLS)} not found)"
    return Catalogue(items, interactions, urls, [p.name for p in files], dropped, notes)
