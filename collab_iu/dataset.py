"""The canonical dataset format ("bring your own data").

A dataset folder holds:

- `items.parquet` (or `items.csv`): `item_id` string, `image` path relative to the folder
  or null, `labels` list of strings (in CSV: one string, labels separated by `|`); an empty
  list (or null) means unlabelled.
- `interactions.parquet` (or `interactions.csv`): `user_id`, `item_id`, optional `weight`
  (a finite float >= 0, default 1), optional `timestamp`.
- the image files.

Other columns are ignored (validation reports them). `read_raw_tables` reads the two tables
with their types checked; `validate.py` checks the content. In memory a dataset is two
DataFrames in the normalised dtypes below, rows numbered by their position in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from collab_iu.errors import UserError

ITEMS = "items"
INTERACTIONS = "interactions"
LABEL_SEPARATOR = "|"
ITEM_COLUMNS = ("item_id", "image", "labels")
INTERACTION_COLUMNS = ("user_id", "item_id")


@dataclass
class TableProblem:
    """One problem found in a file: where (file, rows) and what."""

    file: str
    message: str
    rows: list[int] | None = None  # data rows, 0-based (reported as CSV lines for CSV files)
    fatal: bool = True  # False: a warning (the data is usable; the report names it)
    columns: list[str] | None = None  # the columns a problem is about, where it is about columns

    def render(self, max_rows: int = 10) -> str:
        if not self.rows:
            return f"{self.file}: {self.message}"
        is_csv = self.file.endswith(".csv")
        shown = [r + 2 if is_csv else r for r in self.rows[:max_rows]]  # CSV: header is line 1
        word = "line" if is_csv else "row"
        where = f"{word}{'s' if len(self.rows) > 1 else ''} {', '.join(map(str, shown))}"
        if len(self.rows) > max_rows:
            where += f" and {len(self.rows) - max_rows} more"
        return f"{self.file} {where}: {self.message}"


class DatasetError(UserError, ValueError):
    """A dataset folder has fatal problems; the message lists every one."""

    def __init__(self, folder: Path | str, problems: list[TableProblem]):
        self.folder = Path(folder)
        self.problems = problems
        lines = "\n  ".join(p.render() for p in problems)
        super().__init__(f"dataset {self.folder} has {len(problems)} problem(s):\n  {lines}")


class CFOnlyDatasetError(UserError, ValueError):
    """A dataset prepared for the CF diagnosis only (prepare.cf_only) was asked for its images or a model."""


def find_table(folder: Path, stem: str) -> Path | None:
    """`<stem>.parquet`, else `<stem>.csv`, else None."""
    for suffix in (".parquet", ".csv"):
        path = folder / f"{stem}{suffix}"
        if path.exists():
            return path
    return None


def _arrow_kind(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "list<string>" if _arrow_kind(t.value_type) in ("string", "null") else f"list<{t.value_type}>"
    if pa.types.is_dictionary(t):
        return _arrow_kind(t.value_type)
    return str(t)


# allowed arrow kinds per column, for parquet files
_ITEM_TYPES = {"item_id": {"string"}, "image": {"string", "null"}, "labels": {"list<string>", "null"}}
_INTERACTION_TYPES = {
    "user_id": {"string", "integer"},
    "item_id": {"string"},
    "weight": {"float", "integer"},
    "timestamp": {"integer", "float", "timestamp"},
}
_KNOWN_COLUMNS = {ITEMS: ITEM_COLUMNS, INTERACTIONS: tuple(_INTERACTION_TYPES)}


def _check_columns(name: str, columns: list[str], required: tuple[str, ...]) -> list[TableProblem]:
    missing = [c for c in required if c not in columns]
    if missing:
        return [TableProblem(name, f"missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}")]
    return []


def _read_parquet(path: Path, types: dict[str, set[str]], required: tuple[str, ...]):
    problems: list[TableProblem] = []
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported, not raised
        return None, [TableProblem(path.name, f"cannot be read as parquet: {exc}")]
    problems += _check_columns(path.name, table.column_names, required)
    for column, allowed in types.items():
        if column in table.column_names:
            kind = _arrow_kind(table.schema.field(column).type)
            if kind not in allowed:
                problems.append(
                    TableProblem(path.name, f"column {column} has type {kind}; expected {' or '.join(sorted(allowed))}")
                )
    if problems:
        return None, problems
    # rows by position: a pandas index stored in the file (e.g. of a concatenation: 0..n, 0..m) is dropped
    # unless it is named (then it is a column like any other)
    stored_index = (table.schema.pandas_metadata or {}).get("index_columns", [])
    table = table.drop_columns([c for c in stored_index if isinstance(c, str) and c.startswith("__index_level_")])
    return table.to_pandas(ignore_metadata=True), []


def _read_csv(path: Path, string_columns: tuple[str, ...], required: tuple[str, ...]):
    try:
        df = pd.read_csv(path, dtype={c: "string" for c in string_columns}, keep_default_na=False, na_values=[""])
    except Exception as exc:  # noqa: BLE001
        return None, [TableProblem(path.name, f"cannot be read as CSV: {exc}")]
    problems = _check_columns(path.name, list(df.columns), required)
    return (None if problems else df), problems


def _to_numeric(df: pd.DataFrame, column: str, file: str, problems: list[TableProblem]) -> None:
    if column not in df.columns:
        return
    values = pd.to_numeric(df[column], errors="coerce")
    bad = np.flatnonzero(values.isna().to_numpy() & df[column].notna().to_numpy())
    if len(bad):
        problems.append(TableProblem(file, f"column {column} is not a number", rows=bad.tolist()))
    df[column] = values


def _to_timestamp(df: pd.DataFrame, file: str, problems: list[TableProblem]) -> None:
    """CSV timestamps: numbers (e.g. epoch seconds) or dates (ISO 8601)."""
    if "timestamp" not in df.columns:
        return
    raw = df["timestamp"]
    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().sum() == raw.notna().sum():
        df["timestamp"] = numeric
        return
    dates = pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
    bad = np.flatnonzero(dates.isna().to_numpy() & raw.notna().to_numpy())
    if len(bad):
        problems.append(TableProblem(file, "column timestamp is neither a number nor a date", rows=bad.tolist()))
    df["timestamp"] = dates


def _labels_from_cell(cell) -> list[str]:
    if cell is None or (isinstance(cell, float) and np.isnan(cell)) or cell is pd.NA:
        return []
    if isinstance(cell, str):
        return [part.strip() for part in cell.split(LABEL_SEPARATOR)] if cell.strip() else []
    return [None if v is None else str(v) for v in cell]


def _read_table(
    folder: Path,
    stem: str,
    types: dict[str, set[str]],
    required: tuple[str, ...],
    csv_strings: tuple[str, ...],
    problems: list[TableProblem],
    files: dict[str, str],
) -> pd.DataFrame | None:
    """Read `<stem>.parquet` or `<stem>.csv`; add problems found, record the file name."""
    path = find_table(folder, stem)
    if path is None:
        problems.append(TableProblem(stem, f"no {stem}.parquet or {stem}.csv in {folder}"))
        return None
    if path.suffix == ".parquet" and (folder / f"{stem}.csv").exists():
        problems.append(
            TableProblem(
                stem, f"both {stem}.parquet and {stem}.csv in {folder}: keep the current one, remove the other"
            )
        )
        return None
    files[stem] = path.name
    if path.suffix == ".parquet":
        df, found = _read_parquet(path, types, required)
    else:
        df, found = _read_csv(path, csv_strings, required)
    problems += found
    if df is not None:
        unknown = [str(c) for c in df.columns if c not in _KNOWN_COLUMNS[stem]]
        if unknown:
            message = f"unknown column(s) {', '.join(unknown)} ignored (known: {', '.join(_KNOWN_COLUMNS[stem])})"
            problems.append(TableProblem(path.name, message, fatal=False, columns=unknown))
    return df


def read_raw_tables(folder: str | Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None, list[TableProblem], dict]:
    """Read items and interactions with column types checked.

    Returns (items, interactions, problems, files) where files maps table -> file name; problems with
    `fatal` False are warnings (unknown columns, ignored).
    Items come back with `item_id` (str), `image` (str or None), `labels` (list of str);
    interactions with `user_id` (str), `item_id` (str), `weight` (float64), and `timestamp` if given.
    """
    folder = Path(folder)
    problems: list[TableProblem] = []
    files: dict[str, str] = {}
    items = _read_table(folder, ITEMS, _ITEM_TYPES, ITEM_COLUMNS, ITEM_COLUMNS, problems, files)
    interactions = _read_table(
        folder, INTERACTIONS, _INTERACTION_TYPES, INTERACTION_COLUMNS, INTERACTION_COLUMNS, problems, files
    )
    if interactions is not None and files[INTERACTIONS].endswith(".csv"):
        _to_numeric(interactions, "weight", files[INTERACTIONS], problems)
        _to_timestamp(interactions, files[INTERACTIONS], problems)

    if items is not None:
        items = pd.DataFrame(
            {
                "item_id": items["item_id"].astype(object).where(items["item_id"].notna(), None),
                "image": items["image"].astype(object).where(items["image"].notna(), None),
                "labels": [_labels_from_cell(c) for c in items["labels"]],
            }
        )
    if interactions is not None:
        out = pd.DataFrame(
            {
                "user_id": interactions["user_id"].astype(object).where(interactions["user_id"].notna(), None),
                "item_id": interactions["item_id"].astype(object).where(interactions["item_id"].notna(), None),
                "weight": interactions["weight"].astype("float64") if "weight" in interactions else 1.0,
            }
        )
        out["user_id"] = [None if u is None else str(u) for u in out["user_id"]]
        if "timestamp" in interactions:
            out["timestamp"] = interactions["timestamp"].to_numpy()
        interactions = out
    return items, interactions, problems, files


def label_vocabulary(labels: pd.Series) -> list[str]:
    """Sorted unique labels of a `labels` column."""
    return sorted({label for row in labels for label in row})


def label_matrix(labels: pd.Series, vocabulary: list[str]) -> np.ndarray:
    """Multi-hot float32 matrix (items x labels) of a `labels` column."""
    index = {label: j for j, label in enumerate(vocabulary)}
    out = np.zeros((len(labels), len(vocabulary)), dtype=np.float32)
    for i, row in enumerate(labels):
        for label in row:
            j = index.get(label)
            if j is not None:
                out[i, j] = 1.0
    return out
