"""The paper's tables and figures from fabricated finished runs: mAPs and marks against a hand computation."""

from __future__ import annotations

import json
import math
import re
import shutil
import zlib

import numpy as np
import pandas as pd
import pytest
from helpers import held_out_items, tiny_params_tree
from scipy.stats import t as t_dist
from scipy.stats import ttest_rel
from sklearn.metrics import average_precision_score

from collab_iu.dataset import label_matrix
from collab_iu.layout import dataset_layout
from collab_iu.metrics import bootstrap_indices, bootstrap_map, resample_counts
from collab_iu.paper_report import OUTPUTS, TABLE_COLUMNS, build_paper_report
from collab_iu.params import params_from_dict
from collab_iu.stages import run_cache, run_prepare, run_split

DATASETS = {
    "alpha": {"source": "synthetic", "overrides": {"train.cf_weight": 2.5}},
    "beta": {"source": "synthetic", "overrides": {"train.cf_weight": 1.0}},
    "gamma": {"source": "synthetic"},  # never prepared, no runs
    "delta": {"source": "synthetic"},  # prepared, only a stale run
}
RESAMPLES = 30  # the paper's test
SIGNIFICANCE_RESAMPLES = 40  # the valid test
SEEDS = (0, 1, 2, 3)
PNG = b"\x89PNG\r\n\x1a\n"


def _params(root):
    tree = tiny_params_tree(
        root,
        data={"default": "alpha", "datasets": DATASETS},
        experiment={
            "seeds": list(SEEDS),
            "bootstrap_resamples": RESAMPLES,
            "significance_resamples": SIGNIFICANCE_RESAMPLES,
        },
    )
    return params_from_dict(tree)


def _normal(shape, noise: float, name: str) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(name.encode())).normal(0.0, noise, shape)


def _noisy(y, noise: float, name: str) -> np.ndarray:
    """The truth plus Gaussian noise (deterministic per name): lower noise, higher mAP."""
    return (y + _normal(y.shape, noise, name)).astype(np.float32)


def _write_run(layout, key, scores, ids, vocabulary, order=None) -> None:
    order = np.arange(len(ids)) if order is None else order
    run_dir = layout.runs / key
    run_dir.mkdir(parents=True, exist_ok=True)
    np.save(run_dir / "test_scores.npy", scores[order])
    pd.DataFrame({"item_id": ids[order]}).to_parquet(run_dir / "test_items.parquet", index=False)
    (run_dir / "model.json").write_text(json.dumps({"vocabulary": vocabulary, "backbone": "small_cnn"}))
    (run_dir / "metrics.json").write_text(json.dumps({"run_key": key, "val_map": 0.5, "best_epoch": 1}))


def _p_value(y, method_by_seed, base_by_seed, counts) -> float:
    """The protocol's p (the package's fast implementation), used only to pick fabricated effects."""
    from collab_iu.metrics import macro_map
    from collab_iu.stats import two_level_test

    def per_seed(runs):
        return [macro_map(y, s)[0] for s in runs], np.stack([bootstrap_map(y, s, counts=counts) for s in runs])

    (m, rm), (b, rb) = per_seed(method_by_seed), per_seed(base_by_seed)
    return two_level_test(m, b, rm, rb)["p"]


