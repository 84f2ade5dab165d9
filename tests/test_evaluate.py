"""The evaluation stage on fabricated run folders (no training): tables, statistics, strict JSON, atomicity."""

from __future__ import annotations

import json
import shutil
import zlib

import numpy as np
import pandas as pd
import pytest
from helpers import held_out_items, tiny_params_tree
from sklearn.metrics import average_precision_score

from collab_iu.artifacts import load_prepared
from collab_iu.dataset import label_matrix
from collab_iu.evaluate import CELL_COLUMNS, OUTPUTS, SELECTED, format_table, run_evaluation
from collab_iu.grid import grid_runs
from collab_iu.layout import dataset_layout
from collab_iu.metrics import evaluate_scores
from collab_iu.params import params_from_dict
from collab_iu.stages import run_cache, run_cf, run_prepare, run_split
from collab_iu.stats import significance_mark

EXPERIMENT = {
    "methods": ["image_only", "with_cf"],
    "label_ratios": [0.2, 1.0],
    "cf_weights": [1.0],
    "seeds": [0, 1, 2, 3],
    "bootstrap_resamples": 20,
}
NOISE = {"image_only": 0.9, "with_cf": 0.45, "cf_pretrain": 0.7}  # with_cf's scores are clearly better
SHUFFLED_RUN = "with_cf-r1-w1-s1"  # written with its test items in another order
IMAGE_ONLY_WINS_ON_VAL = {"image_only-r0.2-w0-s1"}  # every other (ratio, seed): with_cf has the better val mAP


def _params(root, **experiment):
    return params_from_dict(tiny_params_tree(root, experiment=EXPERIMENT | experiment))


def _write_fake_runs(params, layout):
    ids, labels, vocabulary = held_out_items(layout)
    y = label_matrix(labels, vocabulary)
    for spec in grid_runs(params):
        rng = np.random.default_rng(zlib.crc32(spec.key.encode()))  # deterministic per run
        noise = NOISE[spec.method] * (1.3 if spec.label_ratio < 1 else 1.0)
        scores = (y + rng.normal(0.0, noise, y.shape)).astype(np.float32)
        order = np.arange(len(ids))
        if spec.key == SHUFFLED_RUN:
            order = np.random.default_rng(7).permutation(len(ids))
        run_dir = layout.runs / spec.key
        run_dir.mkdir(parents=True, exist_ok=True)
        np.save(run_dir / "test_scores.npy", scores[order])
        pd.DataFrame({"item_id": ids[order]}).to_parquet(run_dir / "test_items.parquet", index=False)
        model = {
            "backbone": "small_cnn",
            "vocabulary": vocabulary,
            "cf_dim": 8 if spec.method == "with_cf" else 0,
            "cache_size": 16,
            "input_size": 16,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "config": {"run_key": spec.key, "config_hash": "0" * 16},
        }
        (run_dir / "model.json").write_text(json.dumps(model))
        metrics = {"test_" + k: v for k, v in evaluate_scores(y, scores).items()}
        metrics |= {
            "run_key": spec.key,
            "method": spec.method,
            "label_ratio": spec.label_ratio,
            "cf_weight": spec.cf_weight,
            "seed": spec.seed,
            "best_epoch": 3,
            "val_map": 0.7 if spec.key in IMAGE_ONLY_WINS_ON_VAL else 0.6 if spec.method == "with_cf" else 0.5,
            "labelled_train_items": 10,
            "val_cf_r2": 0.25 if spec.method == "with_cf" else None,
            "val_cf_cosine": 0.5 if spec.method == "with_cf" else None,
        }
        (run_dir / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_data")
    params = _params(root)
    for stage in (run_prepare, run_split, run_cf, run_cache):
        stage(params)
    layout = dataset_layout(params)
    _write_fake_runs(params, layout)
    return params, layout, run_evaluation(params)


@pytest.fixture
def copied(evaluated, tmp_path):
    """A copy of the prepared data and runs (no evaluation/) under another root: params, layout."""
    _, layout, _ = evaluated
    params = _params(tmp_path / "data")
    copy = dataset_layout(params)
    shutil.copytree(layout.base, copy.base, ignore=shutil.ignore_patterns("evaluation"))
    return params, copy


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def _sklearn_map(y: np.ndarray, scores: np.ndarray) -> float:
    keep = y.sum(axis=0) > 0
    return float(average_precision_score(y[:, keep], scores[:, keep], average="macro"))


def _cell(table: pd.DataFrame, method: str, ratio: float) -> pd.Series:
    rows = table[(table["method"] == method) & (table["label_ratio"] == ratio)]
    assert len(rows) == 1, (method, ratio)
    return rows.iloc[0]


def test_every_output_is_written(evaluated):
    _, layout, result = evaluated
    for name, file in OUTPUTS.items():
        path = layout.evaluation / file
        assert path.exists() and path.stat().st_size > 0, file
        assert result["paths"][name] == path
    for png in ("map_plot", "improvement_plot"):
        assert result["paths"][png].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in layout.base.iterdir() if p.name.startswith(".evaluation")]  # no temp folder left
    md = (layout.evaluation / "results.md").read_text()
    assert "| image_only |" in md and "| with_cf |" in md and "Headline" in md


