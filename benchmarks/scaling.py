"""Cost at scale: the data stages and one training epoch timed at several catalogue sizes, with their growth.

For each size (items; users = 0.4 x items and ~40 interactions per user, as params.yaml's synthetic dataset,
so interactions grow in proportion), a dataset is generated with the embedded generator in blocks of at most
10,000 items (`--block`): the generator's interaction step holds a users x items matrix, so one call at 200k
items would need ~0.5 TB; each block is one `generate_synthetic` call with its own seed and users, and the
blocks are merged (users interact within their block only). It is then read as a `folder` dataset, and every
step runs in its own fresh child process (timed inside the child, after its imports; peak RSS from
`os.wait4`), once per size:

- prepare: `run_prepare` (validate_dataset: ids, labels, every image decoded on 2 threads; write prepared/);
- split: `run_split`;
- cf: `run_cf` with cf.eval_holdout 0 (ALS fit, 30 iterations, 32 factors, 1 thread, + the label probe);
- cf fit: `fit_factors` alone on the full user x item matrix (the matrix is built before the clock starts);
- cf eval: the recommendation-quality evaluation that cf.eval_holdout 0.2 (the default) adds to the cf stage:
  a second fit and recall/ndcg over every user x item; skipped above `--max-eval-entries` users x items;
- cache: `run_cache` (decode + resize every image into cache/images.npy, 2 threads);
- train: one epoch of with_cf (small_cnn, 32 px, batch 64, CPU) with its
  validation pass and checkpoint (`train_model`); its images/s counts the training pass only. One torch
  thread by default: a per-core rate, and no OpenMP spin-waiting when other work shares the cores.

Then it fits log(seconds) = a + b log(items) per step (least squares over the sizes) and prints b.

    .venv/bin/python benchmarks/scaling.py [--sizes 2000 20000 200000] [--quick] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The parent imports nothing heavy: a child's ru_maxrss starts from its parent's RSS at fork/exec on Linux.
STEPS = ("generate", "prepare", "split", "cf", "cf_fit", "cf_eval", "cache", "train")
LABELS = {
    "generate": "generate (setup, blocks)",
    "prepare": "prepare (validate + write)",
    "cf": "cf stage (fit + probe)",
    "cf_fit": "cf: ALS fit alone",
    "cf_eval": "cf: quality eval (holdout 0.2)",
    "train": "train: 1 epoch + validation",
}
USERS_PER_ITEM = 0.4  # params.yaml: 800 users for 2000 items


def make_params(folder: Path, items: int, threads: int):
    """params.yaml's defaults with the dataset `scale` (a folder dataset at folder/raw) and its outputs in folder."""
    from collab_iu.params import load_params

    overrides = {
        "data.root": str(folder / "data"),
        "data.default": "scale",
        "data.datasets": {"scale": {"source": "folder", "path": str(folder / "raw")}},
        "synthetic.n_items": items,
        "synthetic.n_users": round(items * USERS_PER_ITEM),
        "cf.eval_holdout": 0.0,
        "train.epochs": 1,
        "train.device": "cpu",
        "train.num_threads": threads,
    }
    return load_params(REPO / "params.yaml", overrides)


def generate_blocks(params, dest: Path, block: int) -> dict:
    """The synthetic dataset of params.synthetic.n_items items, made of generator calls of <= `block` items each
    (seed + block number; ids and image folders prefixed b<k>_), merged into dest (items.parquet,
    interactions.parquet, images/b<k>/...)."""
    import pandas as pd

    from collab_iu.synthetic import generate_synthetic

    p = params.synthetic
    n_blocks = math.ceil(p.n_items / block)
    items, interactions = [], []
    (dest / "images").mkdir(parents=True)
    for k in range(n_blocks):
        n = p.n_items // n_blocks + (k < p.n_items % n_blocks)
        part = dest / f"block{k}"
        sub = p.model_copy(update={"n_items": n, "n_users": round(n * USERS_PER_ITEM), "seed": p.seed + k})
        generate_synthetic(sub, part)
        (part / "images").rename(dest / "images" / f"b{k}")
        its, inter = pd.read_parquet(part / "items.parquet"), pd.read_parquet(part / "interactions.parquet")
        its["item_id"] = f"b{k}_" + its["item_id"]
        its["image"] = its["image"].str.replace("images/", f"images/b{k}/", regex=False)
        inter["item_id"], inter["user_id"] = f"b{k}_" + inter["item_id"], f"b{k}_" + inter["user_id"]
        items.append(its)
        interactions.append(inter)
        shutil.rmtree(part)
    pd.concat(items, ignore_index=True).to_parquet(dest / "items.parquet", index=False)
    merged = pd.concat(interactions, ignore_index=True)
    merged.to_parquet(dest / "interactions.parquet", index=False)
    return {"blocks": n_blocks, "interactions": len(merged), "users": int(merged["user_id"].nunique())}


