"""Amazon product data 2014 (McAuley et al.) -> a canonical catalogue of product photos and category labels.

`source` holds the files of ONE category `<C>` (a folder per category; several categories
in one folder is a RawFormatError listing them):
- interactions, the first found of `reviews_<C>.json(.gz)` (one JSON object per line:
  reviewerID, asin, overall, unixReviewTime; loose Python-literal lines are accepted too),
  `reviews_<C>_5.json(.gz)`, or the ratings-only `ratings_<C>.csv` (no header: user,item,rating,timestamp);
- metadata `meta_<C>.json(.gz)`: one Python-literal dict per line (`asin`, `imUrl`,
  `categories`: a list of category paths), parsed with `ast.literal_eval`, never `eval`.

Rules, in this order:
1. repeated (user, item) pairs keep the latest review (file order breaks ties);
2. items whose id cannot name a file are dropped;
3. k-core: users and items with fewer than `k_core` interactions are dropped, repeatedly;
4. metadata is parsed for the kept items only (every line must still look like `{...}`;
   other items' lines are skipped); kept items without metadata stay, unlabelled and without URL;
5. labels: the category paths rooted at the top category (`top_category`, default the root
   found on most kept items; ties alphabetical); the root is dropped and every prefix of the
   rest is a label, joined with " > "; labels on fewer than `min_label_items` items are removed,
   deepest first (their items keep the parent label, which they already have).
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from collab_iu.importers.common import (
    Catalogue,
    Column,
    RawFormatError,
    count,
    drop_unsafe_ids,
    interaction_table,
    open_text,
    read_delimited,
)
from collab_iu.params import ImportParams

LEVEL_SEPARATOR = " > "
_FILE = re.compile(  # (role, category) pairs: groups 1-2, 3-4, 5-6
    r"^(?:(reviews)_(.+?)(?:_5)?\.json(?:\.gz)?|(ratings)_(.+)\.csv(?:\.gz)?|(meta)_(.+)\.json(?:\.gz)?)$"
)
_LEADING_ASIN = re.compile(r"""^\{\s*['"]asin['"]\s*:\s*['"]([^'"\\]*)['"]""")


def categories_in(source: Path) -> dict[str, dict[str, list[Path]]]:
    """Category -> role ("reviews", "ratings", "meta") -> files, for the files of `source`."""
    found: dict[str, dict[str, list[Path]]] = {}
    for path in sorted(source.iterdir()):
        m = _FILE.match(path.name)
        if m and path.is_file():
            role, category = next((m.group(i), m.group(i + 1)) for i in (1, 3, 5) if m.group(i))
            found.setdefault(category, {}).setdefault(role, []).append(path)
    return found


def _preferred(paths: list[Path]) -> Path:
    """Full reviews before the 5-core file; compressed or not, whichever sorts first."""
    return sorted(paths, key=lambda p: ("_5." in p.name, p.name))[0]


def raw_files(source: Path) -> list[Path]:
    """[interactions file, metadata file] of the one category in `source`; RawFormatError otherwise."""
    found = categories_in(source)
    if not found:
        raise RawFormatError(source, None, "no reviews_<C>.json(.gz), ratings_<C>.csv or meta_<C>.json(.gz) files")
    if len(found) > 1:
        raise RawFormatError(
            source, None, f"holds several categories ({', '.join(sorted(found))}); put each category in its own folder"
        )
    category, roles = next(iter(found.items()))
    interactions = roles.get("reviews") or roles.get("ratings")
    if not interactions:
        raise RawFormatError(source, None, f"no reviews_{category}.json(.gz) or ratings_{category}.csv")
    if "meta" not in roles:
        raise RawFormatError(source, None, f"no meta_{category}.json(.gz) (the labels and image URLs come from it)")
    return [_preferred(interactions), _preferred(roles["meta"])]


# ---------------------------------------------------------------------------------------------
# parsing


def _literal_dict(path: Path, number: int, line: str) -> dict:
    """A line that must be a Python dict literal; never evaluated as code."""
    try:
        value = ast.literal_eval(line)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise RawFormatError(path, number, f"not a dict literal ({type(exc).__name__}): {line[:80]!r}") from None
    if not isinstance(value, dict):
        raise RawFormatError(path, number, f"not a dict literal: {line[:80]!r}")
    return value


def read_reviews(path: Path) -> pd.DataFrame:
    """user, item, rating, timestamp from a reviews file (JSON lines, streamed)."""
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    times: list[int] = []
    with open_text(path, errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                review = json.loads(line)
            except ValueError:
                review = _literal_dict(path, number, line.strip())
            if not isinstance(review, dict):
                raise RawFormatError(path, number, "not a JSON object")
            try:
                user, item = review["reviewerID"], review["asin"]
                rating, time = float(review["overall"]), int(review["unixReviewTime"])
            except KeyError as exc:
                raise RawFormatError(path, number, f"missing {exc.args[0]!r}") from None
            except (TypeError, ValueError) as exc:
                raise RawFormatError(path, number, f"overall or unixReviewTime is not a number: {exc}") from None
            if not isinstance(user, str) or not isinstance(item, str) or not user or not item:
                raise RawFormatError(path, number, "reviewerID and asin must be non-empty strings")
            users.append(user)
            items.append(item)
            ratings.append(rating)
            times.append(time)
    return pd.DataFrame(
        {
            "user": pd.array(users, dtype="str"),
            "item": pd.array(items, dtype="str"),
            "rating": np.asarray(ratings, dtype=np.float64),
            "timestamp": np.asarray(times, dtype=np.int64),
        }
    )


def read_ratings(path: Path) -> pd.DataFrame:
    """user, item, rating, timestamp from a ratings-only CSV (no header)."""
    columns = [Column("user"), Column("item"), Column("rating", "float"), Column("timestamp", "int")]
    return read_delimited(path, columns, sep=",")


def read_meta(path: Path, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """asin -> {"url", "paths"} for the wanted asins (first line wins)."""
    meta: dict[str, dict[str, Any]] = {}
    with open_text(path, errors="replace") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            if not (line.startswith("{") and line.endswith("}")):
                raise RawFormatError(path, number, f"not a dict literal: {line[:80]!r}")
            quick = _LEADING_ASIN.match(line)
            if quick and (quick.group(1) not in wanted or quick.group(1) in meta):
                continue
            record = _literal_dict(path, number, line)
            asin = record.get("asin")
            if not isinstance(asin, str):
                raise RawFormatError(path, number, "no 'asin' string")
            if asin not in wanted or asin in meta:
                continue
            meta[asin] = {"url": _url(record.get("imUrl")), "paths": _paths(path, number, record.get("categories", []))}
    return meta


def _url(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _is_path(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(s, str) for s in value)


def _paths(path: Path, number: int, value: Any) -> list[list[str]]:
    if not isinstance(value, list) or not all(_is_path(p) for p in value):
        raise RawFormatError(path, number, "'categories' must be a list of lists of strings")
    return [[s.strip() for s in p if s.strip()] for p in value]


# ---------------------------------------------------------------------------------------------
# filtering and labels


def latest_per_pair(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, item): the latest by timestamp, the last in the file on ties; file order kept."""
    order = np.argsort(df["timestamp"].to_numpy(), kind="stable")
    keep = ~df.iloc[order].duplicated(["user", "item"], keep="last")
    return df.iloc[np.sort(order[keep.to_numpy()])]


def k_core(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """The rows left once every user and item has at least `k` rows (filtering repeated until stable)."""
    users, _ = pd.factorize(df["user"])
    items, _ = pd.factorize(df["item"])
    keep = np.ones(len(df), dtype=bool)
    while True:
        user_n = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_n = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        new = keep & (user_n[users] >= k) & (item_n[items] >= k)
        if (new == keep).all():
            return df[keep]
        keep = new


def top_category(meta: dict[str, dict[str, Any]], chosen: str | None, path: Path) -> str:
    """The root of the category tree: `chosen`, else the root found on most items (ties: alphabetical)."""
    roots = Counter(root for m in meta.values() for root in {p[0] for p in m["paths"] if p})
    if chosen is not None:
        if chosen not in roots:
            known = ", ".join(sorted(roots))
            raise RawFormatError(path, None, f"top_category {chosen!r} roots no kept item's path (roots: {known})")
        return chosen
    if not roots:
        raise RawFormatError(path, None, "no kept item has a category path")
    return min(roots, key=lambda r: (-roots[r], r))


def item_labels(paths: list[list[str]], root: str) -> set[str]:
    """Every prefix (joined with " > ") of the paths under `root`, the root itself left out."""
    labels = set()
    for p in paths:
        if p and p[0] == root:
            labels.update(LEVEL_SEPARATOR.join(p[1:depth]) for depth in range(2, len(p) + 1))
    return labels


def merge_rare(labels: list[set[str]], min_items: int) -> tuple[int, int]:
    """Remove labels on fewer than `min_items` items, deepest first.

    Returns (labels merged into their parent, top-level labels removed).
    """
    counts = Counter(label for item in labels for label in item)
    rare = sorted((lab for lab, n in counts.items() if n < min_items), key=lambda lab: -lab.count(LEVEL_SEPARATOR))
    doomed = set(rare)
    for item in labels:
        item -= doomed
    top_level = sum(LEVEL_SEPARATOR not in lab for lab in rare)
    return len(rare) - top_level, top_level


# ---------------------------------------------------------------------------------------------


def read_amazon(source: Path, options: ImportParams) -> Catalogue:
    """Parse the Amazon category in `source` into a catalogue (see the module docstring for the rules)."""
    inter_path, meta_path = raw_files(source)
    df = read_reviews(inter_path) if inter_path.name.startswith("reviews_") else read_ratings(inter_path)
    dropped: dict[str, int] = {}

    deduped = latest_per_pair(df)
    count(dropped, "repeated reviews of an item by one user (latest kept)", len(df) - len(deduped))
    df = drop_unsafe_ids(deduped, "item", dropped)

    core = k_core(df, options.k_core)
    k = options.k_core
    count(dropped, f"users with < {k} interactions ({k}-core)", df["user"].nunique() - core["user"].nunique())
    count(dropped, f"items with < {k} interactions ({k}-core)", df["item"].nunique() - core["item"].nunique())
    count(dropped, f"interactions removed by the {k}-core filter", len(df) - len(core))

    item_ids = sorted(core["item"].unique().tolist())
    meta = read_meta(meta_path, set(item_ids))
    root = top_category(meta, options.top_category, meta_path) if item_ids else options.top_category
    labels = [item_labels(meta[i]["paths"], root) if i in meta else set() for i in item_ids]
    outside = sum(1 for i, labs in zip(item_ids, labels, strict=True) if i in meta and not labs)
    merged, removed = merge_rare(labels, options.min_label_items)
    count(dropped, f"labels merged into their parent (< {options.min_label_items} items)", merged)
    count(dropped, f"top-level labels removed (< {options.min_label_items} items)", removed)

    items = pd.DataFrame({"item_id": item_ids, "labels": [sorted(labs) for labs in labels]})
    interactions = interaction_table(core["user"], core["item"], core["rating"], core["timestamp"])
    with_url = [i for i in item_ids if i in meta and meta[i]["url"]]
    urls = pd.DataFrame({"item_id": with_url, "url": [meta[i]["url"] for i in with_url]})
    notes = {
        "category": meta_path.name.split("_", 1)[1].split(".json")[0],
        "top_category": root,
        "items without metadata (kept unlabelled, no URL)": len(item_ids) - len(meta),
        "items with metadata but no label under the top category (kept unlabelled)": outside,
    }
    return Catalogue(items, interactions, urls, [inter_path.name, meta_path.name], dropped, notes)
