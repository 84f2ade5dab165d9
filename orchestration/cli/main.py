"""The `collab-iu` command line: one subcommand per step, plus the main job `run`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from collab_iu.dataset import CFOnlyDatasetError, DatasetError
from collab_iu.params import ParamsError, load_params
from collab_iu.splits import SplitError
from collab_iu.steps import DATA_STEPS, STEPS
from orchestration.cli.options import add_common_options
from orchestration.errors import MaterializeError

EXPECTED_ERRORS = (ParamsError, DatasetError, CFOnlyDatasetError, SplitError, FileNotFoundError, KeyError)


def _expected_errors() -> tuple[type[Exception], ...]:
    from collab_iu.importers import RawFormatError

    return (*EXPECTED_ERRORS, RawFormatError, MaterializeError)  # a failed Dagster run reads like the core's errors


def _print_stage(name: str, report: dict, seconds: float) -> None:
    print(f"[{name}] done in {seconds:.1f}s")
    for line in _summary_lines(name, report):
        print(f"  {line}")


def _summary_lines(name: str, r: dict) -> list[str]:
    if name == "prepare":
        lines = [
            f"{r['items']} items ({r['items_with_image']} with image, {r['labelled_items']} labelled), "
            f"{r['users']} users, {r['interactions']} interactions, {r['labels']} labels",
            f"fingerprint {r['fingerprint']}",
        ]
        lines += [f"filtered {k}: {v['count']}" for k, v in r["filtered"].items()]
        if r.get("cf_only"):
            lines.append("for the CF diagnosis only (prepare.cf_only): split and cf run; cache and training refuse it")
        return lines
    if name == "split":
        return [", ".join(f"{k} {v}" for k, v in r["items"].items()) + f" items; labelled train {r['labelled_train_items']}"]
    if name == "cf":
        from collab_iu.cf import probe_line

        lines = [f"{r['algorithm']} dim {r['dim']}: {r['items_with_vector']}/{r['items']} items with a vector"]
        lines.append(probe_line(r["label_probe"]))
        if "recommendation" in r:
            rec = r["recommendation"]
            lines.append(
                "recommendation "
                + ", ".join(f"{k} {v:.3f} (popularity {rec['popularity'][k]:.3f})" for k, v in rec["model"].items())
            )
        return lines
    if name == "cache":
        return [f"{r['images']} images at {r['image_size']}px, {r['failed']['count']} failed, {r['bytes'] / 1e6:.1f} MB"]
    return []


def cmd_step(args: argparse.Namespace) -> int:
    """One data step (prepare, split, cf, cache) of one dataset, as a Dagster run with its blocking checks."""
    from collab_iu.layout import dataset_layout
    from collab_iu.stages import ensure_trainable, read_report
    from collab_iu.steps import step
    from orchestration.materialize import materialize

    params = _through_dagster(args)
    layout = dataset_layout(params, args.dataset)
    chosen = step(args.command)
    if chosen.name == "cache":
        ensure_trainable(layout)  # a clear refusal before Dagster starts
    start = time.perf_counter()
    materialize([chosen.asset], layout.name)
    _print_stage(chosen.name, read_report(layout.base / chosen.folder), time.perf_counter() - start)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """The grid of the selected family (or one run), as one Dagster run per model."""
    from collab_iu.grid import grid_runs
    from collab_iu.layout import dataset_layout
    from collab_iu.stages import ensure_trainable
    from orchestration.pipeline import run_pipeline

    params = _through_dagster(args)
    layout = dataset_layout(params, args.dataset)
    ensure_trainable(layout)  # before any worker starts (train_run checks too)
    keys = [args.run] if args.run else [spec.key for spec in grid_runs(params.for_dataset(layout.name))]
    start = time.perf_counter()
    run_pipeline(layout.name, [], keys, evaluate=False, workers=params.experiment.workers)
    print(f"[train] {len(keys)} run(s) done in {time.perf_counter() - start:.1f}s")
    return 0


def _print_evaluation(result: dict) -> None:
    from collab_iu.evaluate import TABLE_LEGEND, format_table, headline_sentence

    print(format_table(result["table"]))
    print(f"\n{TABLE_LEGEND}")
    headline = result["headline"]
    if headline:
        print(f"\n{headline_sentence(headline)}")
    print("\nwritten:")
    for path in result["paths"].values():
        print(f"  {path}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from collab_iu.evaluate import load_evaluation
    from collab_iu.layout import dataset_layout
    from collab_iu.stages import ensure_trainable
    from orchestration.materialize import materialize

    params = _through_dagster(args)
    layout = dataset_layout(params, args.dataset)
    ensure_trainable(layout)  # no models to evaluate on a CF-only dataset
    materialize(["evaluation"], layout.name)
    _print_evaluation(load_evaluation(params, layout.name))
    return 0


def _through_dagster(args: argparse.Namespace):
    """Validate params (+ overrides) and make them what the Dagster definitions load in this process."""
    from orchestration.defs.project import use_params

    params = load_params(args.params, args.overrides)
    use_params(params)
    return params


def cmd_run(args: argparse.Namespace) -> int:
    from collab_iu.evaluate import load_evaluation
    from collab_iu.grid import grid_runs
    from collab_iu.layout import dataset_layout
    from collab_iu.stages import ensure_trainable, read_report
    from orchestration.pipeline import CF_ASSETS, DATA_ASSETS, run_pipeline

    params = _through_dagster(args)
    layout = dataset_layout(params, args.dataset)
    params = params.for_dataset(layout.name)
    start = time.perf_counter()
    say = lambda text: print(f"{text}  ({time.perf_counter() - start:.0f}s)", flush=True)  # noqa: E731
    cf_only = params.prepare.cf_only  # the CF diagnosis only: nothing is cached, trained or evaluated
    run_keys = [] if cf_only else [spec.key for spec in grid_runs(params)]
    data_assets = CF_ASSETS if cf_only else DATA_ASSETS
    run_pipeline(layout.name, data_assets, run_keys, not cf_only, params.experiment.workers, report=say)
    if cf_only:  # the diagnosis ran: show it, then refuse like the cache and training (exit 2)
        for line in _summary_lines("cf", read_report(layout.cf)):
            print(f"  {line}")
        ensure_trainable(layout)
    print()
    _print_evaluation(load_evaluation(params, layout.name))
    print(f"  models: {layout.runs}/<run key>/best.pt (predict with: collab-iu predict --model {layout.runs}/<run key> IMAGE...)")
    print("  Dagster runs: `dagster dev` from the repository root, then Runs in the UI")
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    from collab_iu.grid import grid_runs
    from orchestration.defs.partitions import model_partition_key
    from orchestration.materialize import UNPARTITIONED, materialize

    params = _through_dagster(args)
    dataset = args.dataset or params.data.default
    for asset in args.assets:
        if asset in UNPARTITIONED:
            keys = [None]
        elif args.partition:
            keys = [args.partition]
        elif asset == "trained_model":
            keys = [model_partition_key(dataset, spec.key) for spec in grid_runs(params.for_dataset(dataset))]
        else:
            keys = [dataset]
        for key in keys:
            start = time.perf_counter()
            materialize([asset], key)
            where = f" [{key}]" if key is not None else ""
            print(f"[materialize] {asset}{where} in {time.perf_counter() - start:.1f}s")
    return 0


def cmd_dvc_yaml(args: argparse.Namespace) -> int:
    from orchestration.dvc_yaml import render, write_dvc_yaml

    params = load_params(args.params, args.overrides)
    dest = Path("dvc.yaml")
    if args.check:
        if dest.exists() and dest.read_text() == render(params):
            print("dvc.yaml is up to date")
            return 0
        print("dvc.yaml differs from the asset graph and params.yaml: run `collab-iu dvc-yaml`", file=sys.stderr)
        return 1
    print("wrote dvc.yaml" if write_dvc_yaml(params, dest) else "dvc.yaml is up to date")
    return 0


PAPER_PRESET = {"pinterest": "paper_pinterest", "movielens": "paper_movielens", "amazon": "paper_clothing"}


def _declared_or_new(params, kind: str, name: str, source: Path | None, images: Path | None):
    """params with dataset `name` as an import of `kind` (declared in params.yaml, or from --source)."""
    from collab_iu.params import params_from_dict

    declared = params.data.datasets.get(name)
    if declared is not None and declared.source != kind:
        raise ParamsError(f"dataset {name!r} is declared in params.yaml with source {declared.source!r}, not {kind!r}")
    if source is None and declared is None:
        raise ParamsError(f"dataset {name!r} is not in params.yaml: give --source RAW_DIR")
    tree = params.model_dump(mode="json")
    entry = tree["data"]["datasets"].setdefault(name, {"source": kind})
    if source is not None:
        entry["path"] = str(source)
    if images is not None:
        entry["images"] = str(images)
    return params_from_dict(tree, source="import"), declared is None


def cmd_import(args: argparse.Namespace) -> int:
    from collab_iu.importers import format_import_report
    from collab_iu.stages import import_dataset

    params, new = _declared_or_new(load_params(args.params, args.overrides), args.kind, args.name, args.source, args.images)
    start = time.perf_counter()
    report = import_dataset(params, args.name, force=args.force)
    no_images = not report["kept"]["images"] and not report["kept"].get("image_urls")
    print(f"[import] {args.kind} -> {Path(params.data.root) / args.name / 'raw'} in {time.perf_counter() - start:.1f}s")
    print(format_import_report(report))
    if new:
        spec = params.data.datasets[args.name]
        print(f"\nadd the dataset to params.yaml (data.datasets) to prepare, train and evaluate it:\n\n  {args.name}:")
        print(f"    source: {args.kind}\n    path: {spec.path}")
        if spec.images:
            print(f"    images: {spec.images}")
        print(f"    preset: {PAPER_PRESET[args.kind]}  # the paper's settings (see presets); omit for the global ones")
        if no_images:
            print("    overrides: {prepare.cf_only: true}  # no images: the CF diagnosis only (prepare, split, cf)")
    if report["kept"].get("image_urls"):
        print(f"\nimages come as URLs: collab-iu fetch-images --dataset {args.name}")
    elif no_images:
        print(
            "\nno images: training needs them (--images FOLDER). Without them, prepare.cf_only: true prepares the "
            "dataset for the CF diagnosis only: do the interactions carry label information? (README)"
        )
    return 0


def cmd_fetch_images(args: argparse.Namespace) -> int:
    from collab_iu.fetch_images import fetch_dataset_images, format_fetch_report
    from collab_iu.layout import dataset_layout
    from collab_iu.stages import source_folder

    if args.folder is not None:
        folder = args.folder
    else:
        params = load_params(args.params, args.overrides)
        folder = source_folder(params, dataset_layout(params, args.dataset))
    report = fetch_dataset_images(
        folder, workers=args.workers, retries=args.retries, backoff=args.backoff, timeout=args.timeout, progress=True
    )
    print(format_fetch_report(report))
    return 1 if report["failed"] and args.strict else 0


def cmd_report(args: argparse.Namespace) -> int:
    from collab_iu.layout import paper_report_dir
    from collab_iu.paper_report import build_paper_report

    params = load_params(args.params, args.overrides)
    out = args.out or paper_report_dir(params)
    result = build_paper_report(params, out, args.datasets or None)
    print(f"[report] datasets: {', '.join(result['datasets'])}")
    for item in result["skipped"]:
        print(f"  skipped: {item}")
    print("written:")
    for path in result["paths"].values():
        print(f"  {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from collab_iu.validate import validate_dataset

    params = load_params(args.params, args.overrides)
    validated = validate_dataset(args.folder, params.prepare, params.split.min_items_per_label)
    print(json.dumps({k: v for k, v in validated.report.items() if k != "label_counts"}, indent=2))
    print(f"{args.folder}: valid")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from collab_iu.synthetic import generate_synthetic

    params = load_params(args.params, args.overrides)
    summary = generate_synthetic(params.synthetic, args.dest)
    print(json.dumps(summary, indent=2))
    print(f"wrote the synthetic dataset to {args.dest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collab-iu",
        description="Collaborative Image Understanding: image classifiers that also learn from user interactions.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run", help="the main job: prepare, split, cf, cache, train the grid, evaluate (default: the embedded dataset)"
    )
    add_common_options(p)
    p.set_defaults(func=cmd_run)

    for data_step in DATA_STEPS:
        p = sub.add_parser(data_step.name, help=data_step.summary, description=data_step.summary)
        add_common_options(p)
        p.set_defaults(func=cmd_step)

    p = sub.add_parser(
        "materialize",
        help="materialise Dagster assets by name (recorded in the UI's run list)",
        description="Materialise assets of the Dagster project with the Python API against the persistent "
        f"instance (.dagster/). Assets: {', '.join(s.asset for s in STEPS)} (the last unpartitioned).",
    )
    p.add_argument("assets", nargs="+", metavar="ASSET", help="asset name(s), materialised in the order given")
    p.add_argument(
        "--partition", metavar="KEY",
        help="partition key: a dataset name, or <dataset>|<run key> for trained_model "
        "(default: data.default; for trained_model every run of the grid)",
    )  # fmt: skip
    add_common_options(p)
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("train", help="train the grid of experiment.family (or one run) into data/<dataset>/runs/")
    p.add_argument("--run", metavar="RUN_KEY", help="one run, e.g. with_cf-r0.05-w1-s0 (default: the whole grid)")
    add_common_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="tables, statistics and plots over the grid's runs: data/<dataset>/evaluation/")
    add_common_options(p)
    p.set_defaults(func=cmd_evaluate)

    from orchestration.cli.predict import add_predict_parser

    add_predict_parser(sub)

    p = sub.add_parser("dvc-yaml", help="generate dvc.yaml from the asset graph and params.yaml")
    p.add_argument("--check", action="store_true", help="only check that dvc.yaml is up to date (exit 1 if not)")
    add_common_options(p, dataset=False)
    p.set_defaults(func=cmd_dvc_yaml)

    text = "import a paper dataset's raw files into the canonical format: data/<name>/raw/"
    p = sub.add_parser("import", help=text, description=text + ". Prints what was kept and dropped, and why.")
    p.add_argument("kind", choices=["pinterest", "movielens", "amazon"])
    p.add_argument("--name", required=True, help="dataset name (declared in params.yaml data.datasets, or new)")
    p.add_argument("--source", type=Path, help="folder of the raw files (default: the dataset's path in params.yaml)")
    p.add_argument("--images", type=Path, help="folder of <item id>.jpg images (default: <source>/images or /posters)")
    p.add_argument("--force", action="store_true", help="import again even if the raw files did not change")
    add_common_options(p, dataset=False)
    p.set_defaults(func=cmd_import)

    text = "download a dataset's image URLs (image_urls.csv) into its images/ folder, resumably"
    p = sub.add_parser("fetch-images", help=text, description=text + "; items.parquet then points at the valid images.")
    p.add_argument("--folder", type=Path, help="a canonical dataset folder with image_urls.csv (default: the dataset's)")
    p.add_argument("--workers", type=int, default=8, help="parallel downloads (default: %(default)s)")
    p.add_argument("--retries", type=int, default=3, help="attempts per URL on errors worth retrying (default: %(default)s)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each time")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default: %(default)s)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any image failed")
    add_common_options(p)
    p.set_defaults(func=cmd_fetch_images)

    p = sub.add_parser("report", help="the paper's tables and figures from every finished run of the datasets")
    p.add_argument("--datasets", nargs="*", metavar="NAME", help="datasets to include (default: all with runs)")
    p.add_argument("--out", type=Path, help="output folder (default: <data.root>/paper_report)")
    add_common_options(p, dataset=False)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("validate", help="check a dataset folder in the canonical format; writes nothing")
    p.add_argument("folder", type=Path, help="folder with items.parquet|csv, interactions.parquet|csv and images")
    add_common_options(p, dataset=False)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("generate-synthetic", help="write the embedded synthetic dataset (params: synthetic.*) to DEST")
    p.add_argument("dest", type=Path, help="output folder (replaced whole)")
    add_common_options(p, dataset=False)
    p.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _expected_errors() as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