def cf_eval(params) -> dict:
    """recommendation_quality's work (collab_iu/cf.py), its second fit and its ranking timed apart."""
    from collab_iu.artifacts import load_prepared
    from collab_iu.cf import fit_factors, holdout_split, interaction_matrix, ranking_metrics
    from collab_iu.layout import dataset_layout

    items, inter = load_prepared(dataset_layout(params))
    matrix = interaction_matrix(inter, items["item_id"], params.cf.binarize)
    start = time.perf_counter()
    train, test = holdout_split(matrix, 0.2, params.cf.seed)
    user_f, item_f = fit_factors(train, params.cf)
    fitted = time.perf_counter()
    ranking_metrics(lambda u: user_f[u] @ item_f.T, train, test, params.cf.eval_k)
    popularity = train.sum(0).A1
    ranking_metrics(lambda u: popularity[None, :].repeat(len(u), 0), train, test, params.cf.eval_k)
    ranked = time.perf_counter()
    return {"seconds": ranked - start, "detail": f"fit {fitted - start:.1f} s, ranking {ranked - fitted:.1f} s"}


def train_epoch(params, folder: Path) -> dict:
    """One epoch of with_cf at label ratio 1 (train_model: the epoch, the validation pass, the checkpoint)."""
    from collab_iu.layout import dataset_layout
    from collab_iu.train import load_training_data, train_model

    train = params.train.model_copy(update={"cf_weight": params.train.cf_weight or 8.0})
    params = params.model_copy(update={"train": train})
    records: list[dict] = []
    start = time.perf_counter()
    data = load_training_data(dataset_layout(params), params, 1.0, 0)
    loaded = time.perf_counter()
    train_model(data, train, params.augment, folder / "run", progress=False, on_epoch_end=records.append)
    rate = records[-1]["images_per_s"]
    n = len(data.train_rows)
    detail = f"load {loaded - start:.1f} s, {n:,} train images at {rate:,.0f} img/s ({n / rate:.1f} s)"
    return {"seconds": time.perf_counter() - start, "detail": detail, "train_pass_s": n / rate}


def run_step(name: str, folder: Path, items: int, args: argparse.Namespace) -> dict:
    """Run one step in this fresh process; return {"seconds": ..., "detail": ...}, imports excluded."""
    import implicit.als  # noqa: F401  - import costs are not part of a step (torch: only the train step's)
    import sklearn.linear_model  # noqa: F401

    from collab_iu import stages
    from collab_iu.artifacts import load_prepared
    from collab_iu.cf import fit_factors, interaction_matrix
    from collab_iu.layout import dataset_layout

    params = make_params(folder, items, args.threads)
    if name == "cf_eval":
        return cf_eval(params)
    if name == "train":
        return train_epoch(params, folder)
    matrix = None
    if name == "cf_fit":
        prepared, inter = load_prepared(dataset_layout(params))
        matrix = interaction_matrix(inter, prepared["item_id"], params.cf.binarize)
    start = time.perf_counter()
    if name == "generate":
        detail = generate_blocks(params, folder / "raw", args.block)
    elif name == "cf_fit":
        fit_factors(matrix, params.cf)
        detail = {"users": matrix.shape[0], "interactions": int(matrix.nnz)}
    else:
        report = stages.DATA_STAGES[name](params)
        detail = {k: report[k] for k in ("items", "interactions", "images", "bytes") if k in report}
    return {"seconds": time.perf_counter() - start, "detail": detail}


