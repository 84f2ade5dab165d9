"""Power of the valid test: how often a true +5 % (or other) effect reaches p < 0.05, per number of seeds.

Reads a finished main job (`collab-iu run`), measures per label ratio the two error
components of with_cf vs image_only (the spread of the per-seed differences: training;
the spread over with-replacement test resamples of the seed-mean difference: test set),
then simulates experiments with those components and a given true effect, and runs
`stats.two_level_test` itself on each, counting p < 0.05. The same simulation with no
effect gives the test's size (its false-positive rate).

    .venv/bin/python benchmarks/power.py [--data-root data] [--effects 0.05 0.08] [--seeds 3 4 5 6 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_pipeline import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def components(data_root: Path, weight: float) -> dict[float, dict]:
    """Per label ratio: image_only's mean mAP, the SD of per-seed differences and of the resampled seed-mean difference."""
    from collab_iu.dataset import label_matrix
    from collab_iu.evaluate import _align, _read_run, load_test_set
    from collab_iu.grid import grid_runs
    from collab_iu.layout import dataset_layout
    from collab_iu.metrics import bootstrap_map, macro_map, resample_counts
    from collab_iu.params import load_params

    params = load_params(REPO / "params.yaml", {"data.root": str(data_root)})
    layout = dataset_layout(params, repo_root=REPO)
    test_set = load_test_set(layout)
    counts = resample_counts(len(test_set.test_ids), params.experiment.significance_resamples, 0)

    def scored(key: str) -> tuple[float, np.ndarray]:
        scores, ids, _, model = _read_run(layout.runs / key)
        y = label_matrix(test_set.test_labels, model["vocabulary"])
        aligned = _align(scores, ids, test_set.test_ids)
        return macro_map(y, aligned)[0], bootstrap_map(y, aligned, counts=counts)

    specs = grid_runs(params.for_dataset(layout.name))
    out = {}
    for ratio in sorted({s.label_ratio for s in specs}):
        seeds = sorted({s.seed for s in specs if s.label_ratio == ratio})
        diffs, resampled, base = [], [], []
        for seed in seeds:
            (m, rm), (b, rb) = (
                scored(f"with_cf-r{ratio:g}-w{weight:g}-s{seed}"),
                scored(f"image_only-r{ratio:g}-w0-s{seed}"),
            )
            diffs.append(m - b), resampled.append(rm - rb), base.append(b)
        out[ratio] = {
            "base": float(np.mean(base)),
            "diff": float(np.mean(diffs)),
            "sd_train": float(np.std(diffs, ddof=1)),
            "sd_test": float(np.mean(resampled, axis=0).std(ddof=1)),
            "n": len(seeds),
        }
    return out


def rejection_rate(delta: float, sd_train: float, sd_test: float, n: int, resamples: int, sims: int, rng) -> float:
    """Share of simulated experiments (n seeds, one test set) in which two_level_test gives p < 0.05."""
    from collab_iu.stats import two_level_test

    hits = 0
    for _ in range(sims):
        common = rng.normal(0, sd_test)  # this test set's error, shared by every seed
        diffs = delta + common + rng.normal(0, sd_train, n)
        resampled = diffs[:, None] + rng.normal(0, sd_test, resamples)[None, :]  # resample noise, paired across seeds
        base = np.full(n, 0.5)
        p = two_level_test(base + diffs, base, resampled + 0.5, np.full((n, resamples), 0.5))["p"]
        hits += p < 0.05
    return hits / sims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=REPO / "data", help="data root of a finished main job")
    ap.add_argument("--weight", type=float, default=2.0, help="the with_cf weight to compare (default 2)")
    ap.add_argument("--effects", type=float, nargs="+", default=[0.05, 0.08], help="true relative effects")
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5, 6, 8])
    ap.add_argument("--sims", type=int, default=2000)
    args = ap.parse_args()
    print(
        f"# Power of the valid test\n\n{machine()}\n- data root {args.data_root}, {args.sims} simulated experiments per cell\n"
    )
    rng = np.random.default_rng(0)
    for ratio, c in components(args.data_root, args.weight).items():
        print(
            f"## label ratio {ratio:g}: image_only mAP {c['base']:.4f}, with_cf - image_only {c['diff']:+.4f} "
            f"({c['n']} seeds); SD of per-seed differences {c['sd_train']:.4f}, test-set SD of the mean difference "
            f"{c['sd_test']:.4f}\n"
        )
        print("| seeds | size (no effect) | " + " | ".join(f"power at {e * 100:+.0f} %" for e in args.effects) + " |")
        print("|---:|---:|" + "---:|" * len(args.effects))
        for n in args.seeds:
            size = rejection_rate(0.0, c["sd_train"], c["sd_test"], n, 200, args.sims, rng)
            power = [
                rejection_rate(e * c["base"], c["sd_train"], c["sd_test"], n, 200, args.sims, rng) for e in args.effects
            ]
            print(f"| {n} | {size:.3f} | " + " | ".join(f"{p:.2f}" for p in power) + " |", flush=True)
        print()


if __name__ == "__main__":
    main()
