"""GPU training throughput: train.py's loop vs the compute bound, a paper-sized grid, and four input modes.

Three parts (`--parts`; loop and grid by default), run and printed in this order:

- loop: collab_iu/train.py's `train_model` itself (its input path, augmentation, bf16 autocast,
  channels_last, fused optimiser; a validation pass and a checkpoint per epoch) on a synthetic
  cached dataset (a `.npy` memmap of random 256 px uint8 images, random labels and CF targets),
  for resnet18, mobilenet_v2 and regnet_y_400mf at 224 px, batch 256, AdamW, cf_weight 2; against
  the GPU-resident compute bound of the same model (forward, loss, backward and fused optimiser
  step on one pre-augmented batch already on the device). images/s of the loop: the median over
  its epochs after the first (train.py's `images_per_s` per epoch); of the bound: the median over
  --rounds blocks of --steps steps after --warmup steps. Their ratio is what the loop loses.
- grid: a Pinterest-sized synthetic dataset (the embedded generator at --grid-items items, drawn
  at --grid-px px and cached at 256 px; the paper_pinterest preset's regnet_y_400mf at batch 128,
  params.yaml's AdamW) through the product's scheduler (`orchestration.pipeline.run_pipeline`: the
  data assets, then a label-ratio grid of 2 methods x 4 label ratios x 2 seeds, --grid-epochs
  epochs each), trained
  once one run at a time and once --concurrent runs at a time (experiment.runs_per_gpu on a GPU,
  experiment.workers on the CPU); wall time, training images/s (all runs' epochs x training items
  / wall time), GPU utilisation and memory (sampled device-wide with NVML or nvidia-smi, and each
  run's own from its metrics.json).
- modes: resnet18 fed four ways, timed in interleaved rounds (every mode one block of --steps
  steps per round, after --warmup steps each), images/s = the median over rounds of steps x batch
  / block time (the GPU is synchronised at the ends of a block only):
  - resident: one fixed pre-augmented float batch already on the GPU (the compute bound);
  - resident + augment: a fixed uint8 batch on the GPU, `BatchAugment` to 224 px each step;
  - pipeline: random batches of indices gathered from the memmap on the CPU by a background
    thread into pinned memory, copied to the GPU non_blocking, `BatchAugment` on the GPU;
  - serial: the gather in the training loop into pageable memory, `.to(device,
    non_blocking=True)`, and a `float()` of every loss term each step (a host sync), as train.py
    did before issue 15.

`--parts modes` alone needs only torch, torchvision and numpy (asserted at the end: no pandas,
pydantic, ... are imported); loop needs collab_iu's dependencies (pydantic, pandas, scipy), grid the
whole project (dagster, implicit, ...).

    python benchmarks/gpu_throughput.py                   # loop and grid on CUDA (estimated 8 min: docs/benchmarks.md)
    python benchmarks/gpu_throughput.py --parts modes [--steps 20] [--rounds 3] [--batch-size 256] [--images 4096]
    python benchmarks/gpu_throughput.py --device cpu --quick --parts loop grid modes  # a CPU smoke run of all
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # collab_iu without installing it (and without its other dependencies)

from collab_iu.augment import BatchAugment  # noqa: E402
from collab_iu.losses import multitask_loss  # noqa: E402
from collab_iu.models import MultitaskModel  # noqa: E402

NUM_LABELS, CF_DIM, CF_WEIGHT, CF_KIND = 10, 33, 2.0, "mse"
# params.yaml's augment section, without collab_iu.params (pydantic)
AUGMENT = SimpleNamespace(
    scale=(0.6, 1.0), ratio=(0.75, 1.3333), flip=True, brightness=0.2, contrast=0.2, saturation=0.2, grayscale=0.0
)
# the project's other dependencies: none of them may be needed here (tqdm is left out: torch.hub imports
# it when it is installed and falls back to its own stub when it is not)
FORBIDDEN = (
    "pandas",
    "pydantic",
    "dagster",
    "pyarrow",
    "yaml",
    "sklearn",
    "implicit",
    "scipy",
    "matplotlib",
    "wandb",
    "dvc",
    "psutil",
)
MODES = ("resident", "resident + augment", "pipeline", "serial")
FULL = dict(  # the default sizes: every part within ~8 minutes on one H200 (estimated: docs/benchmarks.md)
    steps=20,
    rounds=3,
    warmup=5,
    batch_size=256,
    images=4096,
    cache_size=256,
    crop=224,
    loop_images=12288,
    loop_epochs=3,
    grid_items=34000,
    grid_users=1000,
    grid_px=32,
    grid_epochs=2,
)
QUICK = dict(  # --quick: a smoke run of every part in a few minutes on 2 CPU cores
    steps=2,
    rounds=1,
    warmup=1,
    batch_size=8,
    images=64,
    cache_size=40,
    crop=32,
    loop_images=64,
    loop_epochs=2,
    grid_items=300,
    grid_users=150,
    grid_px=32,
    grid_epochs=2,
    concurrent=2,
    grid_backbone="small_cnn",  # the preset's regnet_y_400mf takes ~10x longer on 2 cores
)
PARTS = ("loop", "grid", "modes")
BACKBONES = ("resnet18", "mobilenet_v2", "regnet_y_400mf")
GRID = {  # the label-ratio grid of the grid part: 2 methods x 4 label ratios x 2 seeds
    "experiment.family": "main",
    "experiment.methods": ["image_only", "with_cf"],
    "experiment.label_ratios": [0.1, 0.3, 0.5, 1.0],
    "experiment.seeds": [0, 1],
}


def make_cache(folder: Path, n: int, size: int, seed: int = 0) -> np.ndarray:
    """A random uint8 cache n x size x size x 3 written as a .npy memmap, reopened read-only."""
    path = folder / "images.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    rng = np.random.default_rng(seed)
    for start in range(0, n, 256):
        images[start : start + 256] = rng.integers(0, 256, images[start : start + 256].shape, dtype=np.uint8)
    images.flush()
    del images
    return np.load(path, mmap_mode="r")


def make_targets(n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """Per-image loss targets on the CPU: labels (half the images labelled), CF vectors, confidences."""
    g = torch.Generator().manual_seed(seed)
    return {
        "labels": (torch.rand(n, NUM_LABELS, generator=g) < 0.2).float(),
        "labelled": torch.rand(n, generator=g) < 0.5,
        "cf_target": torch.randn(n, CF_DIM, generator=g),
        "cf_confidence": torch.ones(n),
    }


class Prefetcher:
    """A background thread gathering random index batches from the cache into pinned memory.

    np.take releases the GIL while it copies, so the gather overlaps the training loop.
    The pinned buffers come from torch's caching host allocator, which does not reuse one
    before the non_blocking copy reading it has finished.
    """

    def __init__(self, images: np.ndarray, targets: dict[str, torch.Tensor], batch: int, pin: bool, depth: int = 3):
        self.images, self.targets, self.batch, self.pin = images, targets, batch, pin
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.gather_s: list[float] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as e:  # surfaced by get()
            self.error = e

    def _produce(self) -> None:
        rng = np.random.default_rng(2)
        shape = (self.batch, *self.images.shape[1:])
        while not self.stop.is_set():
            start = time.perf_counter()
            idx = np.sort(rng.choice(len(self.images), self.batch, replace=False))
            buf = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin)
            np.take(self.images, idx, axis=0, out=buf.numpy(), mode="clip")  # "raise" would copy via a buffer
            t = torch.from_numpy(idx)
            targets = {k: v[t].pin_memory() if self.pin else v[t] for k, v in self.targets.items()}
            self.gather_s.append(time.perf_counter() - start)
            while not self.stop.is_set():
                try:
                    self.queue.put((buf, targets), timeout=0.1)
                    break
                except queue.Full:
                    continue

    def get(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        while True:
            try:
                return self.queue.get(timeout=1.0)
            except queue.Empty:
                if not self.thread.is_alive():
                    raise RuntimeError("the prefetch thread stopped") from self.error

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


class Bench:
    """The model, optimiser (fused on CUDA, as train.py's) and one training step per input mode."""

    def __init__(
        self,
        args: argparse.Namespace,
        device: torch.device,
        images: np.ndarray,
        backbone: str = "resnet18",
        prefetch: bool = True,
        compile_model: bool = False,
    ):
        self.device, self.cuda, self.batch = device, device.type == "cuda", args.batch_size
        torch.manual_seed(0)
        self.model = MultitaskModel(backbone, NUM_LABELS, CF_DIM).to(device).to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if compile_model else self.model
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=1e-4, fused=self.cuda)
        self.augment = BatchAugment(AUGMENT, output_size=args.crop)
        self.generator = torch.Generator(device=device).manual_seed(0)
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda and not args.no_amp else nullcontext()
        self.pos_weight = torch.full((NUM_LABELS,), 4.0, device=device)
        self.images, self.targets = images, make_targets(len(images))
        self.rng = np.random.default_rng(3)
        first = np.arange(self.batch)
        self.resident_u8 = torch.from_numpy(np.ascontiguousarray(images[first])).to(device)
        self.resident_x = self.channels_last(self.augment(self.resident_u8, self.generator))
        self.resident_targets = {k: v[torch.from_numpy(first)].to(device) for k, v in self.targets.items()}
        self.prefetcher = Prefetcher(images, self.targets, self.batch, pin=self.cuda) if prefetch else None
        self.model.train()

    @staticmethod
    def channels_last(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    def train_step(self, x: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Forward (autocast), multitask loss, backward, AdamW step; the loss terms, on the device."""
        with self.autocast:
            outputs = self.forward(x)
        terms = multitask_loss(outputs, targets, pos_weight=self.pos_weight, cf_kind=CF_KIND, cf_weight=CF_WEIGHT)
        self.opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.opt.step()
        return terms

    def resident(self) -> None:
        self.train_step(self.resident_x, self.resident_targets)

    def resident_augment(self) -> None:
        self.train_step(self.channels_last(self.augment(self.resident_u8, self.generator)), self.resident_targets)

    def pipeline(self) -> None:
        images, targets = self.prefetcher.get()
        x = self.augment(images.to(self.device, non_blocking=True), self.generator)
        self.train_step(self.channels_last(x), {k: v.to(self.device, non_blocking=True) for k, v in targets.items()})

    def serial(self) -> None:
        idx = np.sort(self.rng.choice(len(self.images), self.batch, replace=False))
        images = torch.from_numpy(np.ascontiguousarray(self.images[idx])).to(self.device, non_blocking=True)
        x = self.channels_last(self.augment(images, self.generator))
        t = torch.from_numpy(idx)
        terms = self.train_step(x, {k: v[t].to(self.device, non_blocking=True) for k, v in self.targets.items()})
        _ = {k: float(v.detach()) for k, v in terms.items()}  # train.py sums the terms on the host each step

    def steps(self) -> dict[str, Callable[[], None]]:
        return dict(zip(MODES, (self.resident, self.resident_augment, self.pipeline, self.serial), strict=True))

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def run(
    bench: Bench, args: argparse.Namespace, modes: Sequence[str] = MODES
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Warm up each mode, then interleave timed blocks; per mode: images/s per round, peak GPU MiB."""
    steps = {mode: step for mode, step in bench.steps().items() if mode in modes}
    rates: dict[str, list[float]] = {m: [] for m in modes}
    peak: dict[str, float] = dict.fromkeys(modes, 0.0)
    for mode, step in steps.items():
        for _ in range(args.warmup):
            step()
        bench.sync()
        log(f"warm-up {mode} done")
    for r in range(args.rounds):
        for mode, step in steps.items():
            if bench.cuda:
                torch.cuda.reset_peak_memory_stats(bench.device)
            bench.sync()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            bench.sync()
            rates[mode].append(args.steps * bench.batch / (time.perf_counter() - start))
            if bench.cuda:
                peak[mode] = max(peak[mode], torch.cuda.max_memory_allocated(bench.device) / 2**20)
        log(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{m} {rates[m][-1]:,.0f}" for m in modes) + " images/s")
    return rates, peak


def report(rates: dict[str, list[float]], peak: dict[str, float], gather_s: list[float], args, device) -> None:
    """A markdown table of images/s per mode and the ratio to the GPU-resident bound."""
    bound = statistics.median(rates["resident"])
    print(f"\n## resnet18 training throughput ({args.crop} px, batch {args.batch_size}, {device.type})\n")
    gib = args.images * args.cache_size**2 * 3 / 2**30
    print(
        f"{args.images} cached images of {args.cache_size} px ({gib:.2f} GiB); "
        f"{args.warmup} warm-up steps per mode, then {args.rounds} interleaved rounds of {args.steps} steps; "
        f"images/s is the median over rounds.\n"
    )
    print("| input | images/s (median) | min..max | vs resident | peak GPU memory (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for mode in MODES:
        r = rates[mode]
        med = statistics.median(r)
        mem = f"{peak[mode]:,.0f}" if device.type == "cuda" else "-"
        print(f"| {mode} | {med:,.0f} | {min(r):,.0f}..{max(r):,.0f} | {med / bound:.2f} | {mem} |")
    if gather_s:
        g = statistics.median(gather_s[1:] or gather_s)
        print(
            f"\nCPU gather of one batch into pinned memory (background thread): median {g * 1e3:.1f} ms, "
            f"so that thread alone could feed {args.batch_size / g:,.0f} images/s."
        )
    if device.type == "cuda":
        reserved = torch.cuda.memory_reserved(device) / 2**20
        print(
            f"Peak GPU memory (torch.cuda.max_memory_allocated, reset before each timed block; the highest block): "
            f"{max(peak.values()):,.0f} MiB; reserved now {reserved:,.0f} MiB."
        )
    ratio = statistics.median(rates["pipeline"]) / bound
    print(f"\nEnd to end (pipeline) / GPU-resident: {ratio:.2f}")


def machine(device: torch.device) -> str:
    """Date, CPU, GPU and library versions."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    gpu = "none (CPU smoke run)"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = (
            f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}"
        )
    return "\n".join(
        [
            f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
            f"- GPU: {gpu}",
            f"- CPU: {cpu}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
            f"torch threads {torch.get_num_threads()}",
            f"- Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"numpy {np.__version__}",
        ]
    )


def log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def check_imports() -> None:
    """Fail if any of the project's other dependencies got imported: this runs with torch, torchvision, numpy only."""
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(FORBIDDEN))
    assert not loaded, f"gpu_throughput must not need {', '.join(loaded)}: only torch, torchvision and numpy"
    print(f"\nImports checked: none of {', '.join(FORBIDDEN)} was loaded.")


class GpuSampler:
    """Device-wide GPU utilisation (%) and memory in use (MiB), sampled on a thread every `every` s while open:
    through NVML (pynvml, from nvidia-ml-py) when importable, else nvidia-smi; "n/a" without either."""

    def __init__(self, enabled: bool, every: float = 0.5):
        self.samples: list[tuple[float, float]] = []
        self.query = gpu_query() if enabled else None
        self.every, self.stop = every, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GpuSampler:
        if self.query is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def _run(self) -> None:
        while True:
            try:
                sample = self.query()
            except Exception:  # the query broke: keep what was sampled
                return
            if sample is not None:
                self.samples.append(sample)
            if self.stop.wait(self.every):
                return

    def utilisation(self) -> str:
        util = [u for u, _ in self.samples]
        return f"{statistics.fmean(util):.0f} % (max {max(util):.0f})" if util else "n/a"

    def memory(self) -> str:
        return f"{max(m for _, m in self.samples):,.0f} MiB" if self.samples else "n/a"


def gpu_query() -> Callable[[], tuple[float, float] | None] | None:
    """A function giving (mean utilisation % over the machine's GPUs, their memory in use in MiB): NVML, else
    nvidia-smi, else None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]

        def nvml() -> tuple[float, float]:
            util = [pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles]
            return statistics.fmean(util), sum(pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20 for h in handles)

        return nvml
    except Exception:  # no nvidia-ml-py, or no NVML library
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None

    def nvidia_smi() -> tuple[float, float] | None:
        query = [smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        done = subprocess.run(query, capture_output=True, text=True, timeout=10)
        rows = [[float(v) for v in line.split(",")] for line in done.stdout.splitlines() if line.strip()]
        return (
            (statistics.fmean(r[0] for r in rows), sum(r[1] for r in rows)) if done.returncode == 0 and rows else None
        )

    return nvidia_smi


def load_benchmark_params(args: argparse.Namespace, settings: dict):
    """params.yaml through collab_iu's schema with this part's `settings`, then the --set overrides."""
    from collab_iu.params import load_params, parse_override

    return load_params(REPO / "params.yaml", settings | dict(parse_override(text) for text in args.set))


def loop_settings(args: argparse.Namespace, backbone: str) -> dict:
    """The loop part's training: AdamW, no schedule, the multitask loss with cf_weight 2, bf16, random init."""
    return {
        "train.backbone": backbone,
        "train.weights": None,
        "train.batch_size": args.batch_size,
        "train.epochs": args.loop_epochs,
        "train.optimizer": "adamw",
        "train.schedule": "none",
        "train.cf_weight": CF_WEIGHT,
        "train.cf_loss": CF_KIND,
        "train.device": args.device,
        "train.amp": not args.no_amp,
        "augment.output_size": args.crop,
    }


def synthetic_training_data(images: np.ndarray, seed: int = 4):
    """collab_iu.train.TrainingData over the whole cache: random labels (each image at least one) and CF targets,
    every item labelled and with a target; the first eighth (at most 512) is the validation set."""
    from collab_iu.train import TrainingData

    rng = np.random.default_rng(seed)
    n = len(images)
    labels = (rng.random((n, NUM_LABELS)) < 0.2).astype(np.float32)
    labels[np.arange(n), rng.integers(0, NUM_LABELS, n)] = 1.0
    cf = rng.standard_normal((n, CF_DIM)).astype(np.float32)
    val = np.arange(min(512, max(2, n // 8)))
    train = np.arange(len(val), n)
    return TrainingData(
        images=images,
        vocabulary=[f"label_{j:02d}" for j in range(NUM_LABELS)],
        train_rows=train,
        train_labels=labels[train],
        train_labelled=np.ones(len(train), bool),
        cf_target=cf[train],
        cf_confidence=np.ones(len(train), np.float32),
        val_rows=val,
        val_labels=labels[val],
        val_cf_target=cf[val],
        val_has_cf=np.ones(len(val), bool),
    )


def time_loop(args: argparse.Namespace, device: torch.device, data, backbone: str, out_dir: Path) -> dict:
    """train_model on `data`: images/s per epoch (train.py's own figure), peak memory, utilisation, wall time."""
    from collab_iu.train import train_model

    params = load_benchmark_params(args, loop_settings(args, backbone))
    records: list[dict] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with GpuSampler(device.type == "cuda") as sampler:
        train_model(data, params.train, params.augment, out_dir, progress=False, on_epoch_end=records.append)
    rates = [r["images_per_s"] for r in records]
    return {
        "rate": statistics.median(rates[1:] or rates),  # the first epoch tunes cuDNN (and compiles)
        "epochs": rates,
        "wall": time.perf_counter() - start,
        "peak": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "util": sampler.utilisation(),
        "compile": getattr(params.train, "compile", False),
    }


def time_bound(args: argparse.Namespace, device: torch.device, images: np.ndarray, backbone: str, compile_model):
    """The GPU-resident compute bound of `backbone`: (median images/s, peak MiB) of Bench's resident mode."""
    bench = Bench(args, device, images, backbone, prefetch=False, compile_model=compile_model)
    rates, peak = run(bench, args, modes=("resident",))
    del bench
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return statistics.median(rates["resident"]), peak["resident"]


def loop_part(args: argparse.Namespace, device: torch.device, images: np.ndarray, folder: Path) -> None:
    """(a) train.py's training loop vs the GPU-resident compute bound, per backbone; a markdown table."""
    data = synthetic_training_data(images)
    rows = []
    for backbone in args.backbones:
        loop = time_loop(args, device, data, backbone, folder / f"loop-{backbone}")
        bound, bound_peak = time_bound(args, device, images, backbone, loop["compile"])
        rows.append((backbone, loop, bound, bound_peak))
        log(f"loop {backbone}: {loop['rate']:,.0f} images/s, bound {bound:,.0f} ({loop['rate'] / bound:.2f})")
    precision = "bf16" if device.type == "cuda" and not args.no_amp else "fp32"
    print(
        f"\n## train.py's loop vs the GPU-resident bound ({args.crop} px from {args.cache_size} px, "
        f"batch {args.batch_size}, {precision}, {device.type})\n\n"
        f"{len(data.train_rows)} training and {len(data.val_rows)} validation images; {args.loop_epochs} epochs "
        f"of train_model (loop: median images/s of epochs 2..{args.loop_epochs}); bound: {args.warmup} warm-up "
        f"steps, then the median of {args.rounds} blocks of {args.steps} steps.\n"
    )
    print(
        "| backbone | loop images/s | per epoch | bound images/s | loop / bound | peak GPU MiB loop / bound |"
        " GPU utilisation (train_model) | train_model s |"
    )
    print("|---|---:|---|---:|---:|---:|---|---:|")
    for backbone, loop, bound, bound_peak in rows:
        peak = f"{loop['peak']:,.0f} / {bound_peak:,.0f}" if loop["peak"] is not None else "-"
        epochs = ", ".join(f"{r:,.0f}" for r in loop["epochs"])
        print(
            f"| {backbone} | {loop['rate']:,.0f} | {epochs} | {bound:,.0f} | {loop['rate'] / bound:.2f} | {peak} "
            f"| {loop['util']} | {loop['wall']:.1f} |"
        )
    sys.stdout.flush()


def grid_settings(args: argparse.Namespace, root: Path) -> dict:
    """The grid part's params: a synthetic dataset of --grid-items items under `root`, trained with the
    paper_pinterest preset's backbone and batch (regnet_y_400mf, 128; random initial weights) and params.yaml's
    optimiser and loss (AdamW, mse: the preset's SGD at lr 0.1 diverges from random weights), the GRID."""
    from collab_iu.params import load_params

    preset = load_params(REPO / "params.yaml").presets["paper_pinterest"]
    cores = os.cpu_count() or 1
    return {
        "data.root": str(root),
        "data.default": "pinterest_like",
        "data.datasets": {"pinterest_like": {"source": "synthetic"}},
        "wandb.mode": "disabled",
        "synthetic.n_items": args.grid_items,
        "synthetic.n_users": args.grid_users,
        "synthetic.image_size": args.grid_px,
        "prepare.workers": cores,
        "cache.workers": cores,
        "cache.image_size": args.cache_size,
        "augment.output_size": args.crop,
        "train.backbone": args.grid_backbone or preset["train.backbone"],
        "train.batch_size": preset["train.batch_size"],
        "train.weights": None,  # random initial weights: the same work, and nothing to download
        "train.epochs": args.grid_epochs,
        "train.device": args.device,
        **GRID,
    }


def grid_pass(params, keys: list[str], runs_at_once: int, cuda: bool) -> dict:
    """Train every run of `keys` afresh through run_pipeline, `runs_at_once` at a time; wall time, images/s and
    the GPU figures (device-wide samples; each run's own from its metrics.json)."""
    from collab_iu.layout import dataset_layout
    from orchestration.defs.project import use_params
    from orchestration.pipeline import run_pipeline

    runs = dataset_layout(params).runs
    shutil.rmtree(runs, ignore_errors=True)  # the same work in every pass: no finished run is reused
    use_params(params)
    start = time.perf_counter()
    with GpuSampler(cuda) as sampler:
        run_pipeline(params.data.default, [], keys, evaluate=False, workers=runs_at_once, report=log)
    wall = time.perf_counter() - start
    trained = [json.loads((runs / key / "train.json").read_text()) for key in keys]
    metrics = [json.loads((runs / key / "metrics.json").read_text()) for key in keys]
    util = [m["gpu_utilization"] for m in metrics if m.get("gpu_utilization") is not None]
    peak = [m["gpu_memory_peak_gb"] for m in metrics if m.get("gpu_memory_peak_gb") is not None]
    return {
        "at_once": runs_at_once,
        "wall": wall,
        "images": sum(t["train_items"] * t["epochs"] for t in trained),
        "device_util": sampler.utilisation(),
        "device_memory": sampler.memory(),
        "run_util": f"{statistics.fmean(util):.0f} %" if util else "n/a",
        "run_peak": f"{max(peak):.1f} GiB" if peak else "n/a",
    }


def grid_part(args: argparse.Namespace, device: torch.device, folder: Path) -> None:
    """(b) the Pinterest-sized grid through run_pipeline, one run at a time and --concurrent at a time."""
    from collab_iu.grid import grid_runs
    from orchestration.defs.project import use_params
    from orchestration.pipeline import DATA_ASSETS, run_pipeline

    os.environ["DAGSTER_HOME"] = str(folder / ".dagster")  # the benchmark's runs stay out of the project's instance
    settings = grid_settings(args, folder / "data")
    params = load_benchmark_params(args, settings)
    use_params(params)
    start = time.perf_counter()
    run_pipeline(params.data.default, DATA_ASSETS, [], evaluate=False, workers=1, report=log)
    data_s = time.perf_counter() - start
    keys = [spec.key for spec in grid_runs(params)]
    print(
        f"\n## The label-ratio grid through run_pipeline ({device.type})\n\n"
        f"{args.grid_items} synthetic items ({args.grid_users} users) drawn at {args.grid_px} px, cached at "
        f"{args.cache_size} px; the data assets (generate, validate, split, cf, cache) took {data_s:.0f} s. "
        f"{len(keys)} runs (2 methods x 4 label ratios x 2 seeds) of {params.train.backbone}, batch "
        f"{params.train.batch_size}, {params.train.epochs} epochs, {args.crop} px, {params.train.optimizer}.\n\n"
        "| runs at once | wall (s) | training images/s | speed-up | GPU utilisation (device) | GPU memory used,"
        " peak (device) | mean GPU utilisation per run | peak GPU memory of a run |\n"
        "|---:|---:|---:|---:|---|---:|---:|---:|",
        flush=True,
    )
    first = None
    for n in (1, args.concurrent):  # each row as soon as its pass ends
        concurrent = {"experiment.workers": n, "experiment.runs_per_gpu": n}
        p = grid_pass(load_benchmark_params(args, settings | concurrent), keys, n, device.type == "cuda")
        first = first or p["wall"]
        print(
            f"| {n} | {p['wall']:.0f} | {p['images'] / p['wall']:,.0f} | {first / p['wall']:.2f} | {p['device_util']}"
            f" | {p['device_memory']} | {p['run_util']} | {p['run_peak']} |",
            flush=True,
        )


def modes_part(args: argparse.Namespace, device: torch.device, images: np.ndarray) -> None:
    """The four ways to feed resnet18 (the module docstring), interleaved; a markdown table."""
    bench = Bench(args, device, images)
    try:
        rates, peak = run(bench, args)
    finally:
        bench.prefetcher.close()
    report(rates, peak, bench.prefetcher.gather_s, args, device)
    sys.stdout.flush()


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a smoke run, with --quick")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run of every part (sizes: QUICK)")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=["loop", "grid"], help="default: loop grid")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per block (default 20)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds of blocks (default 3)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps per block mode (default 5)")
    ap.add_argument("--batch-size", type=int, default=None, help="images per batch, loop and modes (default 256)")
    ap.add_argument("--images", type=int, default=None, help="modes: images in the synthetic cache (default 4096)")
    ap.add_argument("--cache-size", type=int, default=None, help="cached image side in px (default 256)")
    ap.add_argument("--crop", type=int, default=None, help="augmented crop fed to the model in px (default 224)")
    ap.add_argument("--no-amp", action="store_true", help="float32 instead of bf16 autocast")
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES), help="loop: the backbones")
    ap.add_argument("--loop-images", type=int, default=None, help="loop: cached images (default 12288)")
    ap.add_argument("--loop-epochs", type=int, default=None, help="loop: train_model epochs (default 3)")
    ap.add_argument("--grid-items", type=int, default=None, help="grid: synthetic items (default 34000)")
    ap.add_argument("--grid-users", type=int, default=None, help="grid: synthetic users (default 1000)")
    ap.add_argument("--grid-px", type=int, default=None, help="grid: the generator's image side (default 32)")
    ap.add_argument("--grid-epochs", type=int, default=None, help="grid: epochs per run (default 2)")
    ap.add_argument("--concurrent", type=int, default=None, help="grid: runs at once, vs 1 (default 4; cpu 2)")
    ap.add_argument("--grid-backbone", default=None, help="grid: backbone (default: the preset's regnet_y_400mf)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="loop, grid: params override")
    ap.add_argument("--tmp-dir", type=Path, default=None, help="folder for caches and data (default: system temp)")
    args = ap.parse_args()
    defaults = FULL | {"concurrent": 4 if args.device == "cuda" else 2}
    for key, value in (QUICK if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.batch_size > min(args.images, args.loop_images):
        ap.error(f"--batch-size {args.batch_size} > --images {args.images} or --loop-images {args.loop_images}")
    return args


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "gpu_throughput: no CUDA device is available (torch.cuda.is_available() is False). Run it on a GPU "
            "machine, or use `--device cpu --quick` for a smoke run of the same code on the CPU."
        )
    torch.backends.cudnn.benchmark = True
    print(f"# collab_iu GPU training throughput ({', '.join(args.parts)})\n\n{machine(device)}", flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="collab-iu-gpu-", dir=args.tmp_dir) as tmp:
        folder = Path(tmp)
        images = None
        if {"loop", "modes"} & set(args.parts):
            images = make_cache(folder, max(args.images, args.loop_images), args.cache_size)
            log(f"cache of {images.shape} written in {time.perf_counter() - start:.1f} s")
        if "loop" in args.parts:
            loop_part(args, device, images[: args.loop_images], folder)
        if "grid" in args.parts:
            grid_part(args, device, folder)
        if "modes" in args.parts:
            modes_part(args, device, images[: args.images])
        del images  # the memmap before its directory goes
    print(f"\nTotal {time.perf_counter() - start:.0f} s.")
    if args.parts == ["modes"]:
        check_imports()


if __name__ == "__main__":
    main()