def _perturbed(y, bases, counts, low: float, high: float, name: str, noise: float = 0.25) -> list[np.ndarray]:
    """The baseline's scores plus small noise and a shift, searched until the valid test's p lies in (low, high)."""
    for k in range(500):
        runs = [
            (b + 0.1 * y + _normal(y.shape, noise, f"{name}/{k}/{i}")).astype(np.float32) for i, b in enumerate(bases)
        ]
        if low < _p_value(y, runs, bases, counts) < high:
            return runs
    raise AssertionError(f"no perturbation with p in ({low}, {high})")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_report")
    params = _params(root / "data")
    for stage in (run_prepare, run_split, run_cache):
        stage(params, "alpha")
    layouts = {name: dataset_layout(params, name) for name in DATASETS}
    for name in ("beta", "delta"):
        shutil.copytree(layouts["alpha"].base, layouts[name].base)
    ids, labels, vocabulary = held_out_items(layouts["alpha"])
    y = label_matrix(labels, vocabulary)
    indices = bootstrap_indices(len(ids), RESAMPLES, 0.9, 0)
    counts = resample_counts(len(ids), SIGNIFICANCE_RESAMPLES, 0)
    runs: dict[str, dict[str, np.ndarray]] = {"alpha": {}, "beta": {}}

    a = runs["alpha"]
    for s in SEEDS:
        a[f"image_only-r0.2-w0-s{s}"] = _noisy(y, 1.0, f"a/io/0.2/{s}")
        a[f"with_cf-r0.2-w2.5-s{s}"] = _noisy(y, 0.35, f"a/cf/0.2/{s}")  # clearly better
        a[f"image_only-r1-w0-s{s}"] = _noisy(y, 0.8, f"a/io/1/{s}")
        a[f"with_cf-r1-w2.5-s{s}"] = _noisy(y, 0.4, f"a/cf/1/{s}")
    bases = [a[f"image_only-r0.2-w0-s{s}"] for s in SEEDS]
    for weight, (low, high) in ((1, (0.015, 0.045)), (4, (0.2, 1.0))):  # a weak effect, and none
        for s, scores in zip(SEEDS, _perturbed(y, bases, counts, low, high, f"a/w{weight}")):
            a[f"with_cf-r0.2-w{weight}-s{s}"] = scores

    b = runs["beta"]
    for s in SEEDS:
        b[f"image_only-r0.2-w0-s{s}"] = _noisy(y, 1.0, f"b/io/0.2/{s}")
    bases = [b[f"image_only-r0.2-w0-s{s}"] for s in SEEDS]
    for s, scores in zip(SEEDS, _perturbed(y, bases, counts, 0.2, 1.0, "b/w1")):
        b[f"with_cf-r0.2-w1-s{s}"] = scores  # indistinguishable from image_only
    b["triplet-r0.2-w1-s0"] = _noisy(y, 0.5, "b/triplet")  # one seed only

    for name, by_key in runs.items():
        for key, scores in by_key.items():
            order = np.random.default_rng(3).permutation(len(ids)) if key == "with_cf-r1-w2.5-s1" else None
            _write_run(layouts[name], key, scores, ids, vocabulary, order)
    # skipped: a stale test set, an unfinished run, a folder that is no run
    _write_run(layouts["beta"], "with_cf-r1-w1-s0", _noisy(y, 0.5, "stale")[:-1], ids[:-1], vocabulary)
    _write_run(layouts["beta"], "with_cf-r1-w1-s1", _noisy(y, 0.5, "x"), ids, vocabulary)
    (layouts["beta"].runs / "with_cf-r1-w1-s1" / "metrics.json").unlink()
    (layouts["beta"].runs / "notes").mkdir()
    _write_run(layouts["delta"], "image_only-r0.2-w0-s0", _noisy(y, 1.0, "d")[1:], ids[1:], vocabulary)

    out = root / "report"
    result = build_paper_report(params, out)
    return {
        "params": params,
        "root": root,
        "out": out,
        "result": result,
        "runs": runs,
        "y": y,
        "indices": indices,
        "counts": counts,
    }


# ---------------------------------------------------------------------------- the hand computation


def _macro_ap(y: np.ndarray, scores: np.ndarray) -> float:
    keep = y.sum(axis=0) > 0
    return float(average_precision_score(y[:, keep], scores[:, keep], average="macro"))


def _samples(y, scores, indices) -> np.ndarray:
    return np.array([_macro_ap(y[idx], scores[idx]) for idx in indices])


