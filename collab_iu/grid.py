"""The experiment grid: methods x label ratios x cf weights x seeds, and the run key naming one run.

A run key such as `with_cf-r0.05-w1-s0` encodes method, label ratio, cf weight and seed.
It is built and parsed here only (Dagster partitions and DVC stages use it too), and it
avoids the characters `| , [ ]` and spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from collab_iu.params import Params

METHODS = ("image_only", "with_cf", "cf_pretrain")
_KEY = re.compile(r"^(?P<method>[a-z_]+)-r(?P<ratio>[0-9.]+)-w(?P<weight>[0-9.]+)-s(?P<seed>[0-9]+)$")


@dataclass(frozen=True, order=True)
class RunSpec:
    """One cell of the grid."""

    method: str
    label_ratio: float
    cf_weight: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.method}-r{self.label_ratio:g}-w{self.cf_weight:g}-s{self.seed}"


def parse_run_key(key: str) -> RunSpec:
    """The RunSpec of a run key; ValueError naming the expected form otherwise."""
    match = _KEY.match(key)
    if not match or match["method"] not in METHODS:
        raise ValueError(f"bad run key {key!r}; expected <method>-r<ratio>-w<cf weight>-s<seed>, method in {METHODS}")
    return RunSpec(match["method"], float(match["ratio"]), float(match["weight"]), int(match["seed"]))


def grid_runs(params: Params) -> list[RunSpec]:
    """Every run of the grid in params.experiment; image_only runs have cf weight 0."""
    exp = params.experiment
    runs: set[RunSpec] = set()
    for method in exp.methods:
        weights = [0.0] if method == "image_only" else exp.cf_weights
        for ratio in exp.label_ratios:
            for weight in weights:
                for seed in exp.seeds:
                    runs.add(RunSpec(method, float(ratio), float(weight), int(seed)))
    return sorted(runs)
