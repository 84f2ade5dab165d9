"""The `collab-iu` command line: a client of the core and of the Dagster graph (orchestration/)."""

from orchestration.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
