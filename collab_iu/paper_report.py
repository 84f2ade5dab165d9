"""The paper's tables and figures from every finished run of every dataset.

`build_paper_report` finds the finished runs under `data/<dataset>/runs/*/` (folders named by
a run key holding `metrics.json`, `test_scores.npy`, `test_items.parquet` and `model.json`),
evaluates them per dataset with the shared core (`evaluate.evaluate_runs`: the two-level test
against image_only at the same label ratio, over training seeds and with-replacement resamples
of the test items, with the paper's subsample t-test beside it for comparison; improvement =
mAP / image_only's - 1; the val-selected with_cf row; reference points random and popularity),
and writes one folder, atomically:

- `main_table.md`: the paper's table, one block per label ratio, method rows x dataset columns;
  a cell is `mAP (+x.x %**)`: the seed-mean test mAP and its improvement over image_only of
  that dataset and ratio, `*` p <= 0.05 and `**` p <= 0.01 (two-level test); image_only
  cells hold the mAP alone;
- `main_table.csv`: the same in long form, one row per (dataset, label ratio, method, cf weight),
  columns `TABLE_COLUMNS`;
- `map_vs_label_ratio.png` / `.csv`: mAP vs label ratio per method / cf weight, a panel per dataset;
- `map_vs_cf_weight.png` / `.csv`: mAP vs cf weight where a method ran at 2+ weights at one label
  ratio, image_only drawn as weight 0 (error bars: std over seeds), a panel per dataset;
- `paper_numbers.md` (only when a dataset uses one of the paper's presets): the paper's reported
  image-only -> with-CF mAPs beside ours;
- `report.json`: the datasets included, the runs and datasets skipped with the reason, the paths.

Rows of the main table: one per method; a method that uses CF gets, per dataset and label ratio,
its cell at the dataset's `train.cf_weight` in the row named by the method (or at its only
weight when that weight did not run), and every other weight in a row `method (w=x)` (the CSV's
`row` column; `dataset_weight` is True for the cells in the method's own row).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from collab_iu.atomic import atomic_dir
from collab_iu.evaluate import (
    BASELINE,
    METHOD_ORDER,
    TestSet,
    check_run,
    draw_map_vs_label_ratio,
    evaluate_runs,
    is_finished,
    load_test_set,
    method_label,
    new_figure,
    plain_json,
)
from collab_iu.grid import RunSpec, parse_run_key, uses_cf
from collab_iu.layout import DatasetLayout, dataset_layout
from collab_iu.locks import output_lock
from collab_iu.params import Params

TABLE_COLUMNS = (
    "dataset",
    "label_ratio",
    "method",
    "cf_weight",
    "n_seeds",
    "map_mean",
    "map_std",
    "improvement",
    "improvement_ci_low",
    "improvement_ci_high",
    "p_value",
    "p_seeds",
    "p_paper",
    "mark",
    "row",
    "dataset_weight",
)
OUTPUT_FILES = (
    "main_table.md",
    "main_table.csv",
    "map_vs_label_ratio.png",
    "map_vs_label_ratio.csv",
    "map_vs_cf_weight.png",
    "map_vs_cf_weight.csv",
    "report.json",
)
OUTPUTS = {file.replace(".", "_"): file for file in OUTPUT_FILES}  # e.g. "main_table_md" -> "main_table.md"
PAPER_NUMBERS_MD = "paper_numbers.md"  # only with a dataset on a paper preset; path key "paper_numbers_md"

# The paper's test mAP, image-only -> with CF (uniform confidence), per preset and label ratio.
PAPER_NUMBERS: dict[str, dict[float, tuple[float, float]]] = {
    "paper_pinterest": {0.1: (0.091, 0.146), 0.2: (0.117, 0.169), 0.5: (0.316, 0.338), 1.0: (0.338, 0.355)},
    "paper_movielens": {0.1: (0.263, 0.270), 0.2: (0.274, 0.281), 0.5: (0.310, 0.317), 1.0: (0.324, 0.331)},
    "paper_clothing": {0.1: (0.194, 0.224), 0.2: (0.273, 0.293), 0.5: (0.335, 0.346), 1.0: (0.368, 0.373)},
    "paper_toys": {0.1: (0.078, 0.098), 0.2: (0.167, 0.180), 0.5: (0.338, 0.358), 1.0: (0.397, 0.407)},
}


@dataclass
class _Evaluated:
    """One dataset's evaluation."""

    name: str
    params: Params  # the dataset's
    table: pd.DataFrame  # evaluate_runs' cells
    summary: dict
    runs: list[str]


