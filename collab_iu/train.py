"""The training loop: one explicit loop over cached images, model selection by validation mAP.

A run reads the image cache, the split, the CF vectors and a label-ratio mask, trains
`MultitaskModel` with `label_weight * L_label + cf_weight * L_cf`, keeps the epoch with
the best validation mAP (never the test set) and writes a checkpoint every epoch, so an
interrupted run resumes where it stopped and ends with the same weights. Each epoch also
records how well the CF head predicts the validation items' CF vectors (`val_cf_r2`,
`val_cf_cosine`: collab_iu/cf_fit.py), from the same forward pass as the validation mAP.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from collab_iu import distributed
from collab_iu.artifacts import BEST, CHECKPOINT, TRAIN_JSON, item_splits, load_cf_vectors, load_prepared
from collab_iu.atomic import atomic_file, write_json
from collab_iu.augment import BatchAugment, eval_transform
from collab_iu.batches import ImageSource, image_source
from collab_iu.cf_fit import VAL_CF_KEYS, cf_fit_quality
from collab_iu.dataset import label_matrix, label_vocabulary
from collab_iu.features import eval_view, feature_spec, load_features, random_views
from collab_iu.gpu_stats import GpuStats
from collab_iu.image_cache import load_image_cache
from collab_iu.layout import DatasetLayout
from collab_iu.loss_based import loss_based_raw
from collab_iu.losses import confidence_weights, multitask_loss, pos_weight_from_labels
from collab_iu.metrics import macro_map
from collab_iu.models import MultitaskModel, load_weights_file
from collab_iu.params import AugmentParams, Params, TrainParams
from collab_iu.positives import CoInteractions
from collab_iu.splits import label_ratio_mask


@dataclass
class TrainingData:
    """What one run trains and validates on, aligned row by row."""

    images: np.ndarray  # the image cache (memory-mapped N x S x S x 3 uint8), or the feature cache (train.finetune)
    vocabulary: list[str]
    train_rows: np.ndarray  # cache rows of the training items with an image
    train_labels: np.ndarray  # float32 n_train x L (rows of unlabelled items are zero)
    train_labelled: np.ndarray  # bool n_train: keeps its labels at this label ratio
    cf_target: np.ndarray  # float32 n_train x D (zero where there is no target)
    cf_confidence: np.ndarray  # float32 n_train, 0 = no CF target
    val_rows: np.ndarray
    val_labels: np.ndarray
    val_cf_target: np.ndarray  # float32 n_val x D, prepared like cf_target (zero where there is no target)
    val_has_cf: np.ndarray  # bool n_val: the item has a CF target (never under cf.cold_start)
    co_interactions: CoInteractions | None = None  # the triplet loss's positives (cf_loss: triplet)
    cf_input: bool = False  # the CF vectors (prepared as the targets) are an input of the label head (warm items)
    cf_center: np.ndarray | float = 0.0  # how the CF vectors were prepared: (vector - center) / scale
    cf_scale: float = 1.0


def load_training_data(
    layout: DatasetLayout, params: Params, label_ratio: float, seed: int, cf_input: bool = False
) -> TrainingData:
    """Assemble a run's data from the prepared, split, cf and cache (or feature cache) outputs of `layout`.

    params.train.confidence decides the CF confidence weights; cf_loss triplet adds the
    training items' co-interaction graph; `cf_input`: the CF vectors are an input too (a method for warm items).
    """
    items, interactions = load_prepared(layout)
    split = item_splits(layout, items)
    cache = load_image_cache(layout.cache)
    rows = cache.rows(items["item_id"])  # the feature cache's rows are the image cache's
    spec = feature_spec(params)
    inputs = cache.images if spec is None else load_features(layout, spec)
    has_image = rows >= 0
    if params.train.cf_weight > 0 or cf_input:
        vectors, index = load_cf_vectors(layout)
        counts = index["n_interactions"].to_numpy()
    else:  # no CF head: the run reads no CF output (DVC's image-only stages do not depend on it)
        vectors, counts = np.zeros((len(items), 0), np.float32), np.zeros(len(items), np.int64)

    is_train = split == "train"
    keep_labels = label_ratio_mask(items["labels"], is_train, has_image, label_ratio, seed)
    vocabulary = label_vocabulary(items.loc[is_train & has_image, "labels"])
    y = label_matrix(items["labels"], vocabulary)
    train = np.flatnonzero(is_train & has_image)
    val = np.flatnonzero((split == "val") & has_image)

    has_target = counts > 0
    has_cf = has_target[train]
    mean, scale = cf_scaling(vectors[train][has_cf], params.train.standardize_cf)
    target = cf_targets(vectors[train], has_cf, mean, scale)
    train_labels = np.where(keep_labels[train][:, None], y[train], 0.0).astype(np.float32)
    if params.train.confidence == "loss_based" and params.train.cf_weight > 0:
        raw = loss_based_raw(target, train_labels, keep_labels[train], has_cf, seed)
    else:
        raw = np.where(has_cf, counts[train].astype(np.float64), 0.0)
    confidence = confidence_weights(raw, params.train.confidence).astype(np.float32)
    co = None
    if params.train.cf_loss == "triplet":
        co = CoInteractions.build(interactions, items["item_id"].to_numpy()[train])
    return TrainingData(
        images=inputs,
        vocabulary=vocabulary,
        train_rows=rows[train],
        train_labels=train_labels,
        train_labelled=keep_labels[train],
        cf_target=target,
        cf_confidence=np.where(has_cf, confidence, 0.0).astype(np.float32),
        val_rows=rows[val],
        val_labels=y[val],
        val_cf_target=cf_targets(vectors[val], has_target[val], mean, scale),
        val_has_cf=has_target[val],
        co_interactions=co,
        cf_input=cf_input,
        cf_center=mean,
        cf_scale=scale,
    )


def cf_scaling(train_vectors: np.ndarray, standardize: bool) -> tuple[np.ndarray | float, float]:
    """The CF targets' centre and one overall scale, from the training items' vectors (0 and 1 when not
    standardising). One scale for all dimensions keeps the vectors' geometry: strong (label-like) directions
    stay strong."""
    if not standardize or not len(train_vectors):
        return 0.0, 1.0
    v = train_vectors.astype(np.float32)
    return v.mean(0), float(np.sqrt(v.var(0).mean())) + 1e-6


def cf_targets(vectors: np.ndarray, has_cf: np.ndarray, mean: np.ndarray | float, scale: float) -> np.ndarray:
    """CF targets as the CF head learns them: (vector - mean) / scale, 0 for items without a target (float32)."""
    return np.where(has_cf[:, None], (vectors.astype(np.float32) - mean) / scale, 0.0).astype(np.float32)


def resolve_device(name: str) -> torch.device:
    """auto: CUDA when available, else CPU; cuda without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def _optimizer(model: torch.nn.Module, p: TrainParams, fused: bool = False) -> torch.optim.Optimizer:
    """SGD or AdamW; `fused` (on CUDA): one kernel for the whole update instead of one per parameter."""
    options = {"fused": True} if fused else {}
    trainable = [q for q in model.parameters() if q.requires_grad]  # from the feature cache: the tail and heads
    if p.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay, **options)
    return torch.optim.AdamW(trainable, lr=p.lr, weight_decay=p.weight_decay, **options)


