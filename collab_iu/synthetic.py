"""The embedded default dataset: a seeded generator of images, labels and user interactions.

The situation the paper studies, in miniature:

- every item has 1..`max_labels_per_item` labels, drawn with a mild popularity skew;
- each label has a visual motif (a shape in a colour), but the image draws each of its
  item's motifs only with probability `visibility`, adds motifs of *other* labels as
  clutter (`distractors`), hides a part under a grey patch (`occlusion`) and adds noise:
  the pixels show the categories only partly;
- simulated users have sparse tastes over labels (Dirichlet) and interact with items
  whose labels they like (`taste_strength`), plus some random clicks: collaborative
  filtering recovers the labels the pixels do not show.

Same parameters, same bytes on disk.
"""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from collab_iu.artifacts import INTERACTIONS, ITEMS
from collab_iu.atomic import atomic_dir
from collab_iu.params import SyntheticParams

SHAPES = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "ring",
    "plus",
    "cross",
    "hstripes",
    "vstripes",
    "halfdisc",
    "frame",
    "checker",
)


def label_names(n_labels: int) -> list[str]:
    """Readable label names: '<colour index>-<shape>' style, e.g. 'c00_circle'."""
    return [f"{SHAPES[j % len(SHAPES)]}_{j:02d}" for j in range(n_labels)]


def _label_colour(label: int, n_labels: int) -> np.ndarray:
    hue = ((label * 5) % max(n_labels, 12)) / max(n_labels, 12)
    return np.array(colorsys.hsv_to_rgb(hue, 0.85, 0.95), dtype=np.float32)


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    dist = np.hypot(dx, dy)
    box = np.maximum(np.abs(dx), np.abs(dy))
    if shape == "circle":
        return dist < r
    if shape == "square":
        return box < 0.8 * r
    if shape == "triangle":
        return (dy < 0.8 * r) & (np.abs(dx) < (dy + 0.8 * r) * 0.6)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) < r
    if shape == "ring":
        return (dist < r) & (dist > 0.55 * r)
    if shape == "plus":
        return ((np.abs(dx) < 0.3 * r) & (np.abs(dy) < r)) | ((np.abs(dy) < 0.3 * r) & (np.abs(dx) < r))
    if shape == "cross":
        return ((np.abs(dx - dy) < 0.35 * r) | (np.abs(dx + dy) < 0.35 * r)) & (dist < r)
    if shape == "hstripes":
        return (box < 0.85 * r) & (np.floor((dy + r) / (0.34 * r)) % 2 == 0)
    if shape == "vstripes":
        return (box < 0.85 * r) & (np.floor((dx + r) / (0.34 * r)) % 2 == 0)
    if shape == "halfdisc":
        return (dist < r) & (dy > -0.1 * r)
    if shape == "frame":
        return (box < 0.85 * r) & (box > 0.5 * r)
    return (box < 0.85 * r) & ((np.floor((dx + r) / (0.42 * r)) + np.floor((dy + r) / (0.42 * r))) % 2 == 0)


