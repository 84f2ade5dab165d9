"""Data-pipeline benchmark: stage wall time and peak memory, and training-input throughput.

Part 1 runs each data step (generate, prepare validation, split, cf, bare fit_factors, cache)
in its own fresh child process, several times interleaved, and reports the median wall time
(of the step itself, measured in the child after its imports) and the child's peak RSS
(`os.wait4` rusage). Part 2 compares augmented images/s of the cache-based batch pipeline
with a standard torchvision per-file DataLoader, interleaved, on the same images.

    .venv/bin/python benchmarks/data_pipeline.py [--quick] [--workers 2] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from collab_iu.layout import dataset_layout
from collab_iu.params import Params, load_params

REPO = Path(__file__).resolve().parents[1]
# The parent stays light (no numpy/pandas/torch before the steps): a child's ru_maxrss starts
# from its parent's RSS at fork/exec time on Linux, so a heavy parent would mask the children.
STEPS = ("baseline", "generate", "prepare", "split", "cf", "fit_factors", "cache")
STEP_LABELS = {
    "baseline": "baseline (imports only)",
    "generate": "generate (synthetic)",
    "prepare": "prepare (validate_dataset)",
    "cf": "cf stage (fit + quality eval)",
    "fit_factors": "fit_factors (full matrix)",
}
BATCH = 256


def make_params(out_dir: Path, quick: bool) -> Params:
    """params.yaml (the defaults), writing under `out_dir`; smaller data with --quick."""
    overrides: dict = {"data.root": str(out_dir)}
    if quick:
        overrides |= {"synthetic.n_items": 300, "synthetic.n_users": 150, "cf.iterations": 5}
    return load_params(REPO / "params.yaml", overrides)


def run_step(name: str, params: Params) -> float:
    """Run one step in this (fresh) process; return its wall time in seconds, imports excluded."""
    import implicit.als  # noqa: F401  - import cost is not part of the step
    import sklearn.linear_model  # noqa: F401

    from collab_iu import stages
    from collab_iu.cf import fit_factors, interaction_matrix
    from collab_iu.synthetic import generate_synthetic
    from collab_iu.validate import validate_dataset

    layout = dataset_layout(params)
    matrix = None
    if name == "fit_factors":
        items, inter = stages.load_prepared(layout)
        matrix = interaction_matrix(inter, items["item_id"], params.cf.binarize)
    start = time.perf_counter()
    if name == "generate":
        generate_synthetic(params.synthetic, layout.raw)
    elif name == "prepare":
        validate_dataset(layout.raw, params.prepare, params.split.min_items_per_label)
    elif name == "fit_factors":
        fit_factors(matrix, params.cf)
    elif name in ("split", "cf", "cache"):
        stages.DATA_STAGES[name](params)
    elif name == "setup":  # untimed: every step's inputs exist before timing
        stages.run_prepare(params)
        stages.run_split(params)
    return time.perf_counter() - start


def spawn_step(name: str, args: argparse.Namespace) -> tuple[float, float, float]:
    """Run `--step name` in a child process; return (step s, whole process s, child's peak RSS MiB)."""
    start = time.perf_counter()
    cmd = [sys.executable, __file__, "--step", name, "--out-dir", str(args.out_dir)] + ["--quick"] * args.quick
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    process_seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if proc.returncode != 0:
        raise RuntimeError(f"step {name} failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])["seconds"], process_seconds, usage.ru_maxrss / 1024


def bench_steps(args: argparse.Namespace) -> None:
    """Interleave `repeats` rounds over all steps; print medians as a markdown table."""
    times: dict[str, list[float]] = {s: [] for s in STEPS}
    whole: dict[str, list[float]] = {s: [] for s in STEPS}
    rss: dict[str, list[float]] = {s: [] for s in STEPS}
    for _ in range(args.repeats):
        for name in STEPS:
            seconds, process_seconds, mib = spawn_step(name, args)
            times[name].append(seconds)
            whole[name].append(process_seconds)
            rss[name].append(mib)
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n## Steps (median of {args.repeats} interleaved runs, one fresh process per run)\n")
    print(f"Launcher peak RSS {floor:.0f} MiB (a lower bound of every child's figure).\n")
    print("| step | wall time (s) | min..max (s) | whole process incl. imports (s) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for name in STEPS:
        t, label = times[name], STEP_LABELS.get(name, name)
        print(
            f"| {label} | {statistics.median(t):.3f} | {min(t):.3f}..{max(t):.3f} "
            f"| {statistics.median(whole[name]):.2f} | {max(rss[name]):.0f} |"
        )


def cache_pipeline(cache_dir: Path, workers: int, in_loader: bool):
    """The cache pipeline as a callable yielding augmented batches for one epoch."""
    import numpy as np
    import torch

    from collab_iu.augment import BatchAugment
    from collab_iu.image_cache import load_image_cache
    from collab_iu.params import AugmentParams

    class CacheBatches(torch.utils.data.Dataset):
        """dataset[list of rows] -> one augmented batch (the memmap is opened lazily per process)."""

        def __init__(self) -> None:
            self.images = None  # np.memmap once opened
            self.augment = BatchAugment(AugmentParams(), output_size=32)

        def __getitem__(self, rows: list[int]) -> torch.Tensor:
            if self.images is None:
                self.images = load_image_cache(cache_dir).images
            return self.augment(torch.from_numpy(self.images[np.sort(rows)]))

    n = len(load_image_cache(cache_dir).images)
    data = CacheBatches()
    sampler = torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(range(n)), BATCH, drop_last=False)
    if not in_loader:
        return lambda: (data[rows] for rows in sampler)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=None,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=True,
        worker_init_fn=lambda _: torch.set_num_threads(1),
    )
    return lambda: iter(loader)


def per_file_pipeline(paths: list[Path], workers: int):
    """The standard torchvision per-file pipeline in a DataLoader."""
    import torch
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose(
        [
            T.RandomResizedCrop(32, scale=(0.6, 1.0), ratio=(0.75, 1.3333)),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.2, 0.2, 0.2),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )

    class Files(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> torch.Tensor:
            return tf(Image.open(paths[i]).convert("RGB"))

    loader = torch.utils.data.DataLoader(
        Files(), batch_size=BATCH, shuffle=True, num_workers=workers, persistent_workers=True
    )
    return lambda: iter(loader)


def epoch_rate(epoch, epochs: int = 1) -> float:
    """Images per second over `epochs` consecutive epochs of `epoch()`."""
    start, n = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in epoch():
            n += len(batch)
    return n / (time.perf_counter() - start)


def bench_throughput(params: Params, args: argparse.Namespace) -> None:
    """Interleave epochs of the three pipelines; print median images/s and ratios."""
    import torch

    from collab_iu.artifacts import load_prepared
    from collab_iu.image_cache import load_image_cache

    torch.set_num_threads(args.workers)
    layout = dataset_layout(params)
    image_of = load_prepared(layout)[0].set_index("item_id")["image"]
    paths = [layout.raw / image_of[i] for i in load_image_cache(layout.cache).index["item_id"]]  # same images
    pipelines = {
        f"cache, main process ({args.workers} torch threads)": cache_pipeline(layout.cache, args.workers, False),
        f"cache, DataLoader ({args.workers} workers, whole batches)": cache_pipeline(layout.cache, args.workers, True),
        f"per-file torchvision, DataLoader ({args.workers} workers)": per_file_pipeline(paths, args.workers),
    }
    rates: dict[str, list[float]] = {k: [] for k in pipelines}
    for epoch in pipelines.values():
        epoch_rate(epoch)  # warm-up: worker start, page cache, allocator
    for _ in range(args.rounds):
        for name, epoch in pipelines.items():
            rates[name].append(epoch_rate(epoch, args.epochs))
    base = statistics.median(rates[list(pipelines)[-1]])
    print(f"\n## Throughput ({len(paths)} images of 32 px, batch {BATCH}, {args.workers} workers/threads)\n")
    print(f"Median of {args.rounds} interleaved rounds of {args.epochs} epochs each, after warm-up.\n")
    print("| pipeline | images/s (median) | min..max | vs per-file |")
    print("|---|---:|---:|---:|")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"| {name} | {med:,.0f} | {min(r):,.0f}..{max(r):,.0f} | {med / base:.1f}x |")


def machine() -> str:
    """CPU model, cores and library versions, one line each (nothing heavy is imported)."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return "\n".join(
        [
            f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
            f"- CPU: {cpu}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable)",
            f"- Python {platform.python_version()}, torch {version('torch')}, torchvision {version('torchvision')}, "
            f"numpy {version('numpy')}, implicit {version('implicit')}",
            f"- OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, load average {os.getloadavg()[0]:.2f}",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=None, help="where the dataset is written (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="small smoke run (300 items, 1 repeat, 2 rounds)")
    ap.add_argument("--workers", type=int, default=2, help="workers / threads for every throughput pipeline")
    ap.add_argument("--repeats", type=int, default=None, help="runs per step (default 3; quick 1)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per pipeline (default 5; quick 2)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per timed round (default 3)")
    ap.add_argument("--step", choices=STEPS + ("setup",), help=argparse.SUPPRESS)  # internal: run one step, print JSON
    args = ap.parse_args()
    if args.step:
        print(json.dumps({"seconds": run_step(args.step, make_params(args.out_dir, args.quick))}))
        return
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.rounds = args.rounds or (2 if args.quick else 5)
    with tempfile.TemporaryDirectory(prefix="collab-iu-bench-") as tmp:
        args.out_dir = (args.out_dir or Path(tmp)).resolve()
        params = make_params(args.out_dir, args.quick)
        print(f"# collab_iu data-pipeline benchmark\n\n{machine()}")
        print(f"- dataset: {params.synthetic.n_items} items, {params.synthetic.image_size} px, under {args.out_dir}")
        spawn_step("setup", args)
        bench_steps(args)
        bench_throughput(params, args)


if __name__ == "__main__":
    main()
