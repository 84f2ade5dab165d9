"""Dagster orchestration of collab_iu: thin software-defined assets over the core."""
