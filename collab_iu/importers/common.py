"""What every importer shares: the error type, the parsed result, raw-file reading, image lookup.

Delimited files are read with pandas' C parser (fast on tens of millions of lines); when
it fails, or a row comes out short, a line-by-line scan finds the first bad line so the
error can name it.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import pandas as pd

from collab_iu.errors import UserError
from collab_iu.fetch_images import image_name
from collab_iu.image_io import decode_problem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # in order of preference for one item
FORMAT_VERSION = 2  # part of the fingerprint: bump when an importer's output changes
UNSAFE_ID_REASON = "unsafe item ids (contain / or \\ or start with .)"


class RawFormatError(UserError, ValueError):
    """A raw file is not in the expected format; the message names the file, the line (1-based) and the problem."""

    def __init__(self, file: str | Path, line: int | None, problem: str):
        self.file = Path(file)
        self.line = line
        self.problem = problem
        where = f"{self.file}, line {line}" if line is not None else str(self.file)
        super().__init__(f"{where}: {problem}")


@dataclass
class Catalogue:
    """One importer's result, before images are attached and anything is written."""

    items: pd.DataFrame  # item_id (str), labels (list[str]); one row per kept item
    interactions: pd.DataFrame  # user_id (str), item_id (str), weight (float64)[, timestamp (int64)]
    urls: pd.DataFrame | None  # item_id, url of kept items; None when the source gives no URLs
    files: list[str]  # names of the raw files read
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count (the reason names the unit)
    notes: dict[str, Any] = field(default_factory=dict)  # facts worth reporting that are not drops


def count(dropped: dict[str, int], reason: str, n: int) -> None:
    """Add `n` to `dropped[reason]`; zero counts are not recorded."""
    if n:
        dropped[reason] = dropped.get(reason, 0) + int(n)


# ---------------------------------------------------------------------------------------------
# item ids become file names


def interaction_table(users, items, weights, timestamps=None) -> pd.DataFrame:
    """The canonical interactions: string user and item ids, float weights, optional int64 timestamps."""
    columns = {
        "user_id": pd.Series(users).astype("str").to_numpy(),
        "item_id": pd.Series(items).astype("str").to_numpy(),
        "weight": pd.Series(weights).astype("float64").to_numpy(),
    }
    if timestamps is not None:
        columns["timestamp"] = pd.Series(timestamps).astype("int64").to_numpy()
    return pd.DataFrame(columns)


def is_safe_id(item_id: str) -> bool:
    """Whether `item_id` can name a file inside the images folder."""
    return bool(item_id) and not any(c in item_id for c in "/\\\0") and not item_id.startswith(".")


def drop_unsafe_ids(df: pd.DataFrame, column: str, dropped: dict[str, int]) -> pd.DataFrame:
    """Rows of `df` whose `column` is a safe item id; the number of distinct unsafe ids is counted."""
    ids = df[column]
    bad = ids.str.startswith(".") | (ids == "")
    for char in ("/", "\\", "\0"):
        bad |= ids.str.contains(char, regex=False)
    safe = ~bad
    if safe.all():
        return df
    count(dropped, UNSAFE_ID_REASON, ids[~safe].nunique())
    return df[safe]


# ---------------------------------------------------------------------------------------------
# raw text


def open_text(path: Path, encoding: str = "utf-8", errors: str = "strict") -> IO[str]:
    """Open a text file for reading, gunzipping `.gz` files."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, errors=errors, newline="")
    return open(path, encoding=encoding, errors=errors, newline="")


def read_text(path: Path) -> str:
    """A small file's text: UTF-8, falling back to latin-1 (GroupLens' older files)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) for every non-blank line of `text`."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield number, line


# ---------------------------------------------------------------------------------------------
# delimited tables

Kind = Literal["str", "int", "float"]
_DTYPES = {"str": "str", "int": "int64", "float": "float64"}
_KIND_WORDS = {"str": "text", "int": "an integer", "float": "a number"}


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind = "str"
    required: bool = True  # may not be empty


