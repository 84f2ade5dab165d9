"""How much the val-selected choice depends on validation keeping every label.

At every label ratio the validation items keep all their labels, so choosing between image_only and with_cf (the
`with_cf (val-selected)` row) sees far more labels than training did. This script re-makes that choice per
(label ratio, seed) on random subsets of the validation items of the label ratio's size (at least
`--min-items`), as a project with that few labelled items would, and reports how often the choice changes and
what the chosen runs score on the test items, against the choice on the whole validation set. The runs' best
epochs were themselves chosen on the whole validation set; only the method choice is re-made here.

    .venv/bin/python benchmarks/val_subsampling.py --params PARAMS --dataset NAME [--draws 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from collab_iu.artifacts import METRICS_JSON, item_splits, load_prepared
from collab_iu.dataset import label_matrix
from collab_iu.experiment import load_run_model
from collab_iu.features import feature_spec, load_features
from collab_iu.grid import grid_runs
from collab_iu.image_cache import load_image_cache
from collab_iu.layout import dataset_layout
from collab_iu.metrics import macro_map
from collab_iu.params import load_params
from collab_iu.train import predict_scores


def validation_scores(params, dataset: str) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, dict]]:
    """The validation items' labels (over the training vocabulary), each run's scores of them, its metrics."""
    params = params.for_dataset(dataset)
    layout = dataset_layout(params, dataset)
    items, _ = load_prepared(layout)
    cache = load_image_cache(layout.cache)
    rows = cache.rows(items["item_id"])
    val = np.flatnonzero((item_splits(layout, items) == "val") & (rows >= 0))
    spec = feature_spec(params)
    inputs = cache.images if spec is None else load_features(layout, spec)
    scores, metrics, vocabulary, cpu = {}, {}, None, torch.device("cpu")
    for run in grid_runs(params):
        run_dir = layout.runs / run.key
        if run.method not in ("image_only", "with_cf") or not (run_dir / METRICS_JSON).exists():
            continue
        model, info = load_run_model(run_dir, cpu, params.train.trainable_blocks)
        vocabulary = info["vocabulary"]
        scores[run.key] = predict_scores(
            model, inputs, rows[val], info["input_size"], cpu, from_features=spec is not None
        )
        metrics[run.key] = json.loads((run_dir / METRICS_JSON).read_text())
    return label_matrix(items["labels"].iloc[val], vocabulary), scores, metrics


def choose(keys: list[str], y: np.ndarray, scores: dict[str, np.ndarray], subset: np.ndarray) -> str:
    """The run with the best validation mAP on `subset` (ties: the first, image_only before with_cf)."""
    return max(keys, key=lambda k: macro_map(y[subset], scores[k][subset])[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--draws", type=int, default=50)
    parser.add_argument("--min-items", type=int, default=10)
    args = parser.parse_args()
    y, scores, metrics = validation_scores(load_params(args.params), args.dataset)
    cells: dict[tuple[float, int], list[str]] = {}
    for key, m in metrics.items():
        cells.setdefault((m["label_ratio"], m["seed"]), []).append(key)
    cells = {c: sorted(k, key=lambda k: metrics[k]["method"] != "image_only") for c, k in cells.items() if len(k) > 1}
    rng = np.random.default_rng(0)
    everyone = np.arange(len(y))
    print(f"{len(y)} validation items; {args.draws} draws per (label ratio, seed)\n")
    print("| label ratio | validation items | choice changes | test mAP, full validation | test mAP, subsampled |")
    print("|---|---|---|---|---|")
    for ratio in sorted({r for r, _ in cells}):
        n = min(len(y), max(args.min_items, round(ratio * len(y))))
        changed, full, sub = [], [], []
        for (r, _), keys in cells.items():
            if r != ratio:
                continue
            chosen = choose(keys, y, scores, everyone)
            full.append(metrics[chosen]["test_map"])
            for _ in range(args.draws):
                pick = choose(keys, y, scores, rng.choice(len(y), n, replace=False))
                changed.append(pick != chosen)
                sub.append(metrics[pick]["test_map"])
        print(
            f"| {ratio:g} | {n} of {len(y)} | {100 * statistics.mean(changed):.0f} % | "
            f"{statistics.mean(full):.4f} | {statistics.mean(sub):.4f} |"
        )


if __name__ == "__main__":
    main()