def _weighted_macro_ap(y: np.ndarray, scores: np.ndarray, weight: np.ndarray) -> float:
    """Macro AP over a with-replacement resample: each item weighted by how often it was drawn."""
    aps = [
        average_precision_score(y[:, j], scores[:, j], sample_weight=weight)
        for j in range(y.shape[1])
        if (y[:, j] * weight).sum() > 0
    ]
    return float(np.mean(aps))


def _two_level_p(method_maps, base_maps, method_resampled, base_resampled) -> float:
    """Seeds' variance of the difference / n plus the resamples' variance of the seed-mean difference; t-test
    with Welch-Satterthwaite degrees of freedom capped at (n - 1) (1 + test / train)."""
    d = np.asarray(method_maps) - np.asarray(base_maps)
    n, r = len(d), method_resampled.shape[1]
    train, test = d.var(ddof=1) / n, (method_resampled - base_resampled).mean(axis=0).var(ddof=1)
    df = min((train + test) ** 2 / (train**2 / (n - 1) + test**2 / (r - 1)), (n - 1) * (1 + test / train))
    return float(2 * t_dist.sf(abs(d.mean()) / np.sqrt(train + test), df))


def _hand_mark(p: float) -> str:
    return "**" if p <= 0.01 else "*" if p <= 0.05 else ""


def _hand_cell(built, dataset: str, method_runs: list[np.ndarray], ratio_key: str) -> dict:
    """mAP, improvement, p and mark of a cell computed from the runs' scores, independently of the package."""
    y, indices, counts, runs = built["y"], built["indices"], built["counts"], built["runs"][dataset]
    bases = [runs[f"image_only-{ratio_key}-w0-s{s}"] for s in SEEDS][: len(method_runs)]
    base_maps, cell_maps = [_macro_ap(y, s) for s in bases], [_macro_ap(y, s) for s in method_runs]
    method = np.mean([_samples(y, s, indices) for s in method_runs], axis=0)
    base = np.mean([_samples(y, s, indices) for s in bases], axis=0)
    p_paper = float(ttest_rel(method, base).pvalue)
    p = math.nan
    if len(method_runs) > 1:
        resampled = [
            np.array([[_weighted_macro_ap(y, s, w) for w in counts] for s in runs_]) for runs_ in (method_runs, bases)
        ]
        p = _two_level_p(cell_maps, base_maps, *resampled)
    base_map, cell_map = (
        np.mean([_macro_ap(y, s) for s in [runs[f"image_only-{ratio_key}-w0-s{s}"] for s in SEEDS]]),
        np.mean(cell_maps),
    )
    return {
        "map": cell_map,
        "improvement": cell_map / base_map - 1,
        "p": p,
        "p_paper": p_paper,
        "mark": _hand_mark(p),
        "base_map": base_map,
    }


def _csv_row(table: pd.DataFrame, dataset: str, method: str, ratio: float, weight: float) -> pd.Series:
    at = (table["dataset"] == dataset) & (table["method"] == method) & (table["label_ratio"] == ratio)
    rows = table[at & (table["cf_weight"] == weight)]
    assert len(rows) == 1, (dataset, method, ratio, weight)
    return rows.iloc[0]


def _md_blocks(text: str) -> dict[float, dict[str, dict[str, str]]]:
    """label ratio -> row -> dataset -> cell text."""
    blocks: dict[float, dict[str, dict[str, str]]] = {}
    ratio = header = None
    for line in text.splitlines():
        if line.startswith("## Label ratio "):
            ratio, header = float(line.split()[-1]), None
            blocks[ratio] = {}
        elif ratio is not None and line.startswith("| method |"):
            header = [c.strip() for c in line.strip("|").split("|")][1:]
        elif header and line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            blocks[ratio][cells[0]] = dict(zip(header, cells[1:]))
    return blocks


CELL = re.compile(r"^(?P<map>\d\.\d{3})(?: \((?P<imp>[+-]\d+\.\d) %(?P<mark>\**)\))?$")

