"""Errors of the orchestration layer (importable without dagster)."""


class MaterializeError(RuntimeError):
    """A materialisation failed or a blocking check did not pass; the message says which."""
