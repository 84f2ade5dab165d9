"""The Dagster entry point (`dagster dev` from the repository root loads it through pyproject.toml)."""

from orchestration.defs.build import build_definitions

defs = build_definitions()