# (dataset, method, ratio, weight, the seeds' run keys, the row label in main_table.md)
CELLS = [
    ("alpha", "with_cf", 0.2, 2.5, "with_cf-r0.2-w2.5", "with_cf"),
    ("alpha", "with_cf", 0.2, 1.0, "with_cf-r0.2-w1", "with_cf (w=1)"),
    ("alpha", "with_cf", 0.2, 4.0, "with_cf-r0.2-w4", "with_cf (w=4)"),
    ("alpha", "with_cf", 1.0, 2.5, "with_cf-r1-w2.5", "with_cf"),
    ("beta", "with_cf", 0.2, 1.0, "with_cf-r0.2-w1", "with_cf"),
    ("beta", "triplet", 0.2, 1.0, "triplet-r0.2-w1", "triplet"),
]


def _method_runs(built, dataset: str, prefix: str) -> list[np.ndarray]:
    runs = built["runs"][dataset]
    return [runs[f"{prefix}-s{s}"] for s in SEEDS if f"{prefix}-s{s}" in runs]


# ---------------------------------------------------------------------------- tests


def test_marks_and_maps_match_the_hand_computation(built):
    table = pd.read_csv(built["out"] / "main_table.csv")
    blocks = _md_blocks((built["out"] / "main_table.md").read_text())
    marks = set()
    for dataset, method, ratio, weight, prefix, row_label in CELLS:
        ratio_key = f"r{ratio:g}"
        hand = _hand_cell(built, dataset, _method_runs(built, dataset, prefix), ratio_key)
        row = _csv_row(table, dataset, method, ratio, weight)
        assert row["map_mean"] == pytest.approx(hand["map"], abs=1e-9)
        assert row["improvement"] == pytest.approx(hand["improvement"], abs=1e-9)
        assert row["p_value"] == pytest.approx(hand["p"], rel=1e-6, abs=1e-12, nan_ok=True)  # nan: one seed
        assert row["p_paper"] == pytest.approx(hand["p_paper"], rel=1e-6, abs=1e-12)
        mark = row["mark"] if isinstance(row["mark"], str) else ""  # an empty CSV cell reads back as NaN
        assert mark == hand["mark"], (dataset, method, ratio, weight, hand["p"])
        assert row["row"] == row_label
        md = CELL.match(blocks[ratio][row_label][dataset])
        assert md, blocks[ratio][row_label][dataset]
        assert md["map"] == f"{hand['map']:.3f}"
        assert md["imp"] == f"{hand['improvement'] * 100:+.1f}"
        assert md["mark"] == hand["mark"]
        marks.add(hand["mark"])
        base = blocks[ratio]["image_only"][dataset]
        assert base == f"{hand['base_map']:.3f}"  # image_only: the mAP alone
    assert marks == {"**", "*", ""}  # the fabricated effects: clear, weak, none


def test_reference_rows_and_random_mark(built):
    table = pd.read_csv(built["out"] / "main_table.csv")
    assert list(table.columns) == list(TABLE_COLUMNS)
    random_scores = [np.random.default_rng(s).random(built["y"].shape) for s in SEEDS]  # the protocol's random scores
    hand = _hand_cell(built, "alpha", random_scores, "r0.2")
    row = _csv_row(table, "alpha", "random", 0.2, 0.0)
    assert row["map_mean"] == pytest.approx(hand["map"], abs=1e-9)
    assert row["p_value"] == pytest.approx(hand["p"], rel=1e-6, abs=1e-12)
    assert row["mark"] == hand["mark"] == "**"
    blocks = _md_blocks((built["out"] / "main_table.md").read_text())
    assert {"random", "popularity", "image_only", "with_cf", "triplet"} <= set(blocks[0.2])
    assert list(blocks[0.2])[:4] == ["image_only", "with_cf", "with_cf (w=1)", "with_cf (w=4)"]
    assert blocks[1.0]["with_cf"]["beta"] == "-"  # beta's only run there is stale
    assert blocks[0.2]["with_cf (w=1)"]["beta"] == "-"  # beta's w=1 is its own weight: in the with_cf row
    own = table[table["dataset_weight"] & (table["method"] == "with_cf")]
    assert set(zip(own["dataset"], own["cf_weight"])) == {("alpha", 2.5), ("beta", 1.0)}


