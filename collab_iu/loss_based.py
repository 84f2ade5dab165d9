"""The `loss_based` CF confidence: how well an item's CF vector alone predicts its labels.

A small MLP (CF vector -> labels) is trained on the labelled training items; an item's raw
confidence is 1 / its loss under that MLP, so items whose interactions say a lot about their
categories weigh more in L_cf. Labelled items are scored by the MLP of the other fold
(2-fold cross-fitting: a model's loss on its own training items would be optimistic).
Unlabelled items have no labels to compute a loss with; they get the loss the MLP expects
under its own predictions (the mean binary entropy of its probabilities, averaged over both
folds' MLPs), which is low exactly when the CF vector points clearly at some labels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

HIDDEN = 64
STEPS = 300
LR = 1e-2
WEIGHT_DECAY = 1e-4


def _fit_mlp(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    mlp = torch.nn.Sequential(torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, y.shape[1]))
    opt = torch.optim.Adam(mlp.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    for _ in range(STEPS):  # full batch: the training items of one run fit in memory as vectors
        opt.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(mlp(x), y).backward()
        opt.step()
    return mlp.eval()


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def loss_based_raw(
    cf: np.ndarray, labels: np.ndarray, labelled: np.ndarray, has_cf: np.ndarray, seed: int
) -> np.ndarray:
    """Raw `loss_based` confidence (1 / loss) per training item; 0 for items without a CF vector.

    cf: n x D CF targets; labels: n x L (0/1, meaningful where `labelled`); seed fixes the
    folds and the MLPs' initialisation. Feed the result to `losses.confidence_weights`.
    """
    raw = np.zeros(len(cf), dtype=np.float64)
    train = np.flatnonzero(labelled & has_cf)
    if len(train) < 4:
        raw[has_cf] = 1.0  # too few labelled items to learn from: every item counts the same
        return raw
    x = torch.from_numpy(np.asarray(cf, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    folds = np.random.default_rng(seed).permutation(train)
    halves = (folds[: len(folds) // 2], folds[len(folds) // 2 :])
    loss = np.zeros(len(cf), dtype=np.float64)
    unlabelled = np.flatnonzero(~labelled & has_cf)
    with torch.no_grad():
        for fold, (fit, held_out) in enumerate((halves, halves[::-1])):
            with torch.enable_grad():
                mlp = _fit_mlp(x[fit], y[fit], seed + fold)
            per_item = F.binary_cross_entropy_with_logits(mlp(x[held_out]), y[held_out], reduction="none").mean(1)
            loss[held_out] = per_item.double().numpy()
            if len(unlabelled):
                expected = _binary_entropy(torch.sigmoid(mlp(x[unlabelled]))).mean(1)
                loss[unlabelled] += expected.double().numpy() / 2
    raw[has_cf] = 1.0 / np.maximum(loss[has_cf], 1e-6)
    return raw
