"""The experiment grid: methods x label ratios x cf weights x seeds, and the run key naming one run.

A run key such as `with_cf-r0.05-w1-s0` encodes method, label ratio, cf weight and seed.
It is built and parsed here only (Dagster partitions and DVC stages use it too), and it
avoids the characters `| , [ ]` and spaces. The methods (the paper's baselines) are those of the
method registry, collab_iu/methods.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from collab_iu.errors import UserError
from collab_iu.methods import METHOD_NAMES
from collab_iu.methods import METHODS as REGISTRY
from collab_iu.params import Params

METHODS: tuple[str, ...] = METHOD_NAMES
_NUMBER = r"[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?"  # as `{:g}` writes a non-negative float
_KEY = re.compile(rf"^(?P<method>[a-z_]+)-r(?P<ratio>{_NUMBER})-w(?P<weight>{_NUMBER})-s(?P<seed>[0-9]+)$")


class RunKeyError(UserError, ValueError):
    """A run key that is malformed or names no possible run; the message says why and the expected form."""


def uses_cf(method: str) -> bool:
    """Whether a method's runs have a cf weight (every method but image_only and the reference points)."""
    return method in REGISTRY and REGISTRY[method].uses_cf


@dataclass(frozen=True, order=True)
class RunSpec:
    """One cell of the grid."""

    method: str
    label_ratio: float
    cf_weight: float
    seed: int

    def __post_init__(self) -> None:
        """Only a run that can exist (RunKeyError otherwise, before any folder is made for it): the label ratio
        in (0, 1], a finite cf weight above 0 for a method that uses CF and 0 for the others."""
        if not 0 < self.label_ratio <= 1:
            raise RunKeyError(f"bad run key {self.key!r}: the label ratio must be in (0, 1], got {self.label_ratio:g}")
        cf = uses_cf(self.method)
        if not (self.cf_weight > 0 and math.isfinite(self.cf_weight) if cf else self.cf_weight == 0):
            need = "a finite cf weight above 0" if cf else "cf weight 0 (it has no CF loss)"
            raise RunKeyError(f"bad run key {self.key!r}: method {self.method} needs {need}, got {self.cf_weight:g}")

    @property
    def key(self) -> str:
        return f"{self.method}-r{self.label_ratio:g}-w{self.cf_weight:g}-s{self.seed}"


def parse_run_key(key: str) -> RunSpec:
    """The RunSpec of a run key; RunKeyError (a ValueError) saying what is wrong otherwise.

    Checked before anything is written (RunSpec): the label ratio is in (0, 1], a method that uses CF has a
    cf weight above 0 and the others 0. `RunSpec.key` is the key as the grid writes it (`r0.5` for `r0.50`).
    """
    match = _KEY.match(key)
    if not match or match["method"] not in METHODS:
        raise RunKeyError(
            f"bad run key {key!r}; expected <method>-r<ratio>-w<cf weight>-s<seed> (e.g. with_cf-r0.05-w8-s0), "
            f"method in {', '.join(METHODS)}"
        )
    return RunSpec(match["method"], float(match["ratio"]), float(match["weight"]), int(match["seed"]))


def grid_runs(params: Params) -> list[RunSpec]:
    """Every run of the selected experiment family; image_only runs have cf weight 0.

    `params` should be a dataset's params (`Params.for_dataset`): a family without cf
    weights uses that dataset's train.cf_weight.
    """
    grid = params.experiment.grid
    cf_weights = grid.cf_weights or [params.train.cf_weight]
    if any(uses_cf(m) for m in grid.methods) and not all(w > 0 for w in cf_weights):
        raise ValueError(
            f"experiment family {params.experiment.family!r} has no cf_weights and train.cf_weight is 0: "
            "set the family's cf_weights or the dataset's train.cf_weight"
        )
    runs: set[RunSpec] = set()
    for method in grid.methods:
        weights = cf_weights if uses_cf(method) else [0.0]
        for ratio in grid.label_ratios:
            for weight in weights:
                for seed in params.experiment.seeds:
                    runs.add(RunSpec(method, float(ratio), float(weight), int(seed)))
    return sorted(runs)
