"""Partitions: one per dataset of params.yaml, and dataset x run key for trained models."""

from __future__ import annotations

import dagster as dg

from collab_iu.grid import grid_runs, parse_run_key
from collab_iu.params import Params

DATASET = "dataset"
RUN = "run"


def dataset_partitions(params: Params) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(list(params.data.datasets))


def run_partitions(params: Params) -> dg.StaticPartitionsDefinition:
    """The run keys of every dataset's experiment family (a dataset's preset may change its grid)."""
    keys = {spec.key for name in params.data.datasets for spec in grid_runs(params.for_dataset(name))}
    return dg.StaticPartitionsDefinition(sorted(keys))


def model_partitions(datasets: dg.StaticPartitionsDefinition, runs: dg.StaticPartitionsDefinition):
    return dg.MultiPartitionsDefinition({DATASET: datasets, RUN: runs})


def model_partition_key(dataset: str, run_key: str) -> dg.MultiPartitionKey:
    """The string key of one trained-model partition (dimension values ordered by name, joined by '|')."""
    parse_run_key(run_key)
    return dg.MultiPartitionKey({DATASET: dataset, RUN: run_key})


def parse_model_partition_key(key: str) -> dg.MultiPartitionKey:
    """`<dataset>|<run key>` (as the UI and dvc.yaml write it) as a trained-model partition key."""
    dataset, sep, run_key = key.partition("|")
    if not sep:
        raise KeyError(f"bad trained_model partition {key!r}: expected <dataset>|<run key>")
    return model_partition_key(dataset, run_key)
