"""Small helpers that turn stage reports into Dagster metadata."""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> dg.MarkdownMetadataValue:
    columns = columns or (list(rows[0]) if rows else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def png_markdown(path: Path, title: str) -> dg.MarkdownMetadataValue:
    """A PNG embedded in markdown as base64 (Dagster metadata has no image type)."""
    data = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{data})")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
