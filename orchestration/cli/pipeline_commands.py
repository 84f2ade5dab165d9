"""The pipeline's commands: `run`, one per data step, `train`, `evaluate`, `materialize`; each runs Dagster runs
of the asset graph (orchestration/materialize.py, orchestration/pipeline.py), with the blocking checks."""

from __future__ import annotations

import argparse
import os
import time

from collab_iu.params import load_params
from collab_iu.steps import DATA_STEPS, STEPS
from orchestration.cli.options import add_common_options


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
        return [
            ", ".join(f"{k} {v}" for k, v in r["items"].items()) + f" items; labelled train {r['labelled_train_items']}"
        ]
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
        return [
            f"{r['images']} images at {r['image_size']}px, {r['failed']['count']} failed, {r['bytes'] / 1e6:.1f} MB"
        ]
    if name == "features":
        if "skipped" in r:
            return [f"nothing to do: {r['skipped']}"]
        shape = " x ".join(map(str, r["shape"]))
        return [
            f"{r['key']}: {shape} ({r['dtype']}), {r['bytes'] / 1e6:.1f} MB" + (", reused" if r.get("reused") else "")
        ]
    return []


def cmd_step(args: argparse.Namespace) -> int:
    """One data step (prepare, split, cf, cache, features) of one dataset, as a Dagster run with its blocking checks."""
    from collab_iu.artifacts import read_report
    from collab_iu.features import NOT_USED
    from collab_iu.layout import dataset_layout
    from collab_iu.stages import ensure_trainable, output_folder
    from collab_iu.steps import step
    from orchestration.materialize import materialize

    params = _through_dagster(args)
    layout = dataset_layout(params, args.dataset)
    chosen = step(args.command)
    if chosen.name in ("cache", "features"):
        ensure_trainable(layout)  # a clear refusal before Dagster starts
    start = time.perf_counter()
    materialize([chosen.asset], layout.name)
    folder = output_folder(chosen.name, layout, params)
    report = read_report(folder) if folder else {"skipped": NOT_USED}
    _print_stage(chosen.name, report, time.perf_counter() - start)
    return 0


def _torchrun_rank() -> int:
    """This process's torchrun rank; -1 when not launched by torchrun (no torch import here)."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else -1


def _train_shares(params, dataset: str, keys: list[str]) -> int:
    """A torchrun rank above 0: the same runs, in the same order, through the core (collab_iu/distributed.py):
    rank 0 decides, validates, writes and reports; this rank computes its share of every batch."""
    from collab_iu.experiment import train_run
    from orchestration.defs.project import repo_root

    for key in keys:
        train_run(params, key, dataset, repo_root(), progress=False)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """The grid of the selected family (or one run), as one Dagster run per model."""
    from collab_iu.artifacts import read_report
    from collab_iu.grid import RunKeyError, grid_runs, parse_run_key
    from collab_iu.layout import dataset_layout
    from collab_iu.stages import ensure_trainable, output_folder
    from orchestration.pipeline import run_pipeline

    canonical = parse_run_key(args.run).key if args.run else None  # a malformed key: refused before anything
    params = _through_dagster(args)
    layout = dataset_layout(params, args.dataset)
    grid = [spec.key for spec in grid_runs(params.for_dataset(layout.name))]
    if args.run and args.run not in grid:
        family = params.for_dataset(layout.name).experiment.family
        shown = ", ".join(grid[:8]) + (f", ... ({len(grid)} in all)" if len(grid) > 8 else "")
        hint = f"write it as {canonical!r}" if canonical in grid else f"choose one of {shown}"
        raise RunKeyError(
            f"run key {args.run!r} is not in the grid of dataset {layout.name!r} (experiment.family {family!r}): {hint}"
        )
    ensure_trainable(layout)  # a dataset prepared for the CF diagnosis only: refused, with why
    for data_step in DATA_STEPS:  # every input, named with the command that writes it, before any worker starts
        folder = output_folder(data_step.name, layout, params)
        if folder is not None:
            read_report(folder)
    keys = [args.run] if args.run else grid
    if _torchrun_rank() > 0:  # under torchrun: rank 0 runs the Dagster runs; this rank trains its share of each
        return _train_shares(params, layout.name, keys)
    start = time.perf_counter()
    run_pipeline(
        layout.name, [], keys, evaluate=False, workers=1 if _torchrun_rank() == 0 else params.experiment.workers
    )
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
    """Validate params (+ overrides), make them what the Dagster definitions load in this process, and tag
    this command's runs with one invocation id."""
    from orchestration.defs.project import start_invocation, use_params

    params = load_params(args.params, args.overrides)
    use_params(params)
    start_invocation(replace=getattr(args, "replace", False))
    return params


def cmd_run(args: argparse.Namespace) -> int:
    from collab_iu.artifacts import read_report
    from collab_iu.evaluate import load_evaluation
    from collab_iu.grid import grid_runs
    from collab_iu.layout import dataset_layout
    from collab_iu.stages import ensure_trainable
    from orchestration.defs.project import repo_root
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
    print(
        f"  models: {layout.runs}/<run key>/best.pt (predict with: collab-iu predict --model {layout.runs}/<run key> IMAGE...)"
    )
    print("  Dagster runs: `dagster dev` from the repository root, then Runs in the UI")
    if str(params.data.root) == "data" and (repo_root() / "dvc.yaml").exists():  # the outputs dvc.yaml names
        print(f"  DVC: `dvc commit -f --with-deps evaluate-{layout.name}` records these outputs in dvc.lock (README)")
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    from collab_iu.grid import grid_runs
    from orchestration.defs.partitions import model_partition_key, parse_model_partition_key
    from orchestration.materialize import UNPARTITIONED, materialize

    params = _through_dagster(args)
    dataset = args.dataset or params.data.default
    for asset in args.assets:
        if asset in UNPARTITIONED:
            keys = [None]
        elif args.partition:
            keys = [parse_model_partition_key(args.partition) if asset == "trained_model" else args.partition]
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


REPLACE_HELP = "retrain finished runs whose configuration changed (without it they are kept, and the command stops)"


def add_pipeline_parsers(sub) -> None:
    """`run`, the data steps, `materialize`, `train` and `evaluate`."""
    p = sub.add_parser(
        "run", help="the main job: prepare, split, cf, cache, train the grid, evaluate (default: the embedded dataset)"
    )
    add_common_options(p)
    p.add_argument("--replace", action="store_true", help=REPLACE_HELP)
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
        "--partition",
        metavar="KEY",
        help="partition key: a dataset name, or <dataset>|<run key> for trained_model "
        "(default: data.default; for trained_model every run of the grid)",
    )
    add_common_options(p)
    p.add_argument("--replace", action="store_true", help=REPLACE_HELP)
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("train", help="train the grid of experiment.family (or one run) into data/<dataset>/runs/")
    p.add_argument("--run", metavar="RUN_KEY", help="one run, e.g. with_cf-r0.05-w8-s0 (default: the whole grid)")
    add_common_options(p)
    p.add_argument("--replace", action="store_true", help=REPLACE_HELP)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="tables, statistics and plots over the grid's runs: data/<dataset>/evaluation/")
    add_common_options(p)
    p.set_defaults(func=cmd_evaluate)