# ---------------------------------------------------------------------------- finding and evaluating runs


def _skip(dataset: str, run: str | None, reason: str) -> dict:
    return {"dataset": dataset, "run": run, "reason": reason}


def find_finished_runs(layout: DatasetLayout) -> tuple[list[RunSpec], list[dict]]:
    """The finished runs under `runs/` (sorted) and the folders skipped there, with the reason."""
    specs, skipped = [], []
    if not layout.runs.is_dir():
        return specs, skipped
    for folder in sorted(p for p in layout.runs.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            spec = parse_run_key(folder.name)
        except ValueError:
            skipped.append(_skip(layout.name, folder.name, "not a run key"))
            continue
        if spec.key != folder.name:  # e.g. `r0.50` for `r0.5`: not the folder training writes
            skipped.append(_skip(layout.name, folder.name, f"not the canonical run key ({spec.key})"))
        elif not is_finished(folder):
            skipped.append(_skip(layout.name, folder.name, "not finished (a run file is missing)"))
        else:
            specs.append(spec)
    return sorted(specs), skipped


def _usable_runs(layout: DatasetLayout, specs: list[RunSpec], test_set: TestSet) -> tuple[list[RunSpec], list[dict]]:
    """The runs scored on the current test set, and the others with the reason."""
    usable, skipped = [], []
    for spec in specs:
        reason = check_run(layout.runs / spec.key, test_set)
        if reason:
            skipped.append(_skip(layout.name, spec.key, reason))
        else:
            usable.append(spec)
    return usable, skipped


def _evaluate_dataset(params: Params, name: str, repo_root: Path | None) -> tuple[_Evaluated | None, list[dict]]:
    """One dataset's evaluation of every usable finished run (None when there is none) and what was skipped."""
    params = params.for_dataset(name)
    layout = dataset_layout(params, name, repo_root)
    specs, skipped = find_finished_runs(layout)
    if not specs:
        return None, [*skipped, _skip(name, None, f"no finished runs under {layout.runs}")]
    try:
        test_set = load_test_set(layout)
    except FileNotFoundError as exc:
        return None, [*skipped, _skip(name, None, f"cannot read the current split: {exc}")]
    usable, stale = _usable_runs(layout, specs, test_set)
    skipped += stale
    if not usable:
        return None, [*skipped, _skip(name, None, "no usable runs (every finished run was skipped)")]
    try:
        table, summary = evaluate_runs(params, layout, usable, test_set)
    except ValueError as exc:  # runs that passed check_run but still disagree: report, do not stop the others
        return None, [*skipped, _skip(name, None, f"cannot evaluate the runs: {exc}")]
    return _Evaluated(name, params, table, summary, [s.key for s in usable]), skipped


# ---------------------------------------------------------------------------- the report


def build_paper_report(
    params: Params, out_dir: Path, datasets: list[str] | None = None, repo_root: Path | None = None
) -> dict:
    """Evaluate every finished run of each dataset and write the paper's tables and figures to `out_dir`.

    `datasets` defaults to every dataset of params.data.datasets (those without usable runs are
    skipped and reported). Returns {"out_dir", "paths" (output name -> path), "datasets" (names
    included), "skipped" (dicts: dataset, run or None, reason), "table" (the long main table)}.
    Raises FileNotFoundError when no run at all is usable; nothing is written then.
    """
    out_dir = Path(out_dir)
    names = list(params.data.datasets) if datasets is None else list(datasets)
    unknown = [n for n in names if n not in params.data.datasets]
    if unknown:
        raise KeyError(f"unknown datasets {unknown}; params.yaml declares: {', '.join(params.data.datasets)}")
    evaluated, skipped = [], []
    for name in names:
        result, dropped = _evaluate_dataset(params, name, repo_root)
        skipped += dropped
        if result is not None:
            evaluated.append(result)
    if not evaluated:
        reasons = "; ".join(f"{s['dataset']}{'/' + s['run'] if s['run'] else ''}: {s['reason']}" for s in skipped)
        raise FileNotFoundError(f"no usable finished runs in datasets {names} ({reasons}); train and score runs first")

    table = main_table(evaluated)
    paths = {name: out_dir / file for name, file in OUTPUTS.items()}
    paper = _paper_numbers(evaluated, table)
    if paper is not None:
        paths["paper_numbers_md"] = out_dir / PAPER_NUMBERS_MD
    report = _report(evaluated, skipped, paths)
    with output_lock(out_dir), atomic_dir(out_dir) as tmp:
        table.to_csv(tmp / OUTPUTS["main_table_csv"], index=False)
        (tmp / OUTPUTS["main_table_md"]).write_text(main_table_markdown(table, evaluated))
        ratio_series(evaluated).to_csv(tmp / OUTPUTS["map_vs_label_ratio_csv"], index=False)
        weight_series(evaluated).to_csv(tmp / OUTPUTS["map_vs_cf_weight_csv"], index=False)
        _plot_ratio_panels(evaluated, tmp / OUTPUTS["map_vs_label_ratio_png"])
        _plot_weight_panels(evaluated, tmp / OUTPUTS["map_vs_cf_weight_png"])
        if paper is not None:
            (tmp / PAPER_NUMBERS_MD).write_text(paper)
        (tmp / OUTPUTS["report_json"]).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return {
        "out_dir": out_dir,
        "paths": paths,
        "datasets": [e.name for e in evaluated],
        "skipped": skipped,
        "table": table,
    }


def _report(evaluated: list[_Evaluated], skipped: list[dict], paths: dict[str, Path]) -> dict:
    """What report.json holds (plain JSON values)."""
    return plain_json(
        {
            "datasets": [e.name for e in evaluated],
            "details": {
                e.name: {
                    "preset": e.params.data.datasets[e.name].applied_preset,
                    "cf_weight": e.params.train.cf_weight,
                    "n_test_items": e.summary["n_test_items"],
                    "n_labels": e.summary["n_labels"],
                    "significance": e.summary["significance"],
                    "paper_test": e.summary["paper_test"],
                    "selection": e.summary["selection"],
                    "runs": e.runs,
                }
                for e in evaluated
            },
            "skipped": skipped,
            "paths": {name: path.name for name, path in paths.items()},
        }
    )


# ---------------------------------------------------------------------------- the main table


def _dataset_weight(weights: set[float], cf_weight: float) -> float | None:
    """The weight shown in a CF method's own row: the dataset's cf_weight if it ran, else the only weight."""
    chosen = next((w for w in weights if math.isclose(w, cf_weight, rel_tol=1e-9, abs_tol=1e-12)), None)
    if chosen is None and len(weights) == 1:
        chosen = next(iter(weights))
    return chosen


def _rows(table: pd.DataFrame, cf_weight: float) -> tuple[list[str], list[bool]]:
    """Each cell's row label in the main table, and whether it is its method's own row."""
    weights: dict[tuple, set[float]] = {}
    for method, ratio, weight in zip(table["method"], table["label_ratio"], table["cf_weight"]):
        weights.setdefault((method, ratio), set()).add(float(weight))
    labels, own = [], []
    for method, ratio, weight in zip(table["method"], table["label_ratio"], table["cf_weight"]):
        is_own = not uses_cf(method) or float(weight) == _dataset_weight(weights[(method, ratio)], cf_weight)
        labels.append(method_label(method) if is_own else f"{method} (w={weight:g})")
        own.append(is_own)
    return labels, own


def main_table(evaluated: list[_Evaluated]) -> pd.DataFrame:
    """The long form of the main table: one row per dataset, label ratio, method and cf weight (`TABLE_COLUMNS`)."""
    frames = []
    for e in evaluated:
        rows, own = _rows(e.table, e.params.train.cf_weight)
        frames.append(e.table.assign(row=rows, dataset_weight=own)[list(TABLE_COLUMNS)])
    table = pd.concat(frames, ignore_index=True)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    datasets = {e.name: i for i, e in enumerate(evaluated)}
    key = pd.DataFrame(
        {
            "ratio": table["label_ratio"],
            "method": table["method"].map(lambda m: order.get(m, len(order))),
            "own": ~table["dataset_weight"],  # the method's own row first, then one row per other weight
            "weight": table["cf_weight"].where(~table["dataset_weight"], 0.0),
            "dataset": table["dataset"].map(datasets),
        }
    )
    return table.loc[key.sort_values(list(key.columns), kind="stable").index].reset_index(drop=True)


def cell_text(row: pd.Series) -> str:
    """`0.146 (+60.4 %**)`: mAP with the improvement over image_only and its mark; the mAP alone for image_only."""
    text = f"{row['map_mean']:.3f}"
    if row["method"] == BASELINE or not math.isfinite(row["improvement"]):
        return text
    return f"{text} ({row['improvement'] * 100:+.1f} %{row['mark']})"


def _weights_note(table: pd.DataFrame, evaluated: list[_Evaluated]) -> str:
    """Which cf weight each dataset's CF-method rows show."""
    parts = []
    for e in evaluated:
        own = table[(table["dataset"] == e.name) & table["dataset_weight"] & table["method"].map(uses_cf)]
        shown = ", ".join(f"{m} w={w:g}" for m, w in sorted(set(zip(own["method"], own["cf_weight"]))))
        parts.append(f"{e.name} (train.cf_weight {e.params.train.cf_weight:g}): {shown or 'none'}")
    return "; ".join(parts)


def main_table_markdown(table: pd.DataFrame, evaluated: list[_Evaluated]) -> str:
    """The main table as markdown: one block per label ratio, method rows x dataset columns."""
    names = [e.name for e in evaluated]
    sig = evaluated[0].summary["significance"]
    lines = [
        "# Test mAP by label ratio",
        "",
        f"Cell: mean test mAP over seeds (improvement over image_only of that dataset and label ratio; `*` p <= 0.05, "
        f"`**` p <= 0.01 by the two-level test over training seeds and {sig['resamples']} with-replacement resamples "
        "of the test items; main_table.csv also has the paper's subsample t-test as `p_paper`, for comparison only). "
        "`-`: not run. Rows named by a CF method show the dataset's train.cf_weight, or the only "
        "weight run when that one was not; rows `method (w=x)` show the other weights; `with_cf (val-selected)`: per "
        "seed, image_only or with_cf at a weight, whichever had the best validation mAP.",
        "",
        f"CF weights in the methods' own rows: {_weights_note(table, evaluated)}.",
        "",
        "Test items: "
        + ", ".join(f"{e.name} {e.summary['n_test_items']} ({e.summary['n_labels']} labels)" for e in evaluated),
    ]
    for ratio, block in table.groupby("label_ratio", sort=True):
        lines += ["", f"## Label ratio {ratio:g}", "", "| method | " + " | ".join(names) + " |"]
        lines.append("|---|" + "---:|" * len(names))
        cells = {(r["row"], r["dataset"]): cell_text(r) for _, r in block.iterrows()}
        for row in dict.fromkeys(block["row"]):
            lines.append(f"| {row} | " + " | ".join(cells.get((row, n), "-") for n in names) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- series and figures


def _series_label(method: str, weight: float) -> str:
    return f"{method} (w={weight:g})" if uses_cf(method) else method


def ratio_series(evaluated: list[_Evaluated]) -> pd.DataFrame:
    """mAP vs label ratio, long form: dataset, series, method, cf_weight, label_ratio, n_seeds, map_mean, map_std."""
    table = pd.concat([e.table for e in evaluated], ignore_index=True)
    table = table.assign(series=[_series_label(m, w) for m, w in zip(table["method"], table["cf_weight"])])
    columns = ["dataset", "series", "method", "cf_weight", "label_ratio", "n_seeds", "map_mean", "map_std"]
    return table[columns].sort_values(["dataset", "series", "label_ratio"], kind="stable").reset_index(drop=True)


def _sweep(table: pd.DataFrame) -> pd.DataFrame:
    """One dataset's cells where a CF method ran at 2+ weights at a label ratio, with image_only at weight 0."""
    cf = table[table["method"].map(uses_cf)]
    counts = cf.groupby(["method", "label_ratio"])["cf_weight"].transform("nunique")
    swept = cf[counts >= 2]
    base = table[(table["method"] == BASELINE) & table["label_ratio"].isin(set(swept["label_ratio"]))]
    return pd.concat([base.assign(cf_weight=0.0), swept], ignore_index=True)


def weight_series(evaluated: list[_Evaluated]) -> pd.DataFrame:
    """mAP vs cf weight, long form (image_only as weight 0); empty with these columns when no weight sweep ran."""
    columns = ["dataset", "label_ratio", "method", "cf_weight", "n_seeds", "map_mean", "map_std", "improvement", "mark"]
    frames = [_sweep(e.table)[columns] for e in evaluated]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return table.sort_values(["dataset", "label_ratio", "method", "cf_weight"], kind="stable").reset_index(drop=True)


def _panels(n: int):
    fig = new_figure(width=1.0 + 4.8 * n, height=4.2)
    return fig, [fig.add_subplot(1, n, i + 1) for i in range(n)]


def _lines(table: pd.DataFrame) -> pd.DataFrame:
    """The cells of the series run at 2+ label ratios (single points, e.g. a cf-weight sweep, are in the other figure)."""
    counts = table.groupby(["method", "cf_weight"])["label_ratio"].transform("nunique")
    return table[counts >= 2] if (counts >= 2).any() else table


def _plot_ratio_panels(evaluated: list[_Evaluated], dest: Path) -> None:
    """mAP vs label ratio, a panel per dataset."""
    fig, axes = _panels(len(evaluated))
    for ax, e in zip(axes, evaluated):
        draw_map_vs_label_ratio(ax, _lines(e.table), title=e.name)
    fig.tight_layout()
    fig.savefig(dest, format="png")


def _draw_weight_panel(ax, sweep: pd.DataFrame, title: str) -> None:
    """mAP vs cf weight per CF method and label ratio, each line starting at image_only (weight 0)."""
    if sweep.empty:
        ax.text(0.5, 0.5, "no cf-weight sweep", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title(title)
        return
    for (method, ratio), cells in sweep[sweep["method"] != BASELINE].groupby(["method", "label_ratio"]):
        base = sweep[(sweep["method"] == BASELINE) & (sweep["label_ratio"] == ratio)]
        line = pd.concat([base, cells.sort_values("cf_weight")])
        ax.errorbar(
            line["cf_weight"],
            line["map_mean"],
            yerr=line["map_std"].fillna(0.0),
            marker="o",
            capsize=3,
            label=f"{method}, ratio {ratio:g}",
        )
        if len(base):
            ax.plot(0.0, float(base["map_mean"].iloc[0]), marker="s", color="black", linestyle="none")
    ax.set_xlabel("cf weight (0 = image_only)")
    ax.set_ylabel("test mAP (mean over seeds ± std)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plot_weight_panels(evaluated: list[_Evaluated], dest: Path) -> None:
    """mAP vs cf weight, a panel per dataset."""
    fig, axes = _panels(len(evaluated))
    for ax, e in zip(axes, evaluated):
        _draw_weight_panel(ax, _sweep(e.table), e.name)
    fig.tight_layout()
    fig.savefig(dest, format="png")


# ---------------------------------------------------------------------------- the paper's numbers


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def _paper_numbers(evaluated: list[_Evaluated], table: pd.DataFrame) -> str | None:
    """The paper's image-only -> with-CF mAPs beside ours, for the datasets on a paper preset (None if none)."""
    blocks = []
    for e in evaluated:
        preset = e.params.data.datasets[e.name].applied_preset
        if preset not in PAPER_NUMBERS:
            continue
        paper = PAPER_NUMBERS[preset]
        own = table[(table["dataset"] == e.name) & table["dataset_weight"]]
        ours = {(m, r): row for m, r, row in zip(own["method"], own["label_ratio"], own.to_dict("records"))}
        blocks += [
            f"## {e.name} (preset {preset}, cf weight {e.params.train.cf_weight:g})",
            "",
            "| label ratio | paper image-only | paper with CF | paper improvement "
            "| ours image_only | ours with_cf | ours improvement |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for ratio in sorted(set(paper) | {r for m, r in ours if m in (BASELINE, "with_cf")}):
            p_base, p_cf = paper.get(ratio, (None, None))
            p_imp = f"{(p_cf / p_base - 1) * 100:+.1f} %" if p_base else "-"
            base, cf = ours.get((BASELINE, ratio)), ours.get(("with_cf", ratio))
            imp = "-"
            if cf is not None and math.isfinite(cf["improvement"]):
                imp = f"{cf['improvement'] * 100:+.1f} %{cf['mark']}"
            blocks.append(
                f"| {ratio:g} | {_fmt(p_base)} | {_fmt(p_cf)} | {p_imp} | "
                f"{_fmt(base['map_mean'] if base else None)} | {_fmt(cf['map_mean'] if cf else None)} | {imp} |"
            )
        blocks.append("")
    if not blocks:
        return None
    header = [
        "# Our results beside the paper's",
        "",
        "The paper's test mAP, image-only -> with CF (uniform confidence), as reported (Bibas et al., CIKM 2022), "
        "and ours at the dataset's cf weight (mean over seeds; `*`/`**`: two-level test over seeds and test items, "
        "p <= 0.05 / 0.01). "
        "The paper kept the epoch with the best test mAP and fit CF on the test items' interactions; we select on a "
        "validation split, so our numbers are not expected to match exactly.",
        "",
    ]
    return "\n".join(header + blocks)
