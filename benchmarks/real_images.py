"""Real posters: choose the real-images defaults on validation, run the paper's label-ratio family, time the main job.

Needs the MovieLens posters dataset built by benchmarks/movielens_posters.py (never committed). Every run goes
through the project's own CLI (`collab-iu run`), with a params file made from params.yaml: the data root moved
to `--root` and the dataset declared with the `overrides` of each configuration. Results are read back from
the runs' metrics.json and the evaluation's summary.json; nothing is chosen on the test set.

    # 1. candidates, compared on the validation mAP of image_only (test mAP printed beside, never used)
    .venv/bin/python benchmarks/real_images.py tune --raw /work/data/movielens_posters_raw --root /work/data/out
    # 2. the cf weight of with_cf with those defaults, on validation
    .venv/bin/python benchmarks/real_images.py cf-weight --raw ... --root ... --weights 1 3 8
    # 3. the label-ratio family, every affordable mode, with the two-level test
    .venv/bin/python benchmarks/real_images.py family --raw ... --root ... --modes tail heads --seeds 5
    # 4. the main job's wall time with the defaults: from nothing, and with the data outputs in place
    .venv/bin/python benchmarks/real_images.py main-job --raw ... --root /work/data/mainjob
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DATASET = "movielens_posters"
CLI = [str(REPO / ".venv" / "bin" / "collab-iu")]

# candidates for the real-images defaults: overrides on top of the real_images preset
CANDIDATES: dict[str, dict] = {
    "tail1-224-e10": {},
    "tail1-224-e5": {"train.epochs": 5},
    "tail1-160-e10": {"cache.image_size": 160},
    "tail2-224-e10": {"train.tail_blocks": 2},
    "heads-224-e10": {"train.finetune": "heads"},
    "heads-224-e30": {"train.finetune": "heads", "train.epochs": 30},
}
DATA_ASSETS = ("catalogue", "splits", "cf_embeddings", "image_cache", "feature_cache")
MODES = {"tail": {}, "heads": {"train.finetune": "heads"}}  # the family's modes (overrides on the preset)


def params_file(root: Path, raw: Path, overrides: dict, experiment: dict, dest: Path) -> Path:
    """params.yaml with the data root at `root`, the posters dataset declared with `overrides`, and
    `experiment` (group keys) applied."""
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    tree["data"]["root"] = str(root)
    tree["data"]["datasets"][DATASET] = {"source": "movielens", "path": str(raw), "overrides": overrides}
    tree["experiment"] |= experiment
    tree["wandb"]["mode"] = "disabled"
    dest.write_text(yaml.safe_dump(tree, sort_keys=False))
    return dest


def collab_iu(*args: str) -> float:
    """Run `collab-iu ARGS` from the repository root; its wall seconds (stops on failure)."""
    start = time.perf_counter()
    done = subprocess.run([*CLI, *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"collab-iu {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def run_metrics(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / DATASET / "runs").glob("*/metrics.json"))]


def tune(args: argparse.Namespace) -> None:
    """Each candidate's image_only runs at the tuning ratios and seeds: mean validation mAP (the choice), test mAP."""
    experiment = {"methods": ["image_only"], "label_ratios": args.ratios, "seeds": list(range(args.seeds))}
    print(f"| candidate | {' | '.join(f'val mAP r{r:g}' for r in args.ratios)} | mean val | test mAP (not used) | s |")
    print("|---|" + "---|" * (len(args.ratios) + 3))
    for name in args.only or CANDIDATES:
        params = params_file(args.root, args.raw, CANDIDATES[name], experiment, args.root / f"tune-{name}.yaml")
        shutil.rmtree(args.root / DATASET / "runs", ignore_errors=True)
        collab_iu("materialize", *DATA_ASSETS, "--partition", DATASET, "--params", str(params))
        seconds = collab_iu("train", "--dataset", DATASET, "--params", str(params))
        runs = run_metrics(args.root)
        val = [statistics.mean(m["val_map"] for m in runs if m["label_ratio"] == r) for r in args.ratios]
        test = statistics.mean(m["test_map"] for m in runs)
        print(
            f"| {name} | {' | '.join(f'{v:.4f}' for v in val)} | {statistics.mean(val):.4f} | {test:.4f} | {seconds:.0f} |"
        )