def read_delimited(
    path: Path,
    columns: list[Column],
    sep: str,
    header: bool = False,
    quoted: bool = False,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Read a delimited file into typed columns; any malformed line raises RawFormatError naming it.

    `sep` may be `::` (GroupLens .dat files): it is read as `:` with the empty fields in between skipped.
    `quoted`: fields may be double-quoted (CSV); else quotes are ordinary characters.
    `header`: the first line must hold exactly the column names.
    """
    names = [c.name for c in columns]
    if header:
        _check_header(path, names, sep, quoted, encoding)
    if sep == "::":
        pd_sep, pd_names = ":", [n for name in names for n in (name, f"_{name}")][:-1]
    else:
        pd_sep, pd_names = sep, names
    try:
        df = pd.read_csv(
            path,
            sep=pd_sep,
            header=None,
            names=pd_names,
            usecols=names,
            skiprows=1 if header else 0,
            dtype={c.name: _DTYPES[c.kind] for c in columns},
            keep_default_na=False,
            na_values={c.name: [""] for c in columns if c.required or c.kind != "str"},
            quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
            index_col=False,
            engine="c",
            encoding=encoding,
            compression="infer",
        )
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise _locate(path, columns, sep, header, quoted, encoding) or RawFormatError(path, None, str(exc)) from None
    required = [c.name for c in columns if c.required or c.kind != "str"]
    # a short row comes back padded with empty fields: compare the separator count instead
    short = not quoted and _count_char(path, pd_sep) != len(sep) * (len(names) - 1) * (len(df) + header)
    if short or df[required].isna().to_numpy().any():
        raise _locate(path, columns, sep, header, quoted, encoding) or RawFormatError(path, None, "malformed line")
    return df


def _split(line: str, sep: str, quoted: bool) -> list[str]:
    return next(csv.reader([line], delimiter=sep)) if quoted else line.split(sep)


def _check_header(path: Path, names: list[str], sep: str, quoted: bool, encoding: str) -> None:
    with open_text(path, encoding) as f:
        first = f.readline().rstrip("\r\n")
    found = [n.strip() for n in _split(first, sep, quoted)]
    if found != names:
        raise RawFormatError(path, 1, f"expected the header {sep.join(names)!r}, found {first!r}")


def _count_char(path: Path, char: str) -> int:
    """How many times the one-byte `char` occurs in the file, read in chunks."""
    needle = char.encode()
    total = 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        while chunk := f.read(1 << 24):
            total += chunk.count(needle)
    return total


def _parses(value: str, kind: Kind) -> bool:
    try:
        {"int": int, "float": float, "str": str}[kind](value)
    except ValueError:
        return False
    return True


def _locate(
    path: Path, columns: list[Column], sep: str, header: bool, quoted: bool, encoding: str
) -> RawFormatError | None:
    """The first malformed line of a delimited file, as an error; None if every line looks right."""
    shown = sep.join(c.name for c in columns)
    try:
        with open_text(path, encoding) as f:
            lines = csv.reader(f, delimiter=sep) if quoted else (line.rstrip("\r\n").split(sep) for line in f)
            for number, fields in enumerate(lines, 1):
                if quoted:
                    number = lines.line_num
                if (header and number == 1) or fields in ([], [""]):
                    continue
                if len(fields) != len(columns):
                    problem = f"expected {len(columns)} fields separated by {sep!r} ({shown}), found {len(fields)}"
                    return RawFormatError(path, number, problem)
                for column, value in zip(columns, fields, strict=True):
                    if value == "" and (column.required or column.kind != "str"):
                        return RawFormatError(path, number, f"empty {column.name}")
                    if value != "" and not _parses(value, column.kind):
                        problem = f"{column.name} is not {_KIND_WORDS[column.kind]}: {value!r}"
                        return RawFormatError(path, number, problem)
    except UnicodeDecodeError as exc:
        return RawFormatError(path, None, f"not {encoding} text: {exc}")
    except csv.Error as exc:
        return RawFormatError(path, None, f"CSV error: {exc}")
    return None


# ---------------------------------------------------------------------------------------------
# images


def image_files(folder: Path | None) -> dict[str, list[Path]]:
    """Item id -> its image files in `folder` (by suffix preference); {} if there is no folder."""
    found: dict[str, list[Path]] = {}
    if folder is None or not folder.is_dir():
        return found
    rank = {suffix: i for i, suffix in enumerate(IMAGE_SUFFIXES)}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() in rank and not entry.name.startswith(".") and entry.is_file():
                found.setdefault(stem, []).append(Path(entry.path))
    for paths in found.values():
        paths.sort(key=lambda p: rank[p.suffix.lower()])
    return found


@dataclass
class ImageChoice:
    path: Path | None  # the decodable file chosen, or None
    status: Literal["found", "missing", "corrupt"]
    problem: str | None = None


def choose_images(item_ids: list[str], folders: list[Path | None], workers: int = 8) -> list[ImageChoice]:
    """For each item, the first of its image files (folders in order) that decodes."""
    listings = [image_files(folder) for folder in folders]

    def choose(item_id: str) -> ImageChoice:
        problem = None
        stems = dict.fromkeys((item_id, Path(image_name(item_id)).stem))  # fetch-images hashes unsafe ids
        for listing in listings:
            for path in (p for stem in stems for p in listing.get(stem, ())):
                problem = decode_problem(path)
                if problem is None:
                    return ImageChoice(path, "found")
        return ImageChoice(None, "missing") if problem is None else ImageChoice(None, "corrupt", problem)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, os.cpu_count() or 1))) as pool:
        return list(pool.map(choose, item_ids))


def place_image(src: Path, dest: Path, link: bool) -> None:
    """Put `src` at `dest` (hard link, else copy) atomically; nothing to do when they are one file."""
    if dest.exists() and os.path.samefile(src, dest):
        return
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        linked = False
        if link:
            try:
                os.link(src, tmp)
                linked = True
            except OSError:  # another file system, or links not supported
                pass
        if not linked:
            shutil.copy2(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# fingerprint


def _listing(folder: Path | None) -> list[tuple[str, int, int]]:
    if folder is None or not folder.is_dir():
        return []
    rows = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.startswith(".") and entry.is_file():
                st = entry.stat()
                rows.append((entry.name, st.st_size, st.st_mtime_ns))
    return sorted(rows)


def fingerprint(kind: str, raw_files: list[Path], image_folders: list[Path | None], options: dict) -> str:
    """A hash of the raw files' names, sizes and mtimes, the image folders' listings, and the options."""
    stats = []
    for path in raw_files:
        st = path.stat()
        stats.append((path.name, st.st_size, st.st_mtime_ns))
    state = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "files": stats,
        "images": [_listing(folder) for folder in image_folders],
        "options": options,
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
