"""Hooks that `experiment.train_run` calls while it trains one run.

The core only calls them; what they do (W&B logging, Dagster's run log, progress lines) is
attached from outside (orchestration/tracking.py, orchestration/defs/assets.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

STAGES = ("pretrain", "train")  # cf_pretrain trains a pretrain stage first; every method trains `train`


class TrainingObserver:
    """Every hook does nothing; subclasses override those they need. Hooks must not raise."""

    def started(self, config: dict) -> None:
        """Training (or resumed training) of one run begins; `config` is experiment.run_config."""

    def epoch_end(self, record: dict, stage: str) -> None:
        """One epoch of `stage` (STAGES) finished; `record` is its row of train.json's history."""

    def finished(self, metrics: dict, run_dir: Path, model_info: dict) -> None:
        """The run is scored and metrics.json is written."""

    def closed(self, failed: bool) -> None:
        """Always called last, also when training raised (`failed`)."""


class Observers(TrainingObserver):
    """Several observers as one, called in order."""

    def __init__(self, observers: Iterable[TrainingObserver | None]):
        self._observers = [o for o in observers if o is not None]

    def started(self, config: dict) -> None:
        for o in self._observers:
            o.started(config)

    def epoch_end(self, record: dict, stage: str) -> None:
        for o in self._observers:
            o.epoch_end(record, stage)

    def finished(self, metrics: dict, run_dir: Path, model_info: dict) -> None:
        for o in self._observers:
            o.finished(metrics, run_dir, model_info)

    def closed(self, failed: bool) -> None:
        for o in self._observers:
            o.closed(failed)
