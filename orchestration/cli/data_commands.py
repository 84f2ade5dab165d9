"""Commands around the pipeline: importing and fetching datasets, checking and generating them, the paper's
report, dvc.yaml."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from collab_iu.params import IMPORTED_SOURCES, ParamsError, load_params
from orchestration.cli.options import add_common_options


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

    params, new = _declared_or_new(
        load_params(args.params, args.overrides), args.kind, args.name, args.source, args.images
    )
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
        folder,
        workers=args.workers,
        retries=args.retries,
        backoff=args.backoff,
        timeout=args.timeout,
        deadline=args.deadline,
        progress=True,
    )
    print(format_fetch_report(report))
    return 1 if report["failed"] and args.strict else 0


def _positive_seconds(text: str) -> float:
    """argparse type: a number of seconds > 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return seconds


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


def add_dataset_parsers(sub) -> None:
    """`dvc-yaml`, `import`, `fetch-images`, `report`, `validate`, `generate-synthetic`."""
    p = sub.add_parser("dvc-yaml", help="generate dvc.yaml from the asset graph and params.yaml")
    p.add_argument("--check", action="store_true", help="only check that dvc.yaml is up to date (exit 1 if not)")
    add_common_options(p, dataset=False)
    p.set_defaults(func=cmd_dvc_yaml)

    text = "import a paper dataset's raw files into the canonical format: data/<name>/raw/"
    p = sub.add_parser("import", help=text, description=text + ". Prints what was kept and dropped, and why.")
    p.add_argument("kind", choices=IMPORTED_SOURCES)
    p.add_argument("--name", required=True, help="dataset name (declared in params.yaml data.datasets, or new)")
    p.add_argument("--source", type=Path, help="folder of the raw files (default: the dataset's path in params.yaml)")
    p.add_argument("--images", type=Path, help="folder of <item id>.jpg images (default: <source>/images or /posters)")
    p.add_argument("--force", action="store_true", help="import again even if the raw files did not change")
    add_common_options(p, dataset=False)
    p.set_defaults(func=cmd_import)

    text = "download a dataset's image URLs (image_urls.csv) into its images/ folder, resumably"
    p = sub.add_parser("fetch-images", help=text, description=text + "; items.parquet then points at the valid images.")
    p.add_argument(
        "--folder", type=Path, help="a canonical dataset folder with image_urls.csv (default: the dataset's)"
    )
    p.add_argument("--workers", type=int, default=8, help="parallel downloads (default: %(default)s)")
    p.add_argument(
        "--retries", type=int, default=3, help="attempts per URL on errors worth retrying (default: %(default)s)"
    )
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each time")
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds each read may wait for data (default: %(default)s)"
    )
    p.add_argument(
        "--deadline",
        type=_positive_seconds,
        default=120.0,
        help="seconds one download may take in all, then it fails as 'deadline' (default: %(default)s)",
    )
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