def test_results_csv_has_one_row_per_cell(evaluated):
    _, layout, result = evaluated
    csv = pd.read_csv(layout.evaluation / "results.csv")
    assert list(csv.columns) == list(CELL_COLUMNS)
    cells = set(zip(csv["method"], csv["label_ratio"], csv["cf_weight"]))
    expected = {(m, r, 0.0) for m in ("image_only", "random", "popularity") for r in (0.2, 1.0)}
    expected |= {("with_cf", r, 1.0) for r in (0.2, 1.0)}
    expected |= {(SELECTED, r, 0.0) for r in (0.2, 1.0)}
    assert cells == expected and len(csv) == len(expected)
    assert (csv["n_seeds"] == 4).all()
    assert (csv["dataset"] == "synthetic").all()
    assert isinstance(result["table"], pd.DataFrame) and len(result["table"]) == len(csv)
    assert (csv["map_ci_low"] <= csv["map_ci_high"]).all()


def test_summary_is_strict_json_with_headline(evaluated):
    _, layout, result = evaluated
    summary = _strict_json((layout.evaluation / "summary.json").read_text())
    ids, _, _ = held_out_items(layout)
    assert summary["dataset"] == "synthetic"
    assert summary["n_test_items"] == len(ids)
    assert summary["paper_test"]["resamples"] == 20
    assert summary["paper_test"]["items_per_resample"] == round(0.9 * len(ids))
    assert summary["significance"]["resamples"] == 200
    assert len(summary["cells"]) == 10
    assert set(summary["cells"][0]) == set(CELL_COLUMNS)
    baseline = next(c for c in summary["cells"] if c["method"] == "image_only")
    assert baseline["improvement"] is None and baseline["p_value"] is None  # NaN becomes null
    head = summary["headline"]
    assert set(head) >= {
        "lowest_label_ratio",
        "with_cf_map",
        "image_only_map",
        "improvement",
        "p_value",
        "p_paper",
        "p_seeds",
    }
    assert head["method"] == SELECTED and head["lowest_label_ratio"] == 0.2 and head["n_seeds"] == 4
    assert head["selected_cf_weights"] == "s0:1 s1:0 s2:1 s3:1"
    assert head["improvement"] == pytest.approx(head["with_cf_map"] / head["image_only_map"] - 1)
    assert head["improvement_ci_low"] <= head["improvement"] <= head["improvement_ci_high"]
    assert result["headline"] == head
    assert summary["selection"] == [
        {"label_ratio": 0.2, "candidates": [0.0, 1.0], "selected": {"0": 1.0, "1": 0.0, "2": 1.0, "3": 1.0}},
        {"label_ratio": 1.0, "candidates": [0.0, 1.0], "selected": {"0": 1.0, "1": 1.0, "2": 1.0, "3": 1.0}},
    ]
    runs = summary["runs"]
    assert sorted(r["run_key"] for r in runs) == sorted(s.key for s in grid_runs(evaluated[0]))
    assert all(r["best_epoch"] == 3 for r in runs)
    assert all(r["val_cf_r2"] == (0.25 if r["method"] == "with_cf" else None) for r in runs)
    assert summary["cf_label_probe"]["probe_map"] > 0
    with_cf = next(c for c in summary["cells"] if c["method"] == "with_cf")
    assert with_cf["val_cf_r2"] == 0.25 and with_cf["val_cf_cosine"] == 0.5 and with_cf["val_map"] == 0.6


