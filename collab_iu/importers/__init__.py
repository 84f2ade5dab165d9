"""Importers for the paper's raw public datasets (Pinterest, MovieLens, Amazon 2014).

`run_import(kind, source, out, options)` turns the raw files in `source` into a canonical
dataset folder `out` (see collab_iu/dataset.py): `items.parquet`, `interactions.parquet`,
`image_urls.csv` (sources with image URLs), `images/` and `import_report.json`.

- Everything is parsed and checked before anything is written: a format error leaves `out`
  untouched. Each file is then written whole (temporary file + rename); the report is written
  last, so an interrupted import is redone next time.
- Images `<item_id>.jpg|.jpeg|.png` are looked up in `images` (else `source/images` or
  `source/posters`), then in `out/images/` (images fetched there earlier survive); the first
  that decodes is hard-linked (else copied) into `out/images/`. Items without a usable image
  are kept with `image` null.
- Item ids name files, so ids containing `/` or `\\` or starting with `.` are dropped
  (with their interactions) and counted under dropped.
- A second import with the same source fingerprint (raw files' names, sizes and mtimes, the
  image folders' listings, the options) returns the saved report with `reused: True`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from collab_iu.atomic import atomic_file, write_json
from collab_iu.image_io import resolve_inside
from collab_iu.importers import amazon, movielens, pinterest
from collab_iu.importers.common import (
    Catalogue,
    ImageChoice,
    RawFormatError,
    choose_images,
    fingerprint,
    is_safe_id,
    place_image,
)
from collab_iu.params import ImportParams

__all__ = ["IMPORTERS", "RawFormatError", "format_import_report", "run_import"]

IMPORTERS: dict[str, Callable[[Path, ImportParams], Catalogue]] = {
    "pinterest": pinterest.read_pinterest,
    "movielens": movielens.read_movielens,
    "amazon": amazon.read_amazon,
}
RAW_FILES: dict[str, Callable[[Path], list[Path]]] = {
    "pinterest": pinterest.raw_files,
    "movielens": movielens.raw_files,
    "amazon": amazon.raw_files,
}
REPORT = "import_report.json"
URLS = "image_urls.csv"
IMAGE_FOLDERS = ("images", "posters")  # looked for in `source` when no images folder is given

_ITEMS_SCHEMA = pa.schema([("item_id", pa.string()), ("image", pa.string()), ("labels", pa.list_(pa.string()))])
_INTERACTION_TYPES = {"user_id": pa.string(), "item_id": pa.string(), "weight": pa.float64(), "timestamp": pa.int64()}


def image_folder(source: Path, images: Path | None) -> Path | None:
    """The folder raw images are read from: `images`, else `source/images` or `source/posters`, else None."""
    if images is not None:
        if not Path(images).is_dir():
            raise RawFormatError(images, None, "the images folder does not exist")
        return Path(images)
    return next((source / name for name in IMAGE_FOLDERS if (source / name).is_dir()), None)


def _saved_report(out: Path) -> dict | None:
    try:
        report = json.loads((out / REPORT).read_text())
    except (OSError, ValueError):
        return None
    tables = all((out / f"{t}.parquet").is_file() for t in ("items", "interactions"))
    return report if isinstance(report, dict) and tables else None


def run_import(
    kind: str,
    source: Path,
    out: Path,
    options: ImportParams,
    images: Path | None = None,
    force: bool = False,
) -> dict:
    """Import the raw `kind` dataset in `source` into the canonical dataset folder `out`; return the report.

    Reuses the previous import (returning its report with `reused: True`) when the source
    fingerprint is unchanged and `force` is False. Raises RawFormatError on malformed raw files,
    before anything is written.
    """
    if kind not in IMPORTERS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted(IMPORTERS)}")
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise RawFormatError(source, None, "the source folder does not exist")
    raw = RAW_FILES[kind](source)
    folders = [image_folder(source, images), out / "images"]
    options_dump = options.model_dump(mode="json")
    if not force:
        saved = _saved_report(out)
        if saved is not None and saved.get("source_fingerprint") == fingerprint(kind, raw, folders, options_dump):
            return saved | {"reused": True}

    catalogue = IMPORTERS[kind](source, options)
    item_ids = catalogue.items["item_id"].tolist()
    unsafe = next((i for i in item_ids if not is_safe_id(i)), None)
    if unsafe is not None:  # the importers drop these; a bug must not write outside out/images
        raise RawFormatError(source, None, f"unsafe item id {unsafe!r}")
    choices = choose_images(item_ids, folders)
    image_paths = [
        None if c.path is None else f"images/{item_id}{c.path.suffix}"
        for item_id, c in zip(item_ids, choices, strict=True)
    ]
    escaping = next((p for p in image_paths if p is not None and resolve_inside(out, p) is None), None)
    if escaping is not None:
        raise RawFormatError(source, None, f"image {escaping!r} would be written outside {out}")

    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT).unlink(missing_ok=True)  # written last: an interrupted import is never reused
    (out / "images").mkdir(exist_ok=True)
    for path, choice in zip(image_paths, choices, strict=True):
        if path is not None:
            place_image(choice.path, out / path, options.link_images)
    _write_items(out, item_ids, image_paths, catalogue.items["labels"].tolist())
    _write_interactions(out, catalogue.interactions)
    _write_urls(out, catalogue.urls)

    report = _report(kind, source, options_dump, catalogue, image_paths, choices, folders[0])
    report["source_fingerprint"] = fingerprint(kind, raw, folders, options_dump)  # after images were placed
    write_json(report, out / REPORT)
    return report


def _write_items(out: Path, item_ids: list[str], images: list[str | None], labels: list[list[str]]) -> None:
    columns = [pa.array(item_ids, pa.string()), pa.array(images, pa.string()), pa.array(labels, pa.list_(pa.string()))]
    table = pa.table(columns, schema=_ITEMS_SCHEMA)
    with atomic_file(out / "items.parquet") as tmp:
        pq.write_table(table, tmp)


def _write_interactions(out: Path, interactions: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(interactions, preserve_index=False)
    schema = pa.schema([(name, _INTERACTION_TYPES[name]) for name in table.column_names])
    with atomic_file(out / "interactions.parquet") as tmp:
        pq.write_table(table.cast(schema), tmp)


def _write_urls(out: Path, urls: pd.DataFrame | None) -> None:
    if urls is None:  # the source gives no URLs: a stale list would mislead the downloader
        (out / URLS).unlink(missing_ok=True)
        return
    with atomic_file(out / URLS) as tmp:
        urls[["item_id", "url"]].to_csv(tmp, index=False)


def _report(
    kind: str,
    source: Path,
    options: dict,
    catalogue: Catalogue,
    image_paths: list[str | None],
    choices: list[ImageChoice],
    folder: Path | None,
) -> dict:
    labels = catalogue.items["labels"]
    label_counts = Counter(label for row in labels for label in row)
    labelled = int(sum(bool(row) for row in labels))
    status = Counter(c.status for c in choices)
    corrupt = {i: c.problem for i, c in zip(catalogue.items["item_id"], choices, strict=True) if c.status == "corrupt"}
    return {
        "kind": kind,
        "source": str(source.resolve()),
        "files": catalogue.files,
        "images_folder": None if folder is None else str(folder.resolve()),
        "options": options,
        "kept": {
            "items": len(labels),
            "labelled_items": labelled,
            "unlabelled_items": len(labels) - labelled,
            "users": int(catalogue.interactions["user_id"].nunique()),
            "interactions": len(catalogue.interactions),
            "labels": len(label_counts),
            "images": sum(p is not None for p in image_paths),
            "image_urls": 0 if catalogue.urls is None else len(catalogue.urls),
        },
        "dropped": dict(catalogue.dropped),
        "notes": dict(catalogue.notes),
        "images": {"found": status["found"], "missing": status["missing"], "corrupt": status["corrupt"]},
        "corrupt_images": dict(list(corrupt.items())[:50]),  # item id -> why it does not decode (the first 50)
        "labels": dict(sorted(label_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "reused": False,
    }


def format_import_report(report: dict) -> str:
    """A human-readable summary of an import report: what was kept and dropped, and why."""
    kept, images = report["kept"], report["images"]
    reused = " (reused: the source is unchanged)" if report.get("reused") else ""
    lines = [
        f"{report['kind']} import of {report['source']}{reused}",
        f"  files read: {', '.join(report.get('files', []))}",
        f"  kept: {kept['items']} items ({kept['labelled_items']} labelled, {kept['unlabelled_items']} unlabelled), "
        f"{kept['users']} users, {kept['interactions']} interactions, {kept['labels']} labels",
        f"  images: {images['found']} found, {images['missing']} missing, {images['corrupt']} corrupt"
        + (f"; {kept['image_urls']} image URLs listed in {URLS}" if kept.get("image_urls") else ""),
    ]
    if report["dropped"]:
        lines.append("  dropped:")
        lines += [f"    {reason}: {n}" for reason, n in report["dropped"].items()]
    else:
        lines.append("  dropped: nothing")
    if report.get("notes"):
        lines.append("  notes:")
        lines += [f"    {key}: {value}" for key, value in report["notes"].items()]
    if report["labels"]:
        shown = list(report["labels"].items())[:15]
        more = len(report["labels"]) - len(shown)
        listed = ", ".join(f"{label} ({n})" for label, n in shown)
        lines.append(f"  labels (items): {listed}" + (f", and {more} more" if more else ""))
    return "\n".join(lines)
