"""Training throughput per backbone on the CPU: images/s of augment + forward + backward + AdamW step.

Every backbone is a `MultitaskModel(name, 10 labels, 33 CF dims)` trained with
`multitask_loss(..., cf_weight=2)` (so the CF head is in the step) on batches of random
uint8 images, augmented by `BatchAugment(AugmentParams(), size)` as in training. The
configurations run interleaved in rounds (every configuration a few steps, then the next
round), after warm-up steps, so background load hits all of them alike; the figure is the
median over the timed steps. small_cnn runs at 32 px (from a 32 px cache); the torchvision
backbones at 64 px (from 64 px) and at 224 px (from 256 px, few steps: they are slow here).

    .venv/bin/python benchmarks/backbone_throughput.py [--quick] [--threads 2] [--batch-size 32]

On a shared machine, run it while nothing else is busy: with 2 torch threads on 2 cores,
any other CPU-bound process makes OpenMP's spinning threads lose whole time slices
(see docs/benchmarks.md). The load average at the start and the CPU time other processes
used during the run are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from collab_iu.augment import BatchAugment
from collab_iu.losses import multitask_loss
from collab_iu.models import MultitaskModel
from collab_iu.params import AugmentParams

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_pipeline import machine  # noqa: E402
from run_default import OtherLoad  # noqa: E402

NUM_LABELS, CF_DIM, CF_WEIGHT, CF_KIND = 10, 33, 2.0, "mse"
TORCHVISION = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "regnet_y_400mf")


@dataclass
class Config:
    """One measured configuration: a backbone at an output size, from uint8 images of cache_size px."""

    backbone: str
    size: int
    cache_size: int
    slow: bool  # the 224 px tier: fewer steps
    step_s: list[float] = field(default_factory=list)
    augment_s: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.backbone} @ {self.size} px"


def configs(sizes: list[int]) -> list[Config]:
    """small_cnn at 32 px; the torchvision backbones at each size (224 px from a 256 px cache)."""
    out = [Config("small_cnn", 32, 32, False)] if 32 in sizes else []
    for size in (s for s in sizes if s != 32):
        cache = 256 if size == 224 else size
        out += [Config(name, size, cache, size >= 128) for name in TORCHVISION]
    return out


def random_batch(n: int, cache_size: int, g: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """uint8 images N x H x W x 3 and the loss targets of a training batch (half of it labelled)."""
    images = torch.randint(0, 256, (n, cache_size, cache_size, 3), dtype=torch.uint8, generator=g)
    targets = {
        "labels": (torch.rand(n, NUM_LABELS, generator=g) < 0.2).float(),
        "labelled": torch.rand(n, generator=g) < 0.5,
        "cf_target": torch.randn(n, CF_DIM, generator=g),
        "cf_confidence": torch.ones(n),
    }
    return images, targets


class Trainer:
    """A model, its AdamW optimiser and a few fixed random batches for one backbone at one size."""

    def __init__(self, cfg: Config, model: MultitaskModel, opt: torch.optim.Optimizer, batch_size: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.cfg, self.model, self.opt = cfg, model, opt
        self.augment = BatchAugment(AugmentParams(), output_size=cfg.size)
        self.batches = [random_batch(batch_size, cfg.cache_size, g) for _ in range(2)]
        self.pos_weight = torch.full((NUM_LABELS,), 4.0)
        self.calls = 0

    def step(self) -> tuple[float, float]:
        """One training step; returns (whole step s, augmentation s)."""
        images, targets = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        self.model.train()
        start = time.perf_counter()
        x = self.augment(images)
        augmented = time.perf_counter()
        terms = multitask_loss(self.model(x), targets, pos_weight=self.pos_weight, cf_kind=CF_KIND, cf_weight=CF_WEIGHT)
        self.opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.opt.step()
        end = time.perf_counter()
        return end - start, augmented - start


def build(cfgs: list[Config], batch_sizes: dict[bool, int]) -> list[Trainer]:
    """One model + AdamW per backbone, shared by its sizes (the pooled backbones take any size)."""
    models: dict[str, tuple[MultitaskModel, torch.optim.Optimizer]] = {}
    trainers = []
    for i, cfg in enumerate(cfgs):
        if cfg.backbone not in models:
            torch.manual_seed(i)
            model = MultitaskModel(cfg.backbone, NUM_LABELS, CF_DIM)
            models[cfg.backbone] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4))
        trainers.append(Trainer(cfg, *models[cfg.backbone], batch_sizes[cfg.slow], seed=i))
    return trainers


def bench(trainers: list[Trainer], plan: dict[bool, tuple[int, int, int]]) -> None:
    """Warm up every configuration, then interleave timed rounds; plan[slow] = (warm-up, rounds, steps/round)."""
    for t in trainers:
        for _ in range(plan[t.cfg.slow][0]):
            t.step()
    for r in range(max(p[1] for p in plan.values())):
        for t in trainers:
            _, rounds, steps = plan[t.cfg.slow]
            if r >= rounds:
                continue
            for _ in range(steps):
                seconds, aug = t.step()
                t.cfg.step_s.append(seconds)
                t.cfg.augment_s.append(aug)
        print(f"  round {r + 1} done, load average {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)


def report(trainers: list[Trainer], batch_sizes: dict[bool, int], plan: dict[bool, tuple[int, int, int]]) -> None:
    """A markdown table: median images/s, its range, step and augmentation time, parameter count."""
    print("\n## Training throughput per backbone (CPU)\n")
    for slow, label in ((False, "32/64 px"), (True, "224 px")):
        w, r, s = plan[slow]
        if any(t.cfg.slow == slow for t in trainers):
            print(
                f"- {label}: batch {batch_sizes[slow]}, {w} warm-up step(s), then {r} interleaved rounds "
                f"of {s} step(s): median over {r * s} timed steps"
            )
    print(
        "\n| backbone | input | params (M) | images/s (median) | min..max | step (ms, median) | of which augment (ms) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for t in trainers:
        c, n = t.cfg, batch_sizes[t.cfg.slow]
        step, aug = statistics.median(c.step_s), statistics.median(c.augment_s)
        params = sum(p.numel() for p in t.model.parameters()) / 1e6
        print(
            f"| {c.backbone} | {c.size} px (from {c.cache_size}) | {params:.2f} | {n / step:,.1f} "
            f"| {n / max(c.step_s):,.1f}..{n / min(c.step_s):,.1f} | {step * 1e3:,.0f} | {aug * 1e3:,.1f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 warm-up, 1 timed step each; batch 8 at 224 px")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 224], help="sizes (32 = small_cnn only)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# collab_iu training throughput per backbone (CPU)\n\n{machine()}")
    print(
        f"- torch threads {torch.get_num_threads()}, batch {args.batch_size}, AdamW, multitask loss "
        f"({NUM_LABELS} labels, CF dim {CF_DIM}, cf_weight {CF_WEIGHT:g}, {CF_KIND})"
    )
    batch_sizes = {False: args.batch_size, True: 8 if args.quick else args.batch_size}
    plan = {False: (1, 1, 1), True: (1, 1, 1)} if args.quick else {False: (3, 5, 4), True: (1, 5, 1)}
    start, load = time.perf_counter(), OtherLoad()
    trainers = build(configs(args.sizes), batch_sizes)
    bench(trainers, plan)
    report(trainers, batch_sizes, plan)
    print(
        f"\nTotal {time.perf_counter() - start:.0f} s; {load}; load average at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)"
    )


if __name__ == "__main__":
    main()