def _scheduler(opt: torch.optim.Optimizer, p: TrainParams) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    if p.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.epochs)
    if p.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=p.step_epochs, gamma=p.step_gamma)
    if p.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=p.milestones, gamma=p.step_gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)


@torch.no_grad()
def predict_outputs(
    model: MultitaskModel,
    images: np.ndarray,
    rows: np.ndarray,
    size: int,
    device: torch.device,
    batch_size: int = 256,
    source: ImageSource | None = None,
    from_features: bool = False,
    cf_input: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Label probabilities (n x L) and CF-head outputs (n x D; None without a CF head) for cached images (or,
    `from_features`, their cached features), from pixels only (with `cf_input`, a model for warm items: the
    items' prepared CF vectors, n x D, too), in one pass (through `source`, e.g. a training run's, else
    prefetched from `images`)."""
    model.eval()
    source = source or image_source(images, device, "prefetch")
    scores, cf = [], []
    chunks = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    for start, batch in zip(range(0, len(rows), batch_size), source.batches(chunks), strict=True):
        x = eval_view(batch) if from_features else eval_transform(batch, size)
        if cf_input is None:
            out = model(x)
        else:
            out = model(x, torch.from_numpy(cf_input[start : start + batch_size]).to(x.device))
        scores.append(torch.sigmoid(out["label_logits"].float()).cpu().numpy())
        if "cf" in out:
            cf.append(out["cf"].float().cpu().numpy())
    if not scores:
        return np.zeros((0, model.label_head.out_features), np.float32), None
    return np.concatenate(scores), (np.concatenate(cf) if cf else None)


def predict_scores(
    model: MultitaskModel, images: np.ndarray, rows: np.ndarray, size: int, device: torch.device, **options: Any
) -> np.ndarray:
    """Label probabilities (n x L) for cached images (or their cached features; with their CF vectors for a
    model of warm items): `predict_outputs`'s first half, with its options."""
    return predict_outputs(model, images, rows, size, device, **options)[0]


def val_cf_fit(data: TrainingData, cf_pred: np.ndarray | None) -> dict[str, float | int | None]:
    """{"val_cf_r2", "val_cf_cosine", "val_cf_items"} of the CF head over the validation items with a target
    (collab_iu.cf_fit.cf_fit_quality); all None without predictions to compare (no CF head, or a triplet head)."""
    if cf_pred is None:
        return dict.fromkeys(VAL_CF_KEYS)
    quality = cf_fit_quality(cf_pred[data.val_has_cf], data.val_cf_target[data.val_has_cf])
    return {f"val_cf_{k}": v for k, v in quality.items()}


def _save(obj: dict, path: Path) -> None:
    with atomic_file(path) as tmp, tmp.open("wb") as f:
        torch.save(obj, f)  # to a file object: the archive is named `archive`, not after the temporary file


@dataclass
class _Run:
    """What one training run holds across epochs: the model, its optimiser and schedule, the RNGs."""

    model: MultitaskModel
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # augmentation
    order_rng: torch.Generator  # batch order
    aug: Callable  # (batch, generator) -> the network's input: BatchAugment, or random_views of cached features
    pos_weight: torch.Tensor
    tensors: dict[str, torch.Tensor]
    device: torch.device
    size: int  # the network's input size
    triplet: bool
    cf_dim: int
    source: ImageSource  # the cache's images as device batches (collab_iu/batches.py)
    forward: Callable  # the model, or its torch.compile-d form (train.compile); `model` keeps the weights
    gpu: GpuStats  # peak memory and utilisation (CUDA)
    from_features: bool = False  # the input is the feature cache (train.finetune: tail or heads)
    rank_rngs: list = field(default_factory=list)  # every torchrun rank's augmentation state, for the checkpoint


def train_model(
    data: TrainingData,
    params: TrainParams,
    augment: AugmentParams,
    out_dir: str | Path,
    *,
    progress: bool = True,
    on_epoch_end: Callable[[dict], None] | None = None,
    init_backbone: str | Path | None = None,
) -> dict:
    """Train (or resume) one run in `out_dir`; return its summary (best epoch, validation mAP, history).

    `on_epoch_end(record)` is called after each epoch's checkpoint is written (loggers use it), with the
    epoch's `images_per_s`; train.json and the checkpoint hold no timing, so the same inputs give the same files.
    `init_backbone`: a state_dict file whose `backbone.*` weights start this run (cf_pretrain's
    second stage). With label_weight 0 (a CF-only stage) the last epoch counts as the best.
    """
    out_dir = Path(out_dir)
    main = distributed.is_main()  # under torchrun, rank 0 alone validates and writes (collab_iu/distributed.py)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    run = _start(data, params, augment, init_backbone)
    state = _resume(run, out_dir / CHECKPOINT)
    resumed_at = state["epoch"]
    for epoch in range(resumed_at, params.epochs):
        sums, seen, seconds, first_step = _train_epoch(run, data, params, epoch, progress)
        lr = run.opt.param_groups[0]["lr"]
        run.sched.step()
        run.rank_rngs = distributed.gather(run.generator.get_state().cpu())  # each rank's augmentation state
        if main:
            record = _validate(run, data, epoch, sums, seen) | {"lr": lr}
            _end_epoch(run, state, record, params.label_weight == 0, out_dir)
        if main and on_epoch_end is not None:  # timings are reported, never written: the files stay reproducible
            timing = {"images_per_s": seen / seconds if seconds else 0.0}
            if params.compile and epoch == resumed_at:  # this process compiled the model in its first step
                timing["compile_s"] = first_step
            on_epoch_end(record | timing)
        distributed.barrier()  # the other ranks wait for rank 0's checkpoint
    if not main:
        return {"epochs": params.epochs}
    summary = {
        "best_epoch": state["best_epoch"],
        "best_val_map": state["best_map"],
        **_best_cf_fit(state, data, measured=run.cf_dim > 0 and not run.triplet),
        "epochs": params.epochs,
        "history": state["history"],
        "vocabulary": data.vocabulary,
        "labelled_train_items": int(data.train_labelled.sum()),
        "train_items": len(data.train_rows),
        "device": run.device.type,
        **run.gpu.report(),  # CUDA only: peak memory and mean utilisation of this process's epochs
    }
    write_json(summary, out_dir / TRAIN_JSON)
    return summary


def _validate(run: _Run, data: TrainingData, epoch: int, sums: dict, seen: int) -> dict:
    """The epoch's record: mean loss terms over the epoch's items, validation mAP and the CF head's fit."""
    val_scores, val_cf = predict_outputs(
        run.model,
        data.images,
        data.val_rows,
        run.size,
        run.device,
        source=run.source,
        from_features=run.from_features,
        cf_input=data.val_cf_target if data.cf_input else None,
    )
    val_map, _ = macro_map(data.val_labels, val_scores)
    fit = val_cf_fit(data, None if run.triplet else val_cf)  # triplet outputs are embeddings, not CF vectors
    return {
        "epoch": epoch + 1,
        **{f"loss_{k}": v / max(seen, 1) for k, v in sums.items()},
        "val_map": float(val_map),
        **{k: v for k, v in fit.items() if k != "val_cf_items" and v is not None},
    }


def _start(data: TrainingData, params: TrainParams, augment: AugmentParams, init_backbone: str | Path | None) -> _Run:
    """The model (seeded), its optimiser, schedule and augmentation; the seeds are drawn in a fixed order."""
    device = distributed.start(resolve_device(params.device))
    if params.num_threads:
        torch.set_num_threads(params.num_threads)
    torch.manual_seed(params.seed)  # the same initial weights on every rank
    generator = torch.Generator(device=device).manual_seed(params.seed + AUG_SEED_STRIDE * distributed.rank())
    order_rng = torch.Generator().manual_seed(params.seed)
    cf_dim = data.cf_target.shape[1] if params.cf_weight > 0 else 0
    from_features = params.trainable_blocks is not None
    cf_in = data.cf_target.shape[1] if data.cf_input else 0
    model = MultitaskModel(
        params.backbone, len(data.vocabulary), cf_dim, params.weights, params.trainable_blocks, cf_input_dim=cf_in
    )
    model = model.to(device)
    if init_backbone is not None:
        saved = load_weights_file(init_backbone)
        model.backbone.load_state_dict(
            {k.removeprefix("backbone."): v for k, v in saved.items() if k.startswith("backbone.")}
        )
    if device.type == "cuda":
        _cuda_settings(params)
        if params.channels_last:
            model = model.to(memory_format=torch.channels_last)
    opt = _optimizer(model, params, fused=device.type == "cuda")
    size = augment.output_size or data.images.shape[1]  # (unused from features)
    labelled = data.train_labels[data.train_labelled]
    if not len(labelled):
        raise ValueError("no labelled training item at this label ratio")
    triplet = params.cf_loss == "triplet" and cf_dim > 0
    if triplet and data.co_interactions is None:
        raise ValueError("cf_loss triplet needs TrainingData.co_interactions (load_training_data builds it)")
    tensors = {
        "labels": torch.from_numpy(data.train_labels),
        "labelled": torch.from_numpy(data.train_labelled),
        "cf_target": torch.from_numpy(data.cf_target),
        "cf_confidence": torch.from_numpy(data.cf_confidence),
    }
    return _Run(
        model,
        opt,
        _scheduler(opt, params),
        generator,
        order_rng,
        random_views if from_features else BatchAugment(augment, size),
        pos_weight_from_labels(labelled).to(device),
        tensors,
        device,
        size,
        triplet,
        cf_dim,
        image_source(data.images, device, params.input, params.input_memory_fraction),
        _forward(model, device, params.compile),
        GpuStats(device),
        from_features,
    )


def _forward(model: MultitaskModel, device: torch.device, compile_model: bool) -> Callable:
    """What the training steps call: the model, as DistributedDataParallel under torchrun, compiled on request."""
    forward = distributed.wrap(model, device)
    return torch.compile(forward) if compile_model else forward


def _cuda_settings(params: TrainParams) -> None:
    """cuDNN picks the fastest kernels (benchmark), unless train.deterministic asks for repeatable ones."""
    torch.backends.cudnn.benchmark = not params.deterministic
    torch.backends.cudnn.deterministic = params.deterministic
    torch.backends.cuda.matmul.allow_tf32 = not params.deterministic
    torch.backends.cudnn.allow_tf32 = not params.deterministic


def _resume(run: _Run, checkpoint: Path) -> dict:
    """The training state from `checkpoint` (model, optimiser, schedule and RNGs restored), else a fresh one."""
    if not checkpoint.exists():
        return {"epoch": 0, "history": [], "best_map": -1.0, "best_epoch": -1}
    saved = load_weights_file(checkpoint, run.device)
    run.model.load_state_dict(saved["model"])
    run.opt.load_state_dict(saved["optimizer"])
    run.sched.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"].cpu())
    ranks = saved.get("rank_aug_rngs") or [saved["aug_rng"]]
    own = ranks[distributed.rank()] if len(ranks) == distributed.world_size() else saved["aug_rng"]
    run.generator.set_state(own.cpu())
    run.order_rng.set_state(saved["order_rng"].cpu())
    return saved["state"]


AUG_SEED_STRIDE = 1_000_003  # rank r draws its augmentations from seed + r * this (rank 0: the run's seed)


def _epoch_plan(run: _Run, data: TrainingData, params: TrainParams, epoch: int) -> list[tuple[np.ndarray, ...]]:
    """The epoch's steps: (item indices, cache rows, triplet positives or None), drawn before the epoch so the
    images can be gathered ahead of the computation."""
    n = len(data.train_rows)
    perm = torch.randperm(n, generator=run.order_rng).numpy()
    batches = [np.sort(perm[i : i + params.batch_size]) for i in range(0, n, params.batch_size)]
    least = 2 * distributed.world_size()  # BatchNorm needs two items on every rank
    steps = []
    for step, batch in enumerate(b for b in batches if len(b) >= least):
        idx = distributed.shard(batch)  # this rank's share of the global batch
        rows, positive = data.train_rows[idx], None
        if run.triplet:  # the positives' images go through the network in the same forward pass
            positive = data.co_interactions.sample(idx, np.random.default_rng([params.seed, epoch, step]))
            rows = np.concatenate([rows, data.train_rows[np.maximum(positive, 0)]])
        steps.append((idx, rows, positive))
    return steps


def _train_epoch(run: _Run, data: TrainingData, params: TrainParams, epoch: int, progress: bool):
    """One pass over the training items; returns (summed loss terms, items seen, seconds)."""
    cuda = run.device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and params.amp else nullcontext()
    run.model.train()
    steps = _epoch_plan(run, data, params, epoch)
    sums: dict = {}
    seen, start, first_step = 0, time.perf_counter(), 0.0
    bar = _progress(steps, f"epoch {epoch + 1}/{params.epochs}", progress)
    for (idx, _, positive), images in zip(bar, run.source.batches([s[1] for s in steps]), strict=True):
        batch = {k: v[idx].to(run.device, non_blocking=True) for k, v in run.tensors.items()}
        if positive is not None:
            batch["has_positive"] = torch.from_numpy(positive >= 0).to(run.device)
        x = run.aug(images, run.generator)
        if cuda and params.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            outputs = run.forward(x, batch["cf_target"]) if data.cf_input else run.forward(x)
        positives = None
        if run.triplet:
            outputs, positives = _split_outputs(outputs, len(idx))
        terms = multitask_loss(
            outputs,
            batch,
            pos_weight=run.pos_weight,
            cf_kind=params.cf_loss,
            label_weight=params.label_weight,
            cf_weight=params.cf_weight,
            positives=positives,
            triplet_margin=params.triplet_margin,
        )
        run.opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        run.opt.step()
        for k, v in terms.items():  # summed on the device: no host sync per step
            sums[k] = sums.get(k, 0.0) + v.detach() * len(idx)
        if not seen:  # the first step (with train.compile: the compilation) is timed, at the cost of one sync
            first_step = _synced_seconds(run.device, start)
        seen += len(idx)
        run.gpu.sample(seen // params.batch_size)
        if bar is not steps and (bar.n % 10 == 0 or seen == len(data.train_rows)):  # a tqdm bar (a terminal)
            bar.set_postfix(
                loss=f"{float(sums['total']) / seen:.4f}", img_s=f"{seen / (time.perf_counter() - start):.0f}"
            )
    totals = distributed.sum_across(sums | {"seen": torch.tensor(float(seen), device=run.device)})
    seen = int(totals.pop("seen"))  # the items of every rank: the epoch's means are over the global batches
    return {k: float(v) for k, v in totals.items()}, seen, time.perf_counter() - start, first_step


def _synced_seconds(device: torch.device, start: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _end_epoch(run: _Run, state: dict, record: dict, last_is_best: bool, out_dir: Path) -> None:
    """Record the epoch; save best.pt when it is the best so far (or `last_is_best`), then the checkpoint."""
    state["history"].append(record)
    state["epoch"] = record["epoch"]
    if record["val_map"] > state["best_map"] or last_is_best:
        state["best_map"], state["best_epoch"] = record["val_map"], record["epoch"]
        _save(run.model.state_dict(), out_dir / BEST)
    _save(
        {
            "model": run.model.state_dict(),
            "optimizer": run.opt.state_dict(),
            "scheduler": run.sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "aug_rng": run.generator.get_state().cpu(),
            "rank_aug_rngs": run.rank_rngs if distributed.active() else [],  # torchrun: each rank resumes its own
            "order_rng": run.order_rng.get_state(),
            # rebuilt from JSON: pickle's bytes depend on which strings are shared objects, and a resumed run's
            # history (loaded from the file) shares them differently; the same state must give the same file
            "state": json.loads(json.dumps(state)),
        },
        out_dir / CHECKPOINT,
    )


def _best_cf_fit(state: dict, data: TrainingData, measured: bool) -> dict[str, float | int | None]:
    """The val_cf_* values of the best epoch (best.pt), from its history record (None where not recorded)."""
    if not measured:
        return dict.fromkeys(VAL_CF_KEYS)
    best = state["history"][state["best_epoch"] - 1] if state["best_epoch"] > 0 else {}
    return {
        "val_cf_r2": best.get("val_cf_r2"),
        "val_cf_cosine": best.get("val_cf_cosine"),
        "val_cf_items": int(data.val_has_cf.sum()),
    }


def _split_outputs(outputs: dict[str, torch.Tensor], n: int) -> tuple[dict, dict]:
    """Model outputs of a batch of anchors followed by their positives, split in two."""
    return {k: v[:n] for k, v in outputs.items()}, {k: v[n:] for k, v in outputs.items()}


def _progress(batches: list, desc: str, enabled: bool):
    """A tqdm bar over the batches on a terminal only: redirected to a file, its `\\r` frames are noise."""
    if not (enabled and sys.stderr.isatty()):
        return batches
    from tqdm import tqdm

    return tqdm(batches, desc=desc, leave=False, dynamic_ncols=True)