def test_skipped_runs_and_datasets_are_reported(built):
    result = built["result"]
    assert result["datasets"] == ["alpha", "beta"]
    report = json.loads((built["out"] / "report.json").read_text())
    assert report["datasets"] == ["alpha", "beta"]
    reasons = {(s["dataset"], s["run"]): s["reason"] for s in report["skipped"]}
    assert "stale" in reasons[("beta", "with_cf-r1-w1-s0")]
    assert "not finished" in reasons[("beta", "with_cf-r1-w1-s1")]
    assert reasons[("beta", "notes")] == "not a run key"
    assert "stale" in reasons[("delta", "image_only-r0.2-w0-s0")]
    assert ("delta", None) in reasons and ("gamma", None) in reasons
    assert report["details"]["alpha"]["cf_weight"] == 2.5
    assert sorted(report["details"]["beta"]["runs"]) == sorted(built["runs"]["beta"])


def test_cf_weight_sweep_has_image_only_at_zero(built):
    sweep = pd.read_csv(built["out"] / "map_vs_cf_weight.csv")
    assert set(sweep["dataset"]) == {"alpha"}  # beta ran one weight per method
    alpha = sweep[sweep["label_ratio"] == 0.2]
    expected = [("image_only", 0.0), ("with_cf", 1.0), ("with_cf", 2.5), ("with_cf", 4.0)]
    assert list(zip(alpha["method"], alpha["cf_weight"])) == expected
    assert (alpha["n_seeds"] == len(SEEDS)).all() and alpha["map_std"].notna().all()
    assert set(sweep["label_ratio"]) == {0.2}
    ratio = pd.read_csv(built["out"] / "map_vs_label_ratio.csv")
    assert {"with_cf (w=2.5)", "image_only", "random", "popularity"} <= set(
        ratio.loc[ratio["dataset"] == "alpha", "series"]
    )


def test_every_output_written_and_pngs_valid(built):
    out, result = built["out"], built["result"]
    for name, file in OUTPUTS.items():
        assert (out / file).stat().st_size > 0 and result["paths"][name] == out / file
    for file in ("map_vs_label_ratio.png", "map_vs_cf_weight.png"):
        assert (out / file).read_bytes()[:8] == PNG
    assert "paper_numbers_md" not in result["paths"]  # no dataset on a paper preset
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".report")]
    assert isinstance(result["table"], pd.DataFrame) and len(result["table"]) == len(
        pd.read_csv(out / "main_table.csv")
    )


def test_nothing_usable_raises_and_writes_nothing(built):
    out = built["root"] / "nothing"
    with pytest.raises(FileNotFoundError, match="no usable finished runs") as info:
        build_paper_report(built["params"], out, datasets=["gamma", "delta"])
    assert "stale" in str(info.value)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".nothing")]


def test_paper_numbers_beside_a_paper_preset(built, tmp_path):
    tree = tiny_params_tree(
        built["root"] / "data",
        data={
            "default": "alpha",
            "datasets": {"alpha": {"source": "synthetic", "preset": "paper_toys", "overrides": {}}},
        },
        experiment={"seeds": list(SEEDS), "bootstrap_resamples": RESAMPLES},
    )
    result = build_paper_report(params_from_dict(tree), tmp_path / "out")
    text = result["paths"]["paper_numbers_md"].read_text()
    assert "0.078 | 0.098" in text  # the paper's Toys numbers at ratio 0.1
    assert "| 0.2 |" in text and "| 1 |" in text
