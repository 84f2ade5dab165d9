"""Loss terms against hand-computed numbers, masking of unlabelled / target-less items, confidence weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from collab_iu.losses import (
    cf_loss,
    confidence_weights,
    label_loss,
    multitask_loss,
    pos_weight_from_labels,
    total_loss,
    triplet_cf_loss,
)
from collab_iu.models import MultitaskModel

# 2 items x 3 dims. Item 0: p - t = (0, 2, 1); item 1: p - t = (1, -1, 0).
PRED = [[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]]
TARGET = [[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]
PER_ITEM = {
    # exp(mean (p-t)^2 + mean |p-t|) - 1: item 0: 5/3 + 3/3; item 1: 2/3 + 2/3
    "exp": (math.exp(5 / 3 + 1) - 1, math.exp(2 / 3 + 2 / 3) - 1),
    "mse": (5 / 3, 2 / 3),
    # item 0: p.t = 7, |p| = sqrt(14), |t| = sqrt(5); item 1: orthogonal
    "cosine": (1 - 7 / math.sqrt(14 * 5), 1.0),
}


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


@pytest.mark.parametrize("kind", list(PER_ITEM))
def test_cf_loss_uniform_confidence(kind):
    a, b = PER_ITEM[kind]
    assert cf_loss(t(PRED), t(TARGET), t([1.0, 1.0]), kind).item() == pytest.approx((a + b) / 2, rel=1e-6)


@pytest.mark.parametrize("kind", list(PER_ITEM))
def test_cf_loss_confidence_weighting(kind):
    a, b = PER_ITEM[kind]
    assert cf_loss(t(PRED), t(TARGET), t([1.0, 3.0]), kind).item() == pytest.approx((a + 3 * b) / 4, rel=1e-6)


@pytest.mark.parametrize("kind", list(PER_ITEM))
def test_cf_loss_zero_confidence_items_contribute_nothing(kind):
    a, _ = PER_ITEM[kind]
    garbage = t([TARGET[0], [100.0, float("nan"), -50.0]])
    pred = t(PRED).requires_grad_()
    loss = cf_loss(pred, garbage, t([2.0, 0.0]), kind)
    assert loss.item() == pytest.approx(a, rel=1e-6)
    loss.backward()
    assert torch.equal(pred.grad[1], torch.zeros(3))
    assert pred.grad[0].abs().sum() > 0


@pytest.mark.parametrize("kind", list(PER_ITEM))
def test_cf_loss_without_any_target_is_a_graph_keeping_zero(kind):
    pred = t(PRED).requires_grad_()
    loss = cf_loss(pred, t(TARGET), t([0.0, 0.0]), kind)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros(2, 3))


def test_cf_loss_unknown_kind():
    with pytest.raises(ValueError, match="exp, mse, cosine"):
        cf_loss(t(PRED), t(TARGET), t([1.0, 1.0]), "triplet")


# 3 items x 2 classes, pos_weight (2, 4); item 1 is unlabelled and would add a large loss
LOGITS = [[0.0, 1.0], [5.0, -5.0], [-1.0, 2.0]]
LABELS = [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
LABELLED = [True, False, True]
POS_WEIGHT = [2.0, 4.0]
# -(w y log s(x) + (1 - y) log(1 - s(x))): item 0: 2 log 2, log(1 + e); item 2: log(1 + e^-1), 4 log(1 + e^-2)
HAND_LABEL_LOSS = (
    2 * math.log(2) + math.log(1 + math.e) + math.log(1 + math.exp(-1)) + 4 * math.log(1 + math.exp(-2))
) / 4


def test_label_loss_hand_computed():
    loss = label_loss(t(LOGITS), t(LABELS), torch.tensor(LABELLED), t(POS_WEIGHT))
    assert loss.item() == pytest.approx(HAND_LABEL_LOSS, rel=1e-6)


def test_label_loss_all_labelled_counts_every_item():
    item_1 = 5 + math.log(1 + math.exp(-5)) + 4 * (5 + math.log(1 + math.exp(-5)))  # -log(1-s(5)), -4 log s(-5)
    loss = label_loss(t(LOGITS), t(LABELS), torch.tensor([True, True, True]), t(POS_WEIGHT))
    assert loss.item() == pytest.approx((4 * HAND_LABEL_LOSS + item_1) / 6, rel=1e-6)


def test_label_loss_ignores_unlabelled_items():
    logits = t(LOGITS).requires_grad_()
    loss = label_loss(logits, t(LABELS), torch.tensor(LABELLED), t(POS_WEIGHT))
    loss.backward()
    assert torch.equal(logits.grad[1], torch.zeros(2))
    assert logits.grad[[0, 2]].abs().min() > 0
    changed_logits, changed_labels = t(LOGITS), t(LABELS)
    changed_logits[1] = t([-30.0, 12.0])
    changed_labels[1] = t([1.0, float("nan")])
    again = label_loss(changed_logits, changed_labels, torch.tensor(LABELLED), t(POS_WEIGHT))
    assert again.item() == loss.item()


def test_label_loss_nothing_labelled():
    logits = t(LOGITS).requires_grad_()
    loss = label_loss(logits, t(LABELS), torch.zeros(3, dtype=torch.bool), t(POS_WEIGHT))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(3, 2))


def test_pos_weight_from_labels():
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0]])
    expected = torch.tensor([4 / 3, 2.0, 4.0])  # 4 labelled items; 3, 2 and no (counted as 1) positives
    assert torch.allclose(pos_weight_from_labels(y), expected)
    assert torch.allclose(pos_weight_from_labels(torch.tensor(y, dtype=torch.float32)), expected)
    assert pos_weight_from_labels(y).dtype == torch.float32
    with pytest.raises(ValueError):
        pos_weight_from_labels(np.zeros((0, 3)))


def test_confidence_uniform():
    assert confidence_weights(np.array([3, 1, 50]), "uniform").tolist() == [1.0, 1.0, 1.0]
    assert confidence_weights(np.array([3, 0, 50]), "uniform").tolist() == [1.0, 0.0, 1.0]


def test_confidence_num_interactions_clips_and_rescales():
    counts = np.array([0, 1, 4, 9, 16, 25, 36, 100])
    # sqrt of the 7 items with a target: 1 2 3 4 5 6 10; 25th/75th percentiles 2.5 and 5.5;
    # clipped: 2.5 2.5 3 4 5 5.5 5.5; rescaled 1 + 2 (v - 2.5) / 3
    expected = [0.0, 1.0, 1.0, 4 / 3, 2.0, 8 / 3, 3.0, 3.0]
    np.testing.assert_allclose(confidence_weights(counts, "num_interactions"), expected, rtol=1e-6)


def test_confidence_equal_percentiles_gives_ones():
    np.testing.assert_array_equal(confidence_weights(np.array([4, 4, 0, 4, 4]), "num_interactions"), [1, 1, 0, 1, 1])


def test_confidence_loss_based_uses_raw_values():
    raw = np.array([0.5, 1.0, 0.0, 2.0, 3.0, 10.0])
    # values with a target: 0.5 1 2 3 10; percentiles 1 and 3; clipped 1 1 2 3 3; rescaled 1 + (v - 1)
    np.testing.assert_allclose(confidence_weights(raw, "loss_based"), [1.0, 1.0, 0.0, 2.0, 3.0, 3.0], rtol=1e-6)


def test_confidence_rejects_bad_input():
    with pytest.raises(ValueError, match="uniform, num_interactions, loss_based"):
        confidence_weights(np.array([1.0]), "popularity")
    with pytest.raises(ValueError):
        confidence_weights(np.array([1.0, -2.0]), "num_interactions")
    with pytest.raises(ValueError):
        confidence_weights(np.array([1.0, np.nan]), "loss_based")


def test_total_loss():
    terms = {"label": torch.tensor(2.0), "cf": torch.tensor(3.0)}
    assert total_loss(terms, 1.0, 2.5).item() == 2.0 + 7.5
    assert total_loss(terms, 1.0, 0.0).item() == 2.0
    with pytest.raises(ValueError):
        total_loss({"label": torch.tensor(2.0)}, 1.0, 1.0)


def batch() -> dict[str, torch.Tensor]:
    return {
        "labels": t(LABELS),
        "labelled": torch.tensor(LABELLED),
        "cf_target": t([TARGET[0], TARGET[1], [0.0, 0.0, 0.0]]),
        "cf_confidence": t([1.0, 3.0, 0.0]),
    }


def outputs() -> dict[str, torch.Tensor]:
    return {"label_logits": t(LOGITS), "cf": t([PRED[0], PRED[1], [9.0, 9.0, 9.0]])}


def test_multitask_loss_terms():
    terms = multitask_loss(outputs(), batch(), pos_weight=t(POS_WEIGHT), cf_kind="mse", label_weight=1.0, cf_weight=2.0)
    cf = (5 / 3 + 3 * 2 / 3) / 4
    assert terms["label"].item() == pytest.approx(HAND_LABEL_LOSS, rel=1e-6)
    assert terms["cf"].item() == pytest.approx(cf, rel=1e-6)
    assert terms["total"].item() == pytest.approx(HAND_LABEL_LOSS + 2 * cf, rel=1e-6)


def test_multitask_loss_cf_weight_zero_reports_but_detaches():
    out = outputs()
    out["cf"].requires_grad_()
    terms = multitask_loss(out, batch(), pos_weight=t(POS_WEIGHT), cf_kind="exp", label_weight=1.0, cf_weight=0.0)
    assert terms["cf"].item() == pytest.approx((PER_ITEM["exp"][0] + 3 * PER_ITEM["exp"][1]) / 4, rel=1e-6)
    assert not terms["cf"].requires_grad
    assert terms["total"].item() == pytest.approx(HAND_LABEL_LOSS, rel=1e-6)


def test_model_without_cf_head_has_no_cf_term():
    out = {"label_logits": t(LOGITS)}
    terms = multitask_loss(out, batch(), pos_weight=t(POS_WEIGHT), cf_kind="exp", label_weight=1.0, cf_weight=0.0)
    assert set(terms) == {"label", "total"}


def test_unlabelled_batch_still_trains_the_backbone_through_the_cf_head():
    torch.manual_seed(0)
    model = MultitaskModel("small_cnn", num_labels=2, cf_dim=3)
    n = 4
    b = {
        "labels": torch.zeros(n, 2),
        "labelled": torch.zeros(n, dtype=torch.bool),
        "cf_target": torch.randn(n, 3),
        "cf_confidence": torch.ones(n),
    }
    out = model(torch.randn(n, 3, 32, 32))
    terms = multitask_loss(out, b, pos_weight=torch.ones(2), cf_kind="exp", label_weight=1.0, cf_weight=2.0)
    terms["total"].backward()
    assert terms["label"].item() == 0.0
    assert model.backbone[0].weight.grad.abs().sum() > 0
    assert torch.equal(model.label_head.weight.grad, torch.zeros(2, 128))


def test_triplet_cf_loss_against_hand_computed_values():
    # unit vectors: anchor 0 sits on its positive, anchor 1 is orthogonal to its positive
    anchor = t([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    positive = t([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # negatives are the positives rolled by one: anchor 0 -> positive[2], 1 -> positive[0], 2 -> positive[1]
    d_ap = [0.0, 2.0, 2.0]
    d_an = [2.0, 2.0, 0.0]
    margin = 0.2
    per = [max(0.0, p - n + margin) for p, n in zip(d_ap, d_an)]  # [0, 0.2, 2.2]
    k = t([1.0, 3.0, 2.0])
    has = torch.tensor([True, True, False])  # anchor 2 has no positive: it adds nothing
    expected = (1 * per[0] + 3 * per[1]) / 4
    assert triplet_cf_loss(anchor, positive, k, has, margin).item() == pytest.approx(expected, rel=1e-6)


def test_multitask_loss_triplet_needs_positives_and_uses_them():
    b = batch() | {"has_positive": torch.tensor([True, True, False])}
    with pytest.raises(ValueError, match="positive"):
        multitask_loss(outputs(), b, pos_weight=t(POS_WEIGHT), cf_kind="triplet", cf_weight=1.0)
    pos = {"cf": t([PRED[0], PRED[0], PRED[1]])}
    terms = multitask_loss(outputs(), b, pos_weight=t(POS_WEIGHT), cf_kind="triplet", cf_weight=1.0, positives=pos)
    direct = triplet_cf_loss(outputs()["cf"], pos["cf"], b["cf_confidence"], b["has_positive"], 0.2)
    assert terms["cf"].item() == pytest.approx(direct.item(), rel=1e-6)
    assert terms["total"].item() == pytest.approx(terms["label"].item() + direct.item(), rel=1e-6)
