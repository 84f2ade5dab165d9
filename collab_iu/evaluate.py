"""Evaluate the experiment grid: per-cell test mAP with seeds and bootstrap, comparisons, tables, plots.

`evaluate_runs` is the core: it evaluates any list of finished runs of one dataset (each
`data/<dataset>/runs/<run key>/` with `test_scores.npy`, `test_items.parquet`, `metrics.json`,
`model.json`) and returns the cells table and the summary. `run_evaluation` applies it to every
run of `grid_runs(params)` (the selected family, with the dataset's preset and overrides) and
writes `data/<dataset>/evaluation/` as one folder, atomically (nothing is written when a run
is missing or inconsistent); `collab_iu.paper_report` applies it to every finished run.

- `results.csv`: one row per cell (method, label_ratio, cf_weight), columns `CELL_COLUMNS`;
- `results.md`: the same as a readable markdown table, headline first;
- `summary.json`: strict JSON (no NaN: missing values are null); every field is documented in the
  README (section `summary.json`);
- `metrics.json`: its numbers flat (`flat_metrics`), read by DVC as metrics;
- `map_vs_label_ratio.png`: mAP against label ratio (error bars: std over seeds), with the
  random and popularity reference points dashed;
- `improvement.png`: relative improvement over image_only per label ratio with its 95 % CI,
  marked `*`/`**` by the valid test.

Protocol:

- Ground truth: the prepared items' labels over each run's vocabulary (model.json), aligned by
  item_id. Every run must have been scored on the same test items, and they must be the test
  items of the current split that have a cached image; scores are reordered to those items in
  item order, so the bootstrap resamples do not depend on which runs are evaluated.
- Test mAP per run is recomputed from its scores (macro AP over labels with a positive).
- One set of with-replacement resamples of the test items (`resample_counts`) serves every
  run, so all comparisons are paired. A cell's 95 % CI and every comparison's p-value come from
  `stats.two_level_test`: training randomness (spread over seeds) plus test-set sampling (spread
  of the seed-mean over resamples), t-distribution with Welch-Satterthwaite degrees of freedom.
  `mark` (`*` p <= 0.05, `**` p <= 0.01) comes from that test only.
- Each cell is compared with image_only at the same label ratio and the same seeds:
  improvement = mean mAP over seeds / image_only's - 1 with its CI, `p_value` (the valid
  test), `p_seeds` (paired t-test of per-seed mAPs: training randomness only) and `p_paper`
  (the paper's t-test over 50 overlapping 90 % subsamples: test-set resampling only; it
  understates both errors and is kept to compare with the paper).
- `with_cf_val_selected` ("with_cf (val-selected)"): per label ratio and seed, the run with
  the best validation mAP among image_only and with_cf at every cf weight of the grid (ties:
  the smaller weight), then evaluated on the test set like any cell. Nothing is chosen on
  test results; the headline compares this row with image_only at the lowest label ratio.
- Reference points per label ratio (the grid's; for other lists of runs the runs') and seed
  (those of the runs at that ratio): `random` (uniform scores drawn with the seed) and
  `popularity` (every item scored with each label's frequency among the labelled training
  items kept at that ratio and seed). They are compared with image_only too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from collab_iu.artifacts import (
    METRICS_JSON,
    MODEL_JSON,
    TEST_ITEMS,
    TEST_SCORES,
    item_splits,
    load_prepared,
    read_report,
    test_set_mask,
)
from collab_iu.atomic import atomic_dir, write_json
from collab_iu.cf_fit import VAL_CF_KEYS
from collab_iu.dataset import label_matrix
from collab_iu.grid import METHODS, RunSpec, grid_runs, uses_cf
from collab_iu.layout import DatasetLayout, dataset_layout
from collab_iu.locks import locked_outputs
from collab_iu.metrics import bootstrap_indices, bootstrap_map, evaluate_scores, resample_counts
from collab_iu.params import ExperimentParams, Params
from collab_iu.stats import (
    paired_bootstrap_test,
    paired_seed_test,
    relative_improvement,
    significance_mark,
    two_level_interval,
    two_level_test,
)

BASELINE = "image_only"
SELECTED = "with_cf_val_selected"  # per ratio and seed, image_only or with_cf at a weight, by validation mAP
SELECTED_FROM = ("image_only", "with_cf")
REFERENCE_METHODS = ("popularity", "random")
METHOD_ORDER = (*METHODS[:2], SELECTED, *METHODS[2:], *REFERENCE_METHODS)
KS = (1, 3, 5)
RUN_FILES = (TEST_SCORES, TEST_ITEMS, METRICS_JSON, MODEL_JSON)
METRIC_COLUMNS = (
    "micro_ap",
    *(f"precision@{k}" for k in KS),
    *(f"recall@{k}" for k in KS),
    "top1_accuracy",
)
CELL_COLUMNS = (
    "dataset",
    "method",
    "label_ratio",
    "cf_weight",
    "selected_cf_weights",
    "n_seeds",
    "map_mean",
    "map_std",
    "map_ci_low",
    "map_ci_high",
    *METRIC_COLUMNS,
    "val_map",
    "val_cf_r2",
    "val_cf_cosine",
    "improvement",
    "improvement_ci_low",
    "improvement_ci_high",
    "p_value",
    "p_seeds",
    "p_paper",
    "mark",
)
OUTPUTS = {
    "results_csv": "results.csv",
    "results_md": "results.md",
    "summary_json": "summary.json",
    "metrics_json": "metrics.json",
    "map_plot": "map_vs_label_ratio.png",
    "improvement_plot": "improvement.png",
    "plot_csv": "map_vs_label_ratio.csv",
}


@dataclass
class _Scored:
    """One set of test scores (a trained run or a reference point) with its metrics."""

    method: str
    label_ratio: float
    cf_weight: float
    seed: int
    metrics: dict  # evaluate_scores output
    paper_resamples: np.ndarray  # mAP of every 90 % subsample (the paper's test)
    resamples: np.ndarray  # mAP of every with-replacement resample (the valid test)
    run_key: str | None = None
    val_map: float | None = None
    best_epoch: int | None = None
    diagnostics: dict | None = None  # VAL_CF_KEYS from metrics.json
    selected_weight: float | None = None  # SELECTED: the cf weight chosen on validation (0: image_only)


# ---------------------------------------------------------------------------- reading the runs


@dataclass(frozen=True)
class TestSet:
    """The current split of a dataset: its prepared items and the test items that have a cached image."""

    items: pd.DataFrame  # the prepared items, index 0..n-1
    is_train: np.ndarray  # per item
    has_image: np.ndarray  # per item
    test_ids: np.ndarray  # the test items with a cached image, in item order (the order of every evaluation)

    @property
    def test_labels(self) -> pd.Series:
        return self.items["labels"].iloc[pd.Index(self.items["item_id"].astype(str)).get_indexer(self.test_ids)]


def load_test_set(layout: DatasetLayout) -> TestSet:
    """The current split's test set of a prepared, split and cached dataset (FileNotFoundError otherwise)."""
    from collab_iu.image_cache import load_image_cache

    items, _ = load_prepared(layout)
    items = items.reset_index(drop=True)
    split = item_splits(layout, items)
    rows = load_image_cache(layout.cache).rows(items["item_id"])
    has_image = rows >= 0
    test_ids = items["item_id"].astype(str).to_numpy(dtype=object)[test_set_mask(split, rows)]
    return TestSet(items=items, is_train=split == "train", has_image=has_image, test_ids=test_ids)


