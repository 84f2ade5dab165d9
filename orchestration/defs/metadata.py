"""Small helpers that turn stage reports into Dagster metadata."""

from __future__ import annotations

import base64
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from orchestration.tracking import RunLink


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


def wandb_run_metadata(link: RunLink | None) -> dict:
    """Where an asset's W&B run is: online its page (`wandb_run`, a URL) and path entity/project/run_id;
    offline its local folder (`wandb_run`, a path), its project/run_id and the command that uploads it.
    Empty when nothing was logged (W&B disabled, or a finished run reused)."""
    if link is None:
        return {}
    metadata = {"wandb_run_path": dg.MetadataValue.text(link.path)}
    if link.url:
        return {"wandb_run": dg.MetadataValue.url(link.url), **metadata}
    if link.folder:
        metadata = {"wandb_run": dg.MetadataValue.path(link.folder), **metadata}
        metadata["wandb_sync"] = dg.MetadataValue.text(f"wandb sync {shlex.quote(link.folder)}")
    return metadata


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