def cf_weight(args: argparse.Namespace) -> None:
    """image_only and with_cf at each weight with the defaults: mean validation mAP per weight and ratio (the
    choice), test mAP beside it (never used)."""
    experiment = {
        "methods": ["image_only", "with_cf"],
        "label_ratios": args.ratios,
        "cf_weights": args.weights,
        "seeds": list(range(args.seeds)),
    }
    params = params_file(args.root, args.raw, MODES[args.modes[0]], experiment, args.root / "cf-weight.yaml")
    shutil.rmtree(args.root / DATASET / "runs", ignore_errors=True)
    collab_iu("materialize", *DATA_ASSETS, "--partition", DATASET, "--params", str(params))
    seconds = collab_iu("train", "--dataset", DATASET, "--params", str(params))
    runs = run_metrics(args.root)
    print(f"mode {args.modes[0]}, {len(runs)} runs in {seconds:.0f} s\n")
    print(f"| cf weight | {' | '.join(f'val mAP r{r:g}' for r in args.ratios)} | mean val | test mAP (not used) |")
    print("|---|" + "---|" * (len(args.ratios) + 2))
    for weight in [0.0, *args.weights]:
        mine = [m for m in runs if m["cf_weight"] == weight]
        val = [statistics.mean(m["val_map"] for m in mine if m["label_ratio"] == r) for r in args.ratios]
        test = statistics.mean(m["test_map"] for m in mine)
        name = "0 (image_only)" if weight == 0 else f"{weight:g}"
        print(f"| {name} | {' | '.join(f'{v:.4f}' for v in val)} | {statistics.mean(val):.4f} | {test:.4f} |")


def family(args: argparse.Namespace) -> None:
    """The label-ratio family per mode (image_only, with_cf, and warm_image_cf for items with interactions, on the
    same test items): the evaluation's table (two-level test) and the wall time."""
    experiment = {
        "methods": ["image_only", "with_cf", "warm_image_cf"],
        "label_ratios": args.ratios,
        "seeds": list(range(args.seeds)),
    }
    if args.weights_given:
        experiment["cf_weights"] = args.weights
    for mode in args.modes:
        params = params_file(args.root, args.raw, MODES[mode], experiment, args.root / f"family-{mode}.yaml")
        shutil.rmtree(args.root / DATASET / "runs", ignore_errors=True)
        seconds = collab_iu("run", "--dataset", DATASET, "--params", str(params))
        table = (args.root / DATASET / "evaluation" / "results.md").read_text()
        keep = args.root / f"family-{mode}"
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(args.root / DATASET / "evaluation", keep)
        print(f"## mode {mode}: {len(run_metrics(args.root))} runs, `collab-iu run` {seconds:.0f} s\n\n{table}\n")


def main_job(args: argparse.Namespace) -> None:
    """`collab-iu run` with the defaults (and each mode's override), from an empty data root; then again with the
    data outputs (feature cache included) in place and the runs removed; each `--repeats` times, medians."""
    for mode in args.modes:
        params = params_file(args.root, args.raw, MODES[mode], {}, args.root.parent / f"main-job-{mode}.yaml")
        cold, warm = [], []
        for _ in range(args.repeats):
            shutil.rmtree(args.root, ignore_errors=True)
            cold.append(collab_iu("run", "--dataset", DATASET, "--params", str(params)))
            shutil.rmtree(args.root / DATASET / "runs")
            warm.append(collab_iu("run", "--dataset", DATASET, "--params", str(params)))
        print(
            f"main job, mode {mode}: from nothing {statistics.median(cold):.0f} s (each: {[round(t) for t in cold]}),"
        )
        print(f"  with the data outputs in place {statistics.median(warm):.0f} s (each: {[round(t) for t in warm]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["tune", "cf-weight", "family", "main-job"])
    parser.add_argument("--raw", type=Path, required=True, help="the dataset from benchmarks/movielens_posters.py")
    parser.add_argument("--root", type=Path, required=True, help="a data root outside the repository")
    parser.add_argument("--ratios", type=float, nargs="+", default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--only", nargs="+", choices=list(CANDIDATES), help="tune: these candidates only")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 3.0, 8.0], help="cf-weight: with_cf's")
    args = parser.parse_args()
    args.weights_given = "--weights" in sys.argv
    args.root = args.root.resolve()
    args.root.mkdir(parents=True, exist_ok=True)
    if args.what == "tune":
        args.ratios, args.seeds = args.ratios or [0.1, 1.0], args.seeds or 3
        tune(args)
    elif args.what == "cf-weight":
        args.ratios, args.seeds = args.ratios or [0.1, 1.0], args.seeds or 3
        cf_weight(args)
    elif args.what == "family":
        args.ratios, args.seeds = args.ratios or [0.05, 0.1, 0.2, 0.5, 1.0], args.seeds or 5
        family(args)
    else:
        main_job(args)


if __name__ == "__main__":
    main()