def is_finished(run_dir: Path) -> bool:
    """Whether a run folder holds every file the evaluation reads."""
    return all((run_dir / f).exists() for f in RUN_FILES)


def _missing_runs(layout: DatasetLayout, specs: list[RunSpec]) -> list[str]:
    return [s.key for s in specs if not is_finished(layout.runs / s.key)]


def _read_ids(run_dir: Path) -> np.ndarray:
    return pd.read_parquet(run_dir / TEST_ITEMS)["item_id"].astype(str).to_numpy(dtype=object)


def _check_shape(run_dir: Path, shape: tuple, n_ids: int, vocabulary: list) -> None:
    if len(shape) != 2 or shape[0] != n_ids or shape[1] != len(vocabulary):
        raise ValueError(
            f"{run_dir}: test_scores.npy has shape {shape} but there are {n_ids} test items "
            f"and {len(vocabulary)} labels in model.json"
        )


def _read_run(run_dir: Path) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """(scores, item ids, metrics.json, model.json) of a finished run."""
    scores = np.load(run_dir / TEST_SCORES)
    ids = _read_ids(run_dir)
    metrics = json.loads((run_dir / METRICS_JSON).read_text())
    model = json.loads((run_dir / MODEL_JSON).read_text())
    _check_shape(run_dir, scores.shape, len(ids), model["vocabulary"])
    return scores, ids, metrics, model


def _stale_message(ids: np.ndarray, expected: np.ndarray) -> str | None:
    """How a run's test items differ from the current split's test items with an image (None: they do not)."""
    wanted, got = set(expected), set(ids)
    if len(ids) == len(expected) and len(got) == len(ids) and got == wanted:
        return None
    return (
        f"scored on {len(ids)} test items, but the current split has {len(expected)} test items with a cached "
        f"image ({len(got - wanted)} scored items not among them, {len(wanted - got)} of them not scored)"
    )