def test_seed_mean_map_matches_an_independent_recomputation(evaluated):
    params, layout, result = evaluated
    items, _ = load_prepared(layout)
    labels = items.set_index("item_id")["labels"]
    table = result["table"]
    for method in ("image_only", "with_cf"):
        for ratio in (0.2, 1.0):
            maps = []
            for spec in grid_runs(params):
                if spec.method != method or spec.label_ratio != ratio:
                    continue
                run_dir = layout.runs / spec.key
                vocabulary = json.loads((run_dir / "model.json").read_text())["vocabulary"]
                ids = pd.read_parquet(run_dir / "test_items.parquet")["item_id"]
                y = label_matrix(labels.loc[ids], vocabulary)
                maps.append(_sklearn_map(y, np.load(run_dir / "test_scores.npy")))
            row = _cell(table, method, ratio)
            assert row["map_mean"] == pytest.approx(np.mean(maps), abs=1e-9)
            assert row["map_std"] == pytest.approx(np.std(maps, ddof=1), abs=1e-9)
    summary_runs = {r["run_key"]: r["test_map"] for r in result["summary"]["runs"]}
    metrics = json.loads((layout.runs / SHUFFLED_RUN / "metrics.json").read_text())
    assert summary_runs[SHUFFLED_RUN] == pytest.approx(metrics["test_map"], abs=1e-9)  # realigned by item id


def test_improvement_is_the_ratio_of_means_minus_one(evaluated):
    _, _, result = evaluated
    table = result["table"]
    for ratio in (0.2, 1.0):
        base = _cell(table, "image_only", ratio)
        for method in ("with_cf", "random", "popularity"):
            row = _cell(table, method, ratio)
            assert row["improvement"] == pytest.approx(row["map_mean"] / base["map_mean"] - 1)
        assert np.isnan(base["improvement"])


def test_clearly_better_method_is_significant(evaluated):
    _, _, result = evaluated
    for ratio in (0.2, 1.0):
        row = _cell(result["table"], "with_cf", ratio)
        assert row["improvement"] > 0
        assert row["p_value"] < 0.05 and row["p_paper"] < 0.05
        assert row["mark"] in ("*", "**")
        assert 0 <= row["p_seeds"] <= 1
        assert 0 < row["improvement_ci_low"] <= row["improvement"] <= row["improvement_ci_high"]


def test_marks_come_from_the_valid_test_only(evaluated):
    table = evaluated[2]["table"]
    compared = table[table["p_value"].notna()]
    assert len(compared) == 8  # every row but image_only's two
    assert [significance_mark(p) for p in compared["p_value"]] == list(compared["mark"])


def test_val_selected_row_is_the_chosen_runs_on_test(evaluated):
    _, _, result = evaluated
    table = result["table"]
    # at ratio 1.0 with_cf won validation for every seed: the selected row is with_cf's
    assert _cell(table, SELECTED, 1.0)["map_mean"] == pytest.approx(_cell(table, "with_cf", 1.0)["map_mean"])
    assert _cell(table, SELECTED, 1.0)["selected_cf_weights"] == "s0:1 s1:1 s2:1 s3:1"
    # at 0.2, seed 1 chose image_only, the other seeds with_cf
    runs = {r["run_key"]: r["test_map"] for r in result["summary"]["runs"]}
    chosen = ["with_cf-r0.2-w1-s0", "image_only-r0.2-w0-s1", "with_cf-r0.2-w1-s2", "with_cf-r0.2-w1-s3"]
    expected = np.mean([runs[key] for key in chosen])
    assert _cell(table, SELECTED, 0.2)["map_mean"] == pytest.approx(expected)