def _draw_item(rng: np.random.Generator, p: SyntheticParams, labels: np.ndarray) -> np.ndarray:
    s = p.image_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    # background: a soft gradient between two random dull colours
    c0, c1 = rng.uniform(0.15, 0.6, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = ((np.cos(angle) * xx + np.sin(angle) * yy) / s + 1) / 2
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]

    shown = [int(j) for j in labels if rng.random() < p.visibility]
    clutter = rng.integers(0, p.n_labels, size=rng.poisson(p.distractors)).tolist()
    motifs = shown + clutter
    rng.shuffle(motifs)
    for label in motifs:
        r = rng.uniform(0.18, 0.28) * s
        cx, cy = rng.uniform(r * 0.7, s - r * 0.7, size=2)
        mask = _shape_mask(SHAPES[label % len(SHAPES)], xx - cx, yy - cy, r)
        colour = _label_colour(label, p.n_labels) * rng.uniform(0.75, 1.1) + rng.normal(0, 0.05, size=3)
        img[mask] = np.clip(colour, 0, 1)
    if rng.random() < p.occlusion:
        w, h = (rng.uniform(0.3, 0.6, size=2) * s).astype(int)
        x0, y0 = rng.integers(0, s - w + 1), rng.integers(0, s - h + 1)
        img[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0.3, 0.7)
    img = img + rng.normal(0, p.noise, size=img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _draw_labels(rng: np.random.Generator, p: SyntheticParams) -> list[np.ndarray]:
    popularity = 1.0 / np.sqrt(np.arange(1, p.n_labels + 1))
    log_pop = np.log(popularity / popularity.sum())
    sizes = 1 + rng.binomial(p.max_labels_per_item - 1, 0.3, size=p.n_items)
    keys = log_pop + rng.gumbel(size=(p.n_items, p.n_labels))  # Gumbel top-k: sampling without replacement
    order = np.argsort(-keys, axis=1)
    return [np.sort(order[i, : sizes[i]]) for i in range(p.n_items)]


def _draw_interactions(rng: np.random.Generator, p: SyntheticParams, item_labels: list[np.ndarray]) -> pd.DataFrame:
    n_items, n_users = p.n_items, p.n_users
    multi_hot = np.zeros((n_items, p.n_labels), dtype=np.float64)
    for i, labels in enumerate(item_labels):
        multi_hot[i, labels] = 1.0 / len(labels)
    tastes = rng.dirichlet(np.full(p.n_labels, p.taste_concentration), size=n_users)
    affinity = tastes @ multi_hot.T * p.n_labels  # ~1 on average, larger where tastes match labels
    item_pop = rng.normal(0, 0.5, size=n_items)
    logits = p.taste_strength * np.log(affinity + 0.05) + item_pop

    sigma = 0.5
    counts = rng.lognormal(np.log(p.interactions_per_user) - sigma**2 / 2, sigma, size=n_users)
    counts = np.clip(np.round(counts), 3, n_items // 2).astype(int)
    users, items, weights = [], [], []
    for u in range(n_users):
        n_random = rng.binomial(counts[u], p.random_interactions)
        keys = logits[u] + rng.gumbel(size=n_items)
        chosen = np.argsort(-keys)[: counts[u] - n_random]
        rest = np.setdiff1d(np.arange(n_items), chosen)
        chosen = np.concatenate([chosen, rng.choice(rest, size=n_random, replace=False)])
        z = (logits[u, chosen] - logits[u].mean()) / (logits[u].std() + 1e-9)
        rating = np.clip(np.round(3 + 1.2 * z + rng.normal(0, 0.7, size=len(chosen))), 1, 5)
        users.append(np.full(len(chosen), u))
        items.append(chosen)
        weights.append(rating)
    users_a, items_a = np.concatenate(users), np.concatenate(items)
    timestamps = 1_600_000_000 + np.sort(rng.integers(0, 86_400 * 365, size=len(users_a)))
    return pd.DataFrame(
        {
            "user_id": [f"user_{u:05d}" for u in users_a],
            "item_id": [f"item_{i:06d}" for i in items_a],
            "weight": np.concatenate(weights).astype(np.float32),
            "timestamp": timestamps.astype(np.int64),
        }
    )


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def generate_synthetic(params: SyntheticParams, dest: str | Path) -> dict:
    """Write the synthetic dataset in the canonical format to `dest` (atomically); return a summary."""
    rng = np.random.default_rng(params.seed)
    names = label_names(params.n_labels)
    item_labels = _draw_labels(rng, params)
    interactions = _draw_interactions(rng, params, item_labels)
    has_image = rng.random(params.n_items) >= params.missing_image_fraction

    with atomic_dir(dest) as tmp:
        (tmp / "images").mkdir()
        images: list[str | None] = []
        for i, labels in enumerate(item_labels):
            pixels = _draw_item(rng, params, labels)  # drawn for every item, so the stream does not shift
            if has_image[i]:
                rel = f"images/item_{i:06d}.png"
                (tmp / rel).write_bytes(_png_bytes(pixels))
                images.append(rel)
            else:
                images.append(None)
        items = pd.DataFrame(
            {
                "item_id": [f"item_{i:06d}" for i in range(params.n_items)],
                "image": images,
                "labels": [[names[j] for j in labels] for labels in item_labels],
            }
        )
        items.to_parquet(tmp / ITEMS, index=False)
        interactions.to_parquet(tmp / INTERACTIONS, index=False)
    return {
        "items": params.n_items,
        "items_with_image": int(has_image.sum()),
        "users": params.n_users,
        "interactions": len(interactions),
        "labels": params.n_labels,
        "mean_labels_per_item": float(np.mean([len(x) for x in item_labels])),
    }