def spawn(name: str, folder: Path, items: int, args: argparse.Namespace) -> dict:
    """Run `--step name` in a child process; add its peak RSS (MiB) to what it printed."""
    cmd = [sys.executable, __file__, "--step", name, "--folder", str(folder), "--items", str(items)]
    cmd += ["--threads", str(args.threads), "--block", str(args.block)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if proc.returncode != 0:
        raise RuntimeError(f"step {name} at {items} items failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]) | {"rss": usage.ru_maxrss / 1024}


def bench_size(items: int, root: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Every step at one size, in order; the size's folder is deleted afterwards."""
    folder = root / f"n{items}"
    folder.mkdir()
    results: dict[str, dict] = {}
    users = round(items * USERS_PER_ITEM)
    for name in STEPS:
        if name == "cf_eval" and items * users > args.max_eval_entries:
            results[name] = {"skipped": f"{items * users:.1e} user x item scores > --max-eval-entries"}
            continue
        results[name] = spawn(name, folder, items, args)
        print(f"  {items:>9,} items  {LABELS.get(name, name):<30} {results[name]['seconds']:9.2f} s", flush=True)
    shutil.rmtree(folder)
    return results


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(seconds) on log(items); None with fewer than 2 points."""
    if len(points) < 2:
        return None
    return statistics.linear_regression([math.log(x) for x, _ in points], [math.log(y) for _, y in points]).slope


def print_tables(sizes: list[int], results: dict[int, dict[str, dict]]) -> None:
    """The measured table (seconds and peak RSS per step and size), the fitted exponents, the details."""
    head = " | ".join(f"{n:,} items: s | MiB" for n in sizes)
    print(f"\n| step | {head} | exponent b (s ~ items^b) |")
    print("|---|" + "---:|---:|" * len(sizes) + "---:|")
    for name in STEPS:
        cells, points = [], []
        for n in sizes:
            r = results[n][name]
            if "skipped" in r:
                cells.append("skipped | -")
                continue
            cells.append(f"{r['seconds']:.2f} | {r['rss']:,.0f}")
            points.append((n, max(r["seconds"], 1e-3)))
        b = slope(points)
        print(f"| {LABELS.get(name, name)} | {' | '.join(cells)} | {'-' if b is None else f'{b:.2f}'} |")
    print("\nDetails:\n")
    for n in sizes:
        for name in STEPS:
            r = results[n][name]
            print(f"- {n:,} items, {name}: {r.get('detail', r.get('skipped'))}")


def machine() -> str:
    """Date, CPU, cores, memory and library versions (nothing heavy is imported)."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = next(int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.startswith("MemTotal")) / 2**20
    return "\n".join(
        [
            f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
            f"- CPU: {cpu}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {mem:.1f} GiB RAM",
            f"- Python {platform.python_version()}, torch {version('torch')}, numpy {version('numpy')}, "
            f"pandas {version('pandas')}, implicit {version('implicit')}, scikit-learn {version('scikit-learn')}",
            f"- load average {os.getloadavg()[0]:.2f} at the start",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 200000], help="catalogue sizes (items)")
    ap.add_argument("--quick", action="store_true", help="smoke run: sizes 300 600 1200")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the training epoch (1: a per-core rate)")
    ap.add_argument("--block", type=int, default=10000, help="items per generator call")
    ap.add_argument("--max-eval-entries", type=float, default=2e9, help="largest users x items for the cf eval")
    ap.add_argument("--out-dir", type=Path, default=None, help="where the datasets go (default: a temp dir)")
    ap.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # internal: run one step, print JSON
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--items", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        print(json.dumps(run_step(args.step, args.folder, args.items, args), default=str))
        return
    sizes = [300, 600, 1200] if args.quick else sorted(args.sizes)
    print(f"# collab_iu scaling benchmark\n\n{machine()}")
    print(f"- sizes: {sizes} items, {USERS_PER_ITEM} users per item, generator blocks of <= {args.block:,} items")
    start, results = time.perf_counter(), {}
    with tempfile.TemporaryDirectory(prefix="collab-iu-scaling-", dir=args.out_dir) as tmp:
        for n in sizes:
            results[n] = bench_size(n, Path(tmp), args)
    print_tables(sizes, results)
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nLauncher peak RSS {floor:.0f} MiB; whole benchmark {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