def test_selection_never_reads_test_scores(evaluated, copied):
    """Test scores made worthless (with_cf) or perfect (image_only) change test mAP, never the selection."""
    params, layout = copied
    _, labels, vocabulary = held_out_items(layout)
    for spec in grid_runs(params):
        run_dir = layout.runs / spec.key
        ids = pd.read_parquet(run_dir / "test_items.parquet")["item_id"]
        truth = label_matrix(labels.set_axis(held_out_items(layout)[0]).loc[ids], vocabulary).astype(np.float32)
        np.save(run_dir / "test_scores.npy", 1 - truth if spec.method == "with_cf" else truth)
    corrupted = run_evaluation(params)
    assert corrupted["summary"]["selection"] == evaluated[2]["summary"]["selection"]
    assert (
        _cell(corrupted["table"], "with_cf", 1.0)["map_mean"] < _cell(evaluated[2]["table"], "with_cf", 1.0)["map_mean"]
    )
    assert _cell(corrupted["table"], SELECTED, 1.0)["improvement"] < 0  # chosen on validation, bad on test: shown


def test_reference_points(evaluated):
    _, layout, result = evaluated
    _, labels, vocabulary = held_out_items(layout)
    prevalence = label_matrix(labels, vocabulary).astype(np.float64).mean(axis=0)
    table = result["table"]
    for ratio in (0.2, 1.0):
        random = _cell(table, "random", ratio)
        assert random["map_mean"] == pytest.approx(prevalence.mean(), abs=0.12)
        popularity = _cell(table, "popularity", ratio)
        assert popularity["map_mean"] == pytest.approx(prevalence[prevalence > 0].mean(), abs=1e-9)  # all tied
        assert random["improvement"] < 0 and popularity["improvement"] < 0
        assert random["mark"] in ("*", "**")  # far below the image-only model


def test_missing_run_raises_and_writes_nothing(copied):
    params, layout = copied
    (layout.runs / "with_cf-r0.2-w1-s1" / "metrics.json").unlink()  # an unfinished run
    shutil.rmtree(layout.runs / "image_only-r1-w0-s0")
    with pytest.raises(FileNotFoundError, match="train them first") as info:
        run_evaluation(params)
    assert "with_cf-r0.2-w1-s1" in str(info.value) and "image_only-r1-w0-s0" in str(info.value)
    assert "with_cf-r1-w1-s0" not in str(info.value)
    assert not layout.evaluation.exists()
    assert not [p for p in layout.base.iterdir() if p.name.startswith(".evaluation")]


def test_runs_with_different_test_items_are_rejected(copied):
    params, layout = copied
    run_dir = layout.runs / "with_cf-r1-w1-s0"
    ids = pd.read_parquet(run_dir / "test_items.parquet")
    ids.iloc[:-1].to_parquet(run_dir / "test_items.parquet", index=False)
    np.save(run_dir / "test_scores.npy", np.load(run_dir / "test_scores.npy")[:-1])
    with pytest.raises(ValueError, match="different test items"):
        run_evaluation(params)
    assert not layout.evaluation.exists()


def test_format_table_lists_every_cell(evaluated):
    _, _, result = evaluated
    text = format_table(result["table"])
    lines = text.splitlines()
    assert len(lines) == 2 + len(result["table"])
    assert lines[0].split()[:3] == ["method", "ratio", "cf_w"]
    assert all(method in text for method in ("image_only", "with_cf", "random", "popularity"))


def test_grid_without_baseline_or_seed_variance(copied, tmp_path):
    _, layout = copied
    params = _params(tmp_path / "data", methods=["with_cf", "cf_pretrain"], cf_weights=[0.5, 2.0], seeds=[3])
    _write_fake_runs(params, layout)
    result = run_evaluation(params)
    summary = _strict_json((layout.evaluation / "summary.json").read_text())
    assert "headline" not in summary and result["headline"] is None
    assert len(summary["cells"]) == 2 * (2 + 2 + 2)  # ratios x (2 weights x 2 methods + 2 reference points)
    assert all(c["improvement"] is None and c["map_std"] is None and c["mark"] == "" for c in summary["cells"])
    assert all(c["map_ci_low"] is None for c in summary["cells"])  # one seed: training variance unknown, no CI
    assert summary["selection"] == []
    assert all((layout.evaluation / f).exists() for f in OUTPUTS.values())
