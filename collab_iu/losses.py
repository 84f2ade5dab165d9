"""The multitask loss: `label_weight * L_label + cf_weight * L_cf`, and the CF confidence weights.

L_label is computed on the labelled items of a batch only; L_cf on every item with a CF
target (confidence > 0), labelled or not. L_cf regresses the CF vector (exp, mse, cosine)
or, for the contrastive baseline (triplet), pulls an item's CF-head output towards that of
an item sharing users with it and away from another item's. Masks are applied with `torch.where`, so there
is no host-device sync and an empty mask gives a zero that still has a graph.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

CONFIDENCE_KINDS = ("uniform", "num_interactions", "loss_based")


def label_loss(
    logits: torch.Tensor, targets: torch.Tensor, labelled_mask: torch.Tensor, pos_weight: torch.Tensor
) -> torch.Tensor:
    """BCE with logits and per-class pos_weight, the mean over labelled items x classes (0 if none)."""
    logits = logits.float()
    keep = labelled_mask.to(torch.bool).unsqueeze(1)
    targets = torch.where(keep, targets.float(), 0.0)  # unlabelled rows may hold anything, NaN included
    per = F.binary_cross_entropy_with_logits(
        logits, targets, pos_weight=pos_weight.to(logits.device, torch.float32), reduction="none"
    )
    n = keep.sum().clamp(min=1) * logits.shape[1]
    return torch.where(keep, per, 0.0).sum() / n


def pos_weight_from_labels(y_labelled: np.ndarray | torch.Tensor) -> torch.Tensor:
    """pos_weight_c = n_labelled / n_pos_c; a class with no positive counts as having one.

    y_labelled: labelled items x classes (0/1). Returns a float32 tensor of length classes.
    """
    y = torch.as_tensor(y_labelled)
    if y.ndim != 2 or y.shape[0] == 0:
        raise ValueError(f"need a non-empty items x classes matrix, got shape {tuple(y.shape)}")
    n_pos = (y > 0).sum(0).clamp(min=1).float()
    return (y.shape[0] / n_pos).float()


def _exp(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    diff = pred - target
    return torch.exp(diff.pow(2).mean(1) + diff.abs().mean(1)) - 1


def _mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).pow(2).mean(1)


def _cosine(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1 - F.cosine_similarity(pred, target, dim=1)


CF_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "exp": _exp,
    "mse": _mse,
    "cosine": _cosine,
}


def cf_loss(pred: torch.Tensor, target: torch.Tensor, confidence: torch.Tensor, kind: str = "exp") -> torch.Tensor:
    """sum_i k_i l_i / sum_i k_i over the batch; items with k_i = 0 have no target and add nothing.

    l_i per kind: exp: exp(mean_d (p-t)^2 + mean_d |p-t|) - 1; mse: mean_d (p-t)^2; cosine: 1 - cos(p, t).
    Computed in float32 (safe under autocast). Returns a graph-keeping zero when sum_i k_i = 0.
    """
    if kind not in CF_LOSSES:
        raise ValueError(f"unknown CF loss {kind!r}; choose one of: {', '.join(CF_LOSSES)}")
    pred = pred.float()
    k = confidence.to(pred.device, torch.float32)
    has = (k > 0).unsqueeze(1)
    target = torch.where(has, target.to(pred.device, torch.float32), 0.0)  # rows without a target may hold NaN
    per_item = CF_LOSSES[kind](pred, target)
    weighted = torch.where(has.squeeze(1), k * per_item, 0.0)
    return weighted.sum() / k.sum().clamp(min=torch.finfo(torch.float32).tiny)


def triplet_cf_loss(
    anchor: torch.Tensor, positive: torch.Tensor, confidence: torch.Tensor, has_positive: torch.Tensor, margin: float
) -> torch.Tensor:
    """Triplet margin loss on L2-normalised CF-head outputs, confidence-weighted like `cf_loss`.

    positive[i] is the output for an item that shares a user with anchor i; the negative of
    anchor i is the next anchor's positive (`roll` by one: an unrelated item of the batch).
    l_i = max(0, |a_i - p_i|^2 - |a_i - n_i|^2 + margin), over anchors with a positive and k_i > 0.
    """
    a = F.normalize(anchor.float(), dim=1)
    p = F.normalize(positive.float(), dim=1)
    n = p.roll(1, dims=0)
    per_item = F.relu((a - p).pow(2).sum(1) - (a - n).pow(2).sum(1) + margin)
    k = torch.where(has_positive.to(torch.bool), confidence.to(a.device, torch.float32), 0.0)
    return torch.where(k > 0, k * per_item, 0.0).sum() / k.sum().clamp(min=torch.finfo(torch.float32).tiny)


def confidence_weights(raw: np.ndarray, kind: str) -> np.ndarray:
    """Per-item CF confidence k_i from the training items' raw values.

    raw: interaction counts (uniform, num_interactions) or 1/loss of the label probe (loss_based);
    0 marks an item without a CF target, which gets weight 0 whatever the kind. Otherwise:
    uniform -> 1; num_interactions -> sqrt(count); loss_based -> raw as given; then the values
    are clipped to their [25th, 75th] percentile (over the items with a target, numpy's linear
    interpolation) and rescaled linearly to [1, 3]. If the two percentiles are equal, every
    item with a target gets 1.
    """
    if kind not in CONFIDENCE_KINDS:
        raise ValueError(f"unknown confidence kind {kind!r}; choose one of: {', '.join(CONFIDENCE_KINDS)}")
    raw = np.asarray(raw, dtype=np.float64)
    if not np.isfinite(raw).all() or (raw < 0).any():
        raise ValueError("raw confidence values must be finite and >= 0")
    has = raw > 0
    out = np.zeros(raw.shape, dtype=np.float32)
    if kind == "uniform" or not has.any():
        out[has] = 1.0
        return out
    v = np.sqrt(raw[has]) if kind == "num_interactions" else raw[has]
    low, high = np.percentile(v, [25, 75])
    out[has] = 1.0 if high == low else 1.0 + 2.0 * (np.clip(v, low, high) - low) / (high - low)
    return out


def total_loss(terms: dict[str, torch.Tensor], label_weight: float, cf_weight: float) -> torch.Tensor:
    """label_weight * terms["label"] + cf_weight * terms["cf"] (the cf term only when cf_weight != 0)."""
    total = label_weight * terms["label"]
    if cf_weight:
        if "cf" not in terms:
            raise ValueError(f"cf_weight={cf_weight} but there is no CF loss term (a model without a CF head?)")
        total = total + cf_weight * terms["cf"]
    return total


def multitask_loss(
    outputs: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    *,
    pos_weight: torch.Tensor,
    cf_kind: str = "exp",
    label_weight: float = 1.0,
    cf_weight: float,
    positives: dict[str, torch.Tensor] | None = None,
    triplet_margin: float = 0.2,
) -> dict[str, torch.Tensor]:
    """Loss terms {"label", "cf", "total"} for model outputs and a batch.

    batch: `labels` (N x L float), `labelled` (N bool), `cf_target` (N x D), `cf_confidence` (N);
    for cf_kind "triplet" also `has_positive` (N bool), with `positives` the model outputs for
    each anchor's positive item. "cf" is present when the outputs have a CF prediction; with
    cf_weight == 0 it is detached (reported only) and not part of "total".
    """
    terms = {"label": label_loss(outputs["label_logits"], batch["labels"], batch["labelled"], pos_weight)}
    if "cf" in outputs:
        pred = outputs["cf"] if cf_weight else outputs["cf"].detach()
        if cf_kind == "triplet":
            if positives is None:
                raise ValueError("the triplet CF loss needs the outputs of each anchor's positive item")
            positive = positives["cf"] if cf_weight else positives["cf"].detach()
            terms["cf"] = triplet_cf_loss(pred, positive, batch["cf_confidence"], batch["has_positive"], triplet_margin)
        else:
            terms["cf"] = cf_loss(pred, batch["cf_target"], batch["cf_confidence"], cf_kind)
    terms["total"] = total_loss(terms, label_weight, cf_weight)
    return terms
