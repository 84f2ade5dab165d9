"""GPU training throughput of resnet18 at 224 px: the cache-to-GPU input pipeline vs GPU-resident inputs.

A synthetic uint8 image cache (N x 256 x 256 x 3, a `.npy` memmap in a temp dir, like
collab_iu's image cache) feeds `MultitaskModel("resnet18", 10, 33)` trained with AdamW and
`multitask_loss(..., cf_weight=2)`, bf16 autocast, channels_last. Four ways to feed it,
timed in interleaved rounds (every mode one block of --steps steps per round, after
--warmup steps each), images/s = the median over rounds of steps x batch / block time
(the GPU is synchronised at the ends of a block only):

- resident: one fixed pre-augmented float batch already on the GPU (the compute bound);
- resident + augment: a fixed uint8 batch on the GPU, `BatchAugment` to 224 px each step;
- pipeline: random batches of indices gathered from the memmap on the CPU by a background
  thread into pinned memory, copied to the GPU non_blocking, `BatchAugment` on the GPU;
- serial, as train.py: the gather in the training loop into pageable memory, `.to(device,
  non_blocking=True)`, and a `float()` of every loss term each step (a host sync).

The ratio of each mode to "resident" says how close its input pipeline gets to the compute
bound. It needs only torch, torchvision and numpy (asserted at the end: no pandas,
pydantic, ... are imported).

    python benchmarks/gpu_throughput.py [--steps 20] [--rounds 3] [--batch-size 256] [--images 4096]
    python benchmarks/gpu_throughput.py --device cpu --quick    # smoke run of the same code on the CPU
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
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
MODES = ("resident", "resident + augment", "pipeline", "serial, as train.py")


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
    """The model, optimiser and one training step per input mode."""

    def __init__(self, args: argparse.Namespace, device: torch.device, images: np.ndarray):
        self.device, self.cuda, self.batch = device, device.type == "cuda", args.batch_size
        torch.manual_seed(0)
        self.model = MultitaskModel("resnet18", NUM_LABELS, CF_DIM).to(device).to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=1e-4)
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
        self.prefetcher = Prefetcher(images, self.targets, self.batch, pin=self.cuda)
        self.model.train()

    @staticmethod
    def channels_last(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    def train_step(self, x: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Forward (autocast), multitask loss, backward, AdamW step; the loss terms, on the device."""
        with self.autocast:
            outputs = self.model(x)
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


def run(bench: Bench, args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Warm up each mode, then interleave timed blocks; per mode: images/s per round, peak GPU MiB."""
    steps = bench.steps()
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    peak: dict[str, float] = dict.fromkeys(MODES, 0.0)
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
        log(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{m} {rates[m][-1]:,.0f}" for m in MODES) + " images/s")
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


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (only for a smoke run with --quick)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run: 64 images of 40 px, crop 32, batch 8")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per block (default 20)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds of blocks (default 3)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps per mode (default 5)")
    ap.add_argument("--batch-size", type=int, default=None, help="images per batch (default 256)")
    ap.add_argument("--images", type=int, default=None, help="images in the synthetic cache (default 4096)")
    ap.add_argument("--cache-size", type=int, default=None, help="cached image side in px (default 256)")
    ap.add_argument("--crop", type=int, default=None, help="augmented crop fed to the model in px (default 224)")
    ap.add_argument("--no-amp", action="store_true", help="float32 instead of bf16 autocast")
    ap.add_argument("--tmp-dir", type=Path, default=None, help="folder for the cache file (default: system temp)")
    args = ap.parse_args()
    defaults = dict(steps=20, rounds=3, warmup=5, batch_size=256, images=4096, cache_size=256, crop=224)
    if args.quick:
        defaults = dict(steps=2, rounds=1, warmup=1, batch_size=8, images=64, cache_size=40, crop=32)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.batch_size > args.images:
        ap.error(f"--batch-size {args.batch_size} > --images {args.images}")
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
    print(f"# collab_iu GPU training throughput (resnet18)\n\n{machine(device)}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="collab-iu-gpu-", dir=args.tmp_dir) as tmp:
        images = make_cache(Path(tmp), args.images, args.cache_size)
        log(f"cache of {images.shape} written in {time.perf_counter() - start:.1f} s")
        bench = Bench(args, device, images)
        try:
            rates, peak = run(bench, args)
        finally:
            bench.prefetcher.close()
        report(rates, peak, bench.prefetcher.gather_s, args, device)
        del bench, images  # the memmap before its directory goes
    print(f"Total {time.perf_counter() - start:.0f} s.")
    check_imports()


if __name__ == "__main__":
    main()