def check_run(run_dir: Path, test_set: TestSet) -> str | None:
    """Why a finished run cannot be evaluated on the current test set (stale or inconsistent files); None if it can."""
    try:
        ids = _read_ids(run_dir)
        model = json.loads((run_dir / MODEL_JSON).read_text())
        json.loads((run_dir / METRICS_JSON).read_text())
        _check_shape(run_dir, np.load(run_dir / TEST_SCORES, mmap_mode="r").shape, len(ids), model["vocabulary"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable or inconsistent files
        return f"unreadable or inconsistent run files: {exc}"
    stale = _stale_message(ids, test_set.test_ids)
    return f"stale: {stale}; retrain it" if stale else None


def _align(scores: np.ndarray, ids: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Scores reordered to the reference item order (the same set of items)."""
    if len(ids) == len(reference) and (ids == reference).all():
        return scores
    return scores[pd.Index(ids).get_indexer(pd.Index(reference))]


def _same_items(ids: np.ndarray, first: np.ndarray, key: str, first_key: str) -> None:
    """ValueError when two runs were scored on different test items."""
    if len(ids) != len(first) or set(ids) != set(first) or len(set(ids)) != len(ids):
        raise ValueError(
            f"runs {first_key} and {key} were scored on different test items ({len(first)} vs {len(ids)}); "
            "every run of a dataset must share one test set: retrain the stale runs"
        )


def _cell_metrics(metrics: dict) -> dict:
    out = {"map": metrics["map"]}
    for name in METRIC_COLUMNS:
        out[name] = metrics.get(name, math.nan)  # k above the number of labels: not defined
    return out


# ---------------------------------------------------------------------------- the evaluation


@locked_outputs("evaluation")
def run_evaluation(params: Params, dataset: str | None = None, repo_root: Path | None = None) -> dict:
    """Evaluate every run of the grid and write `evaluation/` (see the module docstring).

    Returns {"dataset", "evaluation_dir", "paths" (output name -> path), "headline" (or None),
    "table" (the results as a DataFrame), "summary" (what summary.json holds)}.
    Raises FileNotFoundError naming the runs that are not finished, ValueError when runs
    disagree on their test items; nothing is written then.
    """
    layout = dataset_layout(params, dataset, repo_root)
    params = params.for_dataset(layout.name)
    specs = grid_runs(params)
    missing = _missing_runs(layout, specs)
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(specs)} runs of dataset {layout.name!r} are not finished under {layout.runs}: "
            f"{', '.join(missing)}; train them first"
        )
    table, summary = evaluate_runs(params, layout, specs, reference_ratios=params.experiment.grid.label_ratios)
    text = json.dumps(summary, indent=2, allow_nan=False) + "\n"

    paths = {name: layout.evaluation / file for name, file in OUTPUTS.items()}
    with atomic_dir(layout.evaluation) as tmp:
        table.to_csv(tmp / OUTPUTS["results_csv"], index=False)
        (tmp / OUTPUTS["results_md"]).write_text(_markdown(table, summary))
        (tmp / OUTPUTS["summary_json"]).write_text(text)
        write_json(flat_metrics(table, summary.get("headline")), tmp / OUTPUTS["metrics_json"])
        _plot_map(table, tmp / OUTPUTS["map_plot"])
        _plot_improvement(table, tmp / OUTPUTS["improvement_plot"])
        plot_series(table).to_csv(tmp / OUTPUTS["plot_csv"])
    result = {
        "dataset": layout.name,
        "evaluation_dir": layout.evaluation,
        "paths": paths,
        "headline": summary.get("headline"),
        "table": table,
        "summary": summary,
    }
    return result


def evaluate_runs(
    params: Params,
    layout: DatasetLayout,
    specs: list[RunSpec],
    test_set: TestSet | None = None,
    reference_ratios: Iterable[float] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Evaluate finished runs of one dataset: (the cells table, the summary dict with plain JSON values).

    `params` are the dataset's (`Params.for_dataset`); the bootstrap settings come from
    params.experiment. Reference points are computed at `reference_ratios` (default: the
    runs' label ratios) for the seeds of the runs at that ratio (every run seed if none ran there).
    Raises FileNotFoundError for an unfinished run, ValueError when the runs disagree on their
    test items or are not scored on the current split's test items (`test_set`, default: loaded).
    """
    if not specs:
        raise ValueError(f"no runs of dataset {layout.name!r} to evaluate")
    loaded = _load_runs(layout, specs, test_set)
    test_set = test_set or load_test_set(layout)
    stale = _stale_message(loaded[specs[0].key][1], test_set.test_ids)
    if stale:
        raise ValueError(f"the runs of dataset {layout.name!r} were {stale}: the runs are stale, retrain them")
    exp = params.experiment
    n_test = len(test_set.test_ids)
    indices = bootstrap_indices(n_test, exp.bootstrap_resamples, exp.bootstrap_fraction, exp.bootstrap_seed)
    score = _Scorer(
        test_set.test_labels, indices, resample_counts(n_test, exp.significance_resamples, exp.bootstrap_seed)
    )
    scored: list[_Scored] = []
    for spec in specs:
        scores, ids, metrics, model = loaded[spec.key]
        m, paper, boot = score(score.truth(model["vocabulary"]), _align(scores, ids, test_set.test_ids))
        scored.append(
            _Scored(
                spec.method,
                spec.label_ratio,
                spec.cf_weight,
                spec.seed,
                m,
                paper,
                boot,
                run_key=spec.key,
                val_map=metrics.get("val_map"),
                best_epoch=metrics.get("best_epoch"),
                diagnostics={k: metrics.get(k) for k in VAL_CF_KEYS},
            )
        )
    selected = select_by_validation(scored)

    # reference points, on the vocabulary of the first run (every run shares it)
    vocabulary = list(loaded[specs[0].key][3]["vocabulary"])
    cells = _reference_cells(specs, reference_ratios)
    scored += _reference_points(test_set, score.truth(vocabulary), vocabulary, cells, score)

    table = _cells(scored + selected, layout.name)
    summary = _summary(layout.name, table, scored, selected, n_test, len(vocabulary), exp, indices.shape[1])
    summary["cf_label_probe"] = plain_json(_cf_label_probe(layout))
    return table, summary


def _load_runs(layout: DatasetLayout, specs: list[RunSpec], test_set: TestSet | None) -> dict[str, tuple]:
    """(scores, ids, metrics, model.json) per run key; every run finished and scored on the same items."""
    missing = _missing_runs(layout, specs)
    if missing:
        raise FileNotFoundError(
            f"runs of dataset {layout.name!r} are not finished under {layout.runs}: {', '.join(missing)}"
        )
    loaded: dict[str, tuple] = {}
    for spec in specs:
        scores, ids, metrics, model = _read_run(layout.runs / spec.key)
        if loaded:
            _same_items(ids, loaded[specs[0].key][1], spec.key, specs[0].key)
        loaded[spec.key] = (scores, ids, metrics, model)
    return loaded


class _Scorer:
    """Scores runs on the test items: metrics, the paper's subsamples and the with-replacement resamples
    (shared by every run, so comparisons are paired); ground truth per vocabulary, built once."""

    def __init__(self, test_labels: pd.Series, indices: np.ndarray, counts: np.ndarray):
        self._labels, self._indices, self._counts = test_labels, indices, counts
        self._truth: dict[tuple, np.ndarray] = {}

    def truth(self, vocabulary: list[str]) -> np.ndarray:
        key = tuple(vocabulary)
        if key not in self._truth:
            self._truth[key] = label_matrix(self._labels, list(vocabulary))
        return self._truth[key]

    def __call__(self, y: np.ndarray, scores: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
        return (
            evaluate_scores(y, scores, KS),
            bootstrap_map(y, scores, indices=self._indices),
            bootstrap_map(y, scores, counts=self._counts),
        )


def select_by_validation(scored: list[_Scored]) -> list[_Scored]:
    """Per (label ratio, seed): the run of SELECTED_FROM (image_only, with_cf at any weight) with the best validation mAP.

    Only validation mAP decides (ties: the smaller cf weight, image_only first); test scores
    are never read. Ratios and seeds without an image_only and a with_cf run with a
    validation mAP get no selection. Returns one `_Scored` of method SELECTED per choice.
    """
    candidates: dict[tuple[float, int], list[_Scored]] = {}
    for s in scored:
        if s.method in SELECTED_FROM and s.run_key is not None and s.val_map is not None:
            candidates.setdefault((s.label_ratio, s.seed), []).append(s)
    out = []
    for _, runs in sorted(candidates.items()):
        if {r.method for r in runs} != set(SELECTED_FROM):
            continue
        best = max(runs, key=lambda r: (r.val_map, -r.cf_weight))
        out.append(replace(best, method=SELECTED, cf_weight=0.0, selected_weight=best.cf_weight))
    return out


def _cf_label_probe(layout: DatasetLayout) -> dict | None:
    """The CF stage's label probe (cf/report.json), shown beside the runs' CF-head diagnostics."""
    try:
        return read_report(layout.cf).get("label_probe")
    except (OSError, ValueError):
        return None


def _reference_cells(specs: list[RunSpec], ratios: Iterable[float] | None) -> list[tuple[float, int]]:
    """(label ratio, seed) of every reference point: each ratio with the seeds of its runs (all run seeds if none)."""
    ratios = sorted({float(r) for r in ratios} if ratios is not None else {s.label_ratio for s in specs})
    every = {s.seed for s in specs}
    return [(r, seed) for r in ratios for seed in sorted({s.seed for s in specs if s.label_ratio == r} or every)]


def _reference_points(
    test_set: TestSet, y: np.ndarray, vocabulary: list[str], cells: list[tuple[float, int]], score: Callable
) -> list[_Scored]:
    """`random` (uniform scores drawn with the seed) and `popularity` (label frequency among the kept labelled items)."""
    from collab_iu.splits import label_ratio_mask

    items, n_test = test_set.items, len(y)
    out = []
    for ratio, seed in cells:
        rng = np.random.default_rng(seed)
        out.append(_Scored("random", ratio, 0.0, seed, *score(y, rng.random((n_test, len(vocabulary))))))
        kept = label_ratio_mask(items["labels"], test_set.is_train, test_set.has_image, ratio, seed)
        frequency = np.zeros(len(vocabulary))
        if kept.any():
            frequency = label_matrix(items["labels"][kept], vocabulary).astype(np.float64).mean(axis=0)
        out.append(_Scored("popularity", ratio, 0.0, seed, *score(y, np.tile(frequency, (n_test, 1)))))
    return out


def _summary(
    dataset: str,
    table: pd.DataFrame,
    scored: list[_Scored],
    selected: list[_Scored],
    n_test: int,
    n_labels: int,
    exp: ExperimentParams,
    per_resample: int,
) -> dict:
    """What summary.json holds (plain JSON values; every field is documented in the README)."""
    summary = {
        "dataset": dataset,
        "n_test_items": n_test,
        "n_labels": n_labels,
        "baseline": BASELINE,
        "significance": {
            "resamples": int(exp.significance_resamples),
            "seed": int(exp.bootstrap_seed),
            "test": "two-level: training seeds (spread over seeds) and test items (resampled with replacement, "
            "paired across methods); t-test with Welch-Satterthwaite degrees of freedom; 95 % CIs alike",
        },
        "paper_test": {
            "resamples": int(exp.bootstrap_resamples),
            "fraction": float(exp.bootstrap_fraction),
            "seed": int(exp.bootstrap_seed),
            "items_per_resample": int(per_resample),
            "test": "the paper's, for comparison only: paired t-test over overlapping subsamples of the test set "
            "of the seed-averaged mAP (test-set resampling only; it understates both errors)",
        },
        "cells": table.to_dict(orient="records"),
        "selection": _selection(selected, scored),
        "runs": [
            {
                "run_key": s.run_key,
                "method": s.method,
                "label_ratio": s.label_ratio,
                "cf_weight": s.cf_weight,
                "seed": s.seed,
                "test_map": s.metrics["map"],
                "val_map": s.val_map,
                "best_epoch": s.best_epoch,
                **(s.diagnostics or {}),
            }
            for s in scored
            if s.run_key is not None
        ],
    }
    headline = _headline(table)
    if headline is not None:
        summary["headline"] = headline
    return plain_json(summary)


def _selection(selected: list[_Scored], scored: list[_Scored]) -> list[dict]:
    """Per label ratio: the candidate cf weights (0 = image_only) and the weight chosen on validation per seed."""
    out = []
    for ratio in sorted({s.label_ratio for s in selected}):
        candidates = {s.cf_weight for s in scored if s.method in SELECTED_FROM and s.label_ratio == ratio}
        chosen = {str(s.seed): s.selected_weight for s in selected if s.label_ratio == ratio}
        out.append({"label_ratio": ratio, "candidates": sorted(candidates), "selected": chosen})
    return out


def _mean_of(values: list) -> float:
    """Mean of the known values; nan when none is known."""
    known = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(known)) if known else math.nan


def _cell_row(dataset: str, key: tuple, runs: list[_Scored]) -> dict:
    """One row of the results table, before the comparison with image_only."""
    maps = np.array([s.metrics["map"] for s in runs], dtype=np.float64)
    low, high = two_level_interval(maps, np.stack([s.resamples for s in runs]))
    row = {
        "dataset": dataset,
        "method": key[0],
        "label_ratio": key[1],
        "cf_weight": key[2],
        "selected_cf_weights": " ".join(
            f"s{s.seed}:{s.selected_weight:g}" for s in runs if s.selected_weight is not None
        ),
        "n_seeds": len(runs),
        "map_mean": float(maps.mean()),
        "map_std": float(maps.std(ddof=1)) if len(maps) > 1 else math.nan,
        "map_ci_low": low,
        "map_ci_high": high,
    }
    for name in METRIC_COLUMNS:
        row[name] = float(np.mean([_cell_metrics(s.metrics)[name] for s in runs]))
    row["val_map"] = _mean_of([s.val_map for s in runs]) if runs[0].run_key else math.nan
    for name in ("val_cf_r2", "val_cf_cosine"):
        row[name] = _mean_of([(s.diagnostics or {}).get(name) for s in runs])
    return row


def _compare(row: dict, runs: list[_Scored], base_runs: list[_Scored]) -> dict:
    """The comparison columns of a row against image_only at its label ratio.

    improvement compares the rows' means; the tests and the CI pair the seeds both ran.
    """
    out = {"improvement": math.nan, "improvement_ci_low": math.nan, "improvement_ci_high": math.nan}
    out |= {"p_value": math.nan, "p_seeds": math.nan, "p_paper": math.nan, "mark": ""}
    base = {s.seed: s for s in base_runs}
    pairs = [(s, base[s.seed]) for s in runs if s.seed in base]
    if not pairs:
        return out
    base_mean = float(np.mean([s.metrics["map"] for s in base_runs]))
    m, b = [p[0] for p in pairs], [p[1] for p in pairs]
    test = two_level_test(
        [s.metrics["map"] for s in m],
        [s.metrics["map"] for s in b],
        np.stack([s.resamples for s in m]),
        np.stack([s.resamples for s in b]),
    )
    out["improvement"] = relative_improvement(row["map_mean"], base_mean)
    out["improvement_ci_low"], out["improvement_ci_high"] = test["improvement_ci"]
    out["p_value"] = test["p"]
    if len(pairs) >= 2:
        out["p_seeds"] = paired_seed_test([s.metrics["map"] for s in m], [s.metrics["map"] for s in b])["p"]
    paper_m, paper_b = np.mean([s.paper_resamples for s in m], axis=0), np.mean([s.paper_resamples for s in b], axis=0)
    if np.isfinite(paper_m).all() and np.isfinite(paper_b).all():
        out["p_paper"] = paired_bootstrap_test(paper_m, paper_b)["p"]
    out["mark"] = significance_mark(out["p_value"])
    return out


def _cells(scored: list[_Scored], dataset: str) -> pd.DataFrame:
    """The results table: one row per cell, each compared with image_only at its label ratio."""
    groups: dict[tuple, list[_Scored]] = {}
    for s in scored:
        groups.setdefault((s.method, s.label_ratio, s.cf_weight), []).append(s)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    keys = sorted(groups, key=lambda k: (k[1], order.get(k[0], len(order)), k[2]))
    rows = []
    for key in keys:
        runs = sorted(groups[key], key=lambda s: s.seed)
        row = _cell_row(dataset, key, runs)
        base_key = (BASELINE, key[1], 0.0)
        if key[0] != BASELINE and base_key in groups:
            row |= _compare(row, runs, groups[base_key])
        else:
            row |= _compare(row, [], [])
        rows.append(row)
    return pd.DataFrame(rows, columns=list(CELL_COLUMNS))


def _headline(table: pd.DataFrame) -> dict | None:
    """with_cf (val-selected) vs image_only at the lowest label ratio where both ran; nothing maximised over test."""
    cf = table[(table["method"] == SELECTED) & table["improvement"].notna()]
    if cf.empty:
        return None
    row = cf.loc[cf["label_ratio"].idxmin()]
    base = table[(table["method"] == BASELINE) & (table["label_ratio"] == row["label_ratio"])].iloc[0]
    return {
        "lowest_label_ratio": float(row["label_ratio"]),
        "method": SELECTED,
        "n_seeds": int(row["n_seeds"]),
        "selected_cf_weights": str(row["selected_cf_weights"]),
        "with_cf_map": float(row["map_mean"]),
        "image_only_map": float(base["map_mean"]),
        "improvement": float(row["improvement"]),
        "improvement_ci_low": float(row["improvement_ci_low"]),
        "improvement_ci_high": float(row["improvement_ci_high"]),
        "p_value": float(row["p_value"]),
        "p_seeds": float(row["p_seeds"]),
        "p_paper": float(row["p_paper"]),
        "mark": str(row["mark"]),
    }


HEADLINE_METRICS = {  # metrics.json key -> headline key
    "label_ratio": "lowest_label_ratio",
    "n_seeds": "n_seeds",
    "with_cf_map": "with_cf_map",
    "image_only_map": "image_only_map",
    "improvement": "improvement",
    "ci_low": "improvement_ci_low",
    "ci_high": "improvement_ci_high",
    "p_value": "p_value",
}
CELL_METRICS = {  # metrics.json prefix -> results column
    "map": "map_mean",
    "map_ci_low": "map_ci_low",
    "map_ci_high": "map_ci_high",
    "improvement": "improvement",
    "p_value": "p_value",
}


def flat_metrics(table: pd.DataFrame, headline: dict | None) -> dict[str, float]:
    """metrics.json, what DVC tracks: numbers only, flat, `headline/<name>` then `<quantity>/<series>/r<ratio>`
    per cell (series as in map_vs_label_ratio.csv, e.g. `map/with_cf_w8/r0.05`); a missing value (a CI from one
    seed, a comparison image_only has not) is left out."""
    values = [(f"headline/{k}", (headline or {}).get(v)) for k, v in HEADLINE_METRICS.items()]
    for prefix, column in CELL_METRICS.items():
        for row in table.itertuples(index=False):
            values.append(
                (f"{prefix}/{series_name(row.method, row.cf_weight)}/r{row.label_ratio:g}", getattr(row, column))
            )
    return {key: float(value) for key, value in values if value is not None and np.isfinite(value)}


def headline_sentence(h: dict) -> str:
    """The headline in words, claiming only what the valid test supports."""
    imp = h["improvement"]
    ci = f"95 % CI {_pct(h['improvement_ci_low'])} to {_pct(h['improvement_ci_high'])}"
    p = f"p={_pvalue(h['p_value'])}, {h['n_seeds']} seeds"
    head = (
        f"at label ratio {h['lowest_label_ratio']:g}: with_cf (val-selected) {_num(h['with_cf_map'])} vs image_only "
        f"{_num(h['image_only_map'])} ({_pct(imp)}, {ci}; {p})"
    )
    p_value = h["p_value"]
    if p_value is None or not math.isfinite(p_value):
        return head + ": significance needs 2+ seeds"
    if p_value <= 0.05:
        return head + (": CF helps here" if imp > 0 else ": CF hurts here")
    return head + ": no significant difference"


def _pct(value) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value * 100:+.1f}%"


def plain_json(value):
    """Plain JSON values: numpy scalars to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------------------- text output


def _num(value, spec: str = ".4f", empty: str = "-") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return empty
    return format(value, spec)


def _pvalue(p) -> str:
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return "-"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _improvement(row) -> str:
    if not math.isfinite(row["improvement"]):
        return "baseline" if row["method"] == BASELINE else "-"
    return f"{row['improvement'] * 100:+.1f}%{row['mark']}"


def _improvement_ci(row) -> str:
    if not math.isfinite(row["improvement_ci_low"]):
        return "-"
    return f"[{row['improvement_ci_low'] * 100:+.1f}, {row['improvement_ci_high'] * 100:+.1f}]"


def method_label(method: str) -> str:
    """How a method is shown in tables and plots (the val-selected row as `with_cf (val-selected)`)."""
    return "with_cf (val-selected)" if method == SELECTED else method


def _weight(row) -> str:
    if row["method"] == SELECTED:
        return "val"
    return f"{row['cf_weight']:g}" if uses_cf(row["method"]) else "-"


TABLE_LEGEND = (
    "mAP: mean ± std over seeds [95 % CI]; improvement over image_only at the same label ratio [95 % CI]. "
    "CIs, p and the marks `*` (p <= 0.05) / `**` (p <= 0.01) come from the two-level test: training seeds and "
    "test items resampled with replacement, paired across methods. p (seeds): paired t-test over seeds "
    "(training randomness only). p (paper): the paper's t-test over overlapping 90 % subsamples "
    "(test-set resampling only; understates the error, for comparison with the paper). "
    "cf weight `val`: per seed, image_only or with_cf at a grid weight, whichever had the best validation mAP "
    "(chosen weights in `selected`). R² / cos: the CF head's fit to the CF vectors on validation items."
)


def _markdown(table: pd.DataFrame, summary: dict) -> str:
    lines = [f"# Evaluation: {summary['dataset']}", ""]
    s = summary["significance"]
    lines.append(
        f"{summary['n_test_items']} test items, {summary['n_labels']} labels, {s['resamples']} with-replacement "
        f"resamples of the test items. {TABLE_LEGEND}"
    )
    lines.append("")
    h = summary.get("headline")
    if h:
        lines += [f"**Headline** {headline_sentence(h)}.", ""]
    probe = summary.get("cf_label_probe")
    if probe and probe.get("probe_map") is not None:
        lines += [
            f"CF vectors: label probe mAP {_num(probe['probe_map'])} vs popularity {_num(probe['popularity_map'])} "
            "(how much label information the interactions carry).",
            "",
        ]
    lines.append(
        "| method | label ratio | cf weight | seeds | mAP mean ± std [95% CI] | micro AP | p@1 | val mAP | R² / cos "
        "| improvement [95% CI] | p | p (seeds) | p (paper) | selected |"
    )
    lines.append("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for _, r in table.iterrows():
        lines.append(
            f"| {method_label(r['method'])} | {r['label_ratio']:g} | {_weight(r)} | {r['n_seeds']} | "
            f"{_num(r['map_mean'])} ± {_num(r['map_std'])} [{_num(r['map_ci_low'])}, {_num(r['map_ci_high'])}] | "
            f"{_num(r['micro_ap'])} | {_num(r['precision@1'])} | {_num(r['val_map'])} | "
            f"{_num(r['val_cf_r2'], '.2f')} / {_num(r['val_cf_cosine'], '.2f')} | "
            f"{_improvement(r)} {_improvement_ci(r)} | {_pvalue(r['p_value'])} | {_pvalue(r['p_seeds'])} | "
            f"{_pvalue(r['p_paper'])} | {r['selected_cf_weights'] or ''} |"
        )
    return "\n".join(lines) + "\n"


def format_table(df: pd.DataFrame) -> str:
    """A compact fixed-width text table of the results (for the terminal)."""
    header = ("method", "ratio", "cf_w", "n", "mAP", "±std", "95% CI", "cf R²", "improv.", "95% CI", "p", "p_paper")
    rows = []
    for _, r in df.iterrows():
        rows.append(
            (
                method_label(str(r["method"])),
                f"{r['label_ratio']:g}",
                _weight(r),
                str(r["n_seeds"]),
                _num(r["map_mean"]),
                _num(r["map_std"]),
                f"[{_num(r['map_ci_low'])}, {_num(r['map_ci_high'])}]",
                _num(r["val_cf_r2"], ".2f"),
                _improvement(r),
                _improvement_ci(r),
                _pvalue(r["p_value"]),
                _pvalue(r["p_paper"]),
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    left = {0}  # the method column is left-aligned, numbers right-aligned

    def line(cells) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


# ---------------------------------------------------------------------------- plots


def new_figure(width: float = 7.0, height: float = 4.5):
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def series_name(method: str, cf_weight: float) -> str:
    """The column of a method (and cf weight) in map_vs_label_ratio.csv, e.g. `with_cf_w2`."""
    return f"{method}_w{cf_weight:g}" if uses_cf(method) else method


def plot_series(table: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean mAP, one row per label ratio, one column per method (and cf weight): for DVC plots."""
    names = [series_name(m, w) for m, w in zip(table["method"], table["cf_weight"])]
    return table.assign(series=names).pivot(index="label_ratio", columns="series", values="map_mean")


def _label(method: str, cf_weight: float, weights: set[float]) -> str:
    if uses_cf(method) and len(weights) > 1:
        return f"{method} (w={cf_weight:g})"
    return method_label(method)


def _plot_map(table: pd.DataFrame, dest: Path) -> None:
    """mAP vs label ratio: a line per method / cf weight (error bars = std over seeds), reference points dashed."""
    fig = new_figure()
    draw_map_vs_label_ratio(fig.add_subplot(1, 1, 1), table)
    fig.tight_layout()
    fig.savefig(dest, format="png")


def draw_map_vs_label_ratio(ax, table: pd.DataFrame, title: str | None = None) -> None:
    """Draw one dataset's cells on `ax`: mAP vs label ratio per method / cf weight, reference points dashed."""
    trained = table[~table["method"].isin(REFERENCE_METHODS)]
    weights = set(trained.loc[trained["method"].map(uses_cf), "cf_weight"])
    for (method, weight), cell in trained.groupby(["method", "cf_weight"], sort=False):
        cell = cell.sort_values("label_ratio")
        ax.errorbar(
            cell["label_ratio"],
            cell["map_mean"],
            yerr=cell["map_std"].fillna(0.0),
            marker="o",
            capsize=3,
            label=_label(method, weight, weights),
        )
    for method, style in zip(REFERENCE_METHODS, ("--", ":")):
        cell = table[table["method"] == method].sort_values("label_ratio")
        if len(cell):
            ax.plot(cell["label_ratio"], cell["map_mean"], linestyle=style, marker="x", color="grey", label=method)
    ratios = sorted(set(table["label_ratio"]))
    if 1 < len(ratios) <= 5 and min(ratios) > 0:  # few, spread-out ratios (0.05, 0.2, 1); many would crowd
        ax.set_xscale("log")
    ax.set_xticks(ratios)
    ax.set_xticklabels([f"{r:g}" for r in ratios])
    ax.minorticks_off()
    ax.set_xlabel("label ratio (share of training items with labels)")
    ax.set_ylabel("test mAP (mean over seeds ± std)")
    if title is None:
        title = f"{table['dataset'].iloc[0]}: mAP vs label ratio" if len(table) else "mAP vs label ratio"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plot_improvement(table: pd.DataFrame, dest: Path) -> None:
    """Relative improvement over image_only per label ratio: a bar per method / cf weight, significance marked."""
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    compared = table[~table["method"].isin((BASELINE, *REFERENCE_METHODS)) & table["improvement"].notna()]
    if compared.empty:
        ax.text(
            0.5, 0.5, "no comparison with image_only in this grid", ha="center", va="center", transform=ax.transAxes
        )
        ax.set_axis_off()
    else:
        ratios = sorted(set(compared["label_ratio"]))
        series = list(compared.groupby(["method", "cf_weight"], sort=False))
        weights = {w for (m, w), _ in series if uses_cf(m)}
        width = 0.8 / len(series)
        for i, ((method, weight), cell) in enumerate(series):
            cell = cell.set_index("label_ratio").reindex(ratios)
            x = np.arange(len(ratios)) + (i - (len(series) - 1) / 2) * width
            values = cell["improvement"].to_numpy(dtype=float) * 100
            errors = np.abs(cell[["improvement_ci_low", "improvement_ci_high"]].to_numpy(dtype=float).T * 100 - values)
            ax.bar(
                x,
                np.nan_to_num(values),
                width,
                yerr=np.nan_to_num(errors),
                capsize=3,
                label=_label(method, weight, weights),
            )
            for xi, v, mark in zip(x, values, cell["mark"].fillna("")):
                if np.isfinite(v) and mark:
                    ax.annotate(mark, (xi, v), ha="center", va="bottom" if v >= 0 else "top", fontsize=10)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.margins(y=0.15)  # room for the marks
        ax.set_xticks(np.arange(len(ratios)))
        ax.set_xticklabels([f"{r:g}" for r in ratios])
        ax.set_xlabel("label ratio")
        ax.set_ylabel("mAP improvement over image_only (%)")
        ax.set_title("95 % CI; * p <= 0.05, ** p <= 0.01 (two-level test: seeds and test items)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dest, format="png")


def load_evaluation(params: Params, dataset: str | None = None, repo_root: Path | None = None) -> dict:
    """A written evaluation read back: {"table", "headline", "summary", "paths"} as run_evaluation returns them."""
    layout = dataset_layout(params, dataset, repo_root)
    paths = {name: layout.evaluation / file for name, file in OUTPUTS.items()}
    if not paths["summary_json"].exists():
        raise FileNotFoundError(f"{paths['summary_json']} is missing: evaluate first")
    summary = json.loads(paths["summary_json"].read_text())
    table = pd.read_csv(paths["results_csv"]).fillna({"mark": "", "selected_cf_weights": ""})  # empty cells read as NaN
    return {"table": table, "headline": summary.get("headline"), "summary": summary, "paths": paths}
