"""Weights & Biases logging, attached to the core from outside: one W&B run per trained model, CF fit and
evaluation. The core never imports this module: training reports through a `TrainingObserver`
(`WandbObserver` here), and the CF and evaluation steps return reports that `log_cf` and
`log_evaluation` log.

`wandb` is imported here only, and lazily: the core and this layer run without it installed. A W&B
problem (the package missing, an unreachable server, an error from any call) emits one
`TrackingWarning` (a UserWarning, through `warnings.warn`) and turns that run's tracker
into a no-op: W&B never stops or fails a stage.

Mode (`params.wandb.mode`): online, offline or disabled as given; `auto` takes
$WANDB_MODE when it is set, else online when an API key is configured ($WANDB_API_KEY or
a netrc entry for the W&B host), else offline. An online run whose server cannot be
reached within `wandb.timeout` seconds is logged offline instead (with a warning).
Runs go to `<dir>/wandb/`, dir being wandb.dir, else $WANDB_DIR, else the repository root
(`offline-run-*` folders for offline runs, uploaded later with `wandb sync`); W&B's cache
and artifact staging go to `<dir>/wandb/.cache` and `.data` unless $WANDB_CACHE_DIR /
$WANDB_DATA_DIR say otherwise (W&B's config dir, which holds a user's settings, is left alone).

Runs are grouped `<dataset>/<wandb.experiment>`, with job types `train`, `cf` and `evaluation`.

Train runs plot every per-epoch value against `epoch` (`define_metric`; cf_pretrain's first stage against
`pretrain/epoch`). While a run trains, and in a run that failed, the summary holds W&B's aggregates: `val_map`,
`val_cf_r2`, `val_cf_cosine` as `{"max": ...}`, `loss_*` as `{"min": ...}`. When the run is scored, its summary
`val_map`, `val_cf_r2`, `val_cf_cosine` become plain numbers from metrics.json: those of the best validation
epoch (the kept model): val_map is then the maximum of the run's history. A resumed run's W&B run logs only
the epochs after the resume; its summary is still the best of all epochs, and its `epoch_history` table
(from train.json) shows them all. The `loss_*` aggregates stay.

Artifacts and lineage (dataset -> cf run -> cf_vectors -> train run -> model):
- `dataset-<dataset>` (type `dataset`): every file of `prepared/` and `split/`;
- `cf_vectors-<dataset>` (type `cf_vectors`): every file of `cf/`;
- `image_cache-<dataset>` (type `image_cache`): `cache/index.parquet` and `cache/report.json` only. The image
  array `cache/images.npy` is left out (gigabytes on a paper dataset, too slow to checksum for every run); its
  path and size are in the artifact's metadata.
These three hold `file://` references with checksums (`add_reference(..., checksum=True)`): W&B stores each
file's md5, size and local path, never copies or uploads the bytes, and the same files give the same digest,
hence the same artifact version, whichever run declares them. The cf run declares `dataset` as its input and
logs `cf_vectors`; a train run declares `dataset`, `image_cache` and (when it learns from CF) `cf_vectors`
as inputs, and logs `model-<dataset>-<run key>` (type `model`): `best.pt`, `model.json` and `metrics.json`
copied (W&B stages a copy under $WANDB_DATA_DIR until they are uploaded: `wandb sync` for offline runs).

An input is declared as W&B's `run.use_artifact` does with an artifact built locally: logged by the run when
no run logged the same content before, then used. `use_artifact` itself is not called: offline it raises
(it may need the server), online it then blocks until the server has the artifact, with no time limit.
Its first step, the run's `_log_artifact(..., use_after_commit=True)`, is called instead, in both modes: it
writes an `artifact` record marked `use_after_commit` (offline wandb writes no `use_artifact` record), and
W&B's artifact saver (online at once, offline at `wandb sync`) creates the version, or finds the one with
the same digest, and records the use. Offline, upload the runs one at a time in the order they ran (one
`wandb sync` of many folders uploads several at once, in any order): the cf run then creates `cf_vectors`
and the train runs use it; a train run uploaded first would create it, and the cf run would not be linked.
No call here needs the server in offline mode.

`Tracker.link` (`RunLink`) says where a run is: its path `entity/project/run_id` and URL online, its local
folder (for `wandb sync <folder>`) offline; the trained_model asset shows it in its metadata.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import subprocess
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from collab_iu.artifacts import (
    TEST_ITEMS,
    TEST_SCORES,
    TRAIN_JSON,
    load_prepared,
    read_report,
)
from collab_iu.layout import dataset_layout
from collab_iu.observer import TrainingObserver
from collab_iu.params import Params, WandbParams
from orchestration.wandb_artifacts import (
    ArtifactSpec,
    cf_vectors_artifact,
    dataset_artifact,
    model_artifact,
    training_inputs,
)

MODES = ("online", "offline", "disabled", "shared")


class TrackingWarning(UserWarning):
    """W&B logging did not work; the stage carries on without it."""


def _warn(message: str) -> None:
    warnings.warn(f"W&B: {message}", TrackingWarning, stacklevel=3)


@dataclass(frozen=True)
class RunLink:
    """Where a W&B run is. `path`: entity/project/run_id online; offline project/run_id (the entity is the
    uploader's, set by `wandb sync`). `url`: its page (online only). `folder`: its local run folder, which
    `wandb sync <folder>` uploads."""

    path: str
    url: str | None
    folder: str | None
    offline: bool


@dataclass(frozen=True)
class LineChart:
    """A W&B line chart (`wandb.plot.line`) of a logged table's columns: `y` against `x`, a line per `stroke`."""

    key: str
    x: str
    y: str
    stroke: str | None = None
    title: str = ""


class Tracker:
    """One W&B run, or nothing (`Tracker()`): every method is safe to call and never raises."""

    def __init__(self, run: Any = None, wandb: Any = None):
        self._run = run
        self._wandb = wandb
        self._link = _run_link(run)

    @property
    def active(self) -> bool:
        return self._run is not None

    @property
    def run(self) -> Any:
        """The wandb Run (None when not logging)."""
        return self._run

    @property
    def link(self) -> RunLink | None:
        """Where the run is (kept after it finished); None when nothing was logged."""
        return self._link

    def _call(self, what: str, fn: Callable[[Any, Any], None]) -> None:
        if self._run is None:
            return
        try:
            fn(self._run, self._wandb)
        except Exception as exc:  # W&B never stops a run: warn once, then log nothing more
            _warn(f"{what} failed ({type(exc).__name__}: {exc}); this run logs nothing more")
            run, self._run = self._run, None
            try:
                run.finish(exit_code=1)
            except Exception:
                pass

    def log(self, values: dict, step: int | None = None, commit: bool | None = None) -> None:
        self._call("log", lambda run, wb: run.log(dict(values), step=step, commit=commit))

    def summary(self, values: dict) -> None:
        self._call("summary", lambda run, wb: run.summary.update(dict(values)))

    def define_metric(self, name: str, **options) -> None:
        """`run.define_metric(name, **options)`: x axis (`step_metric`) and summary aggregate of a logged key."""
        self._call(f"define_metric {name}", lambda run, wb: run.define_metric(name, **options))

    def table(self, name: str, columns: list[str], rows: list[list], chart: LineChart | None = None) -> None:
        """A table under `name`, and a native W&B line chart of it under `chart.key` when given."""
        rows = [[_plain(v) for v in row] for row in rows]

        def log(run, wb) -> None:
            table = wb.Table(columns=list(columns), data=rows)
            values = {name: table}
            if chart is not None:
                values[chart.key] = wb.plot.line(table, chart.x, chart.y, stroke=chart.stroke, title=chart.title)
            run.log(values)

        self._call(f"table {name}", log)

    def log_artifact(self, spec: ArtifactSpec) -> None:
        """`spec` as an output of this run."""
        self._call(f"artifact {spec.name}", lambda run, wb: run.log_artifact(_build_artifact(wb, spec)))

    def use_artifact(self, spec: ArtifactSpec) -> None:
        """`spec` as an input of this run, offline too (see the module docstring)."""
        self._call(f"input artifact {spec.name}", lambda run, wb: _use_artifact(run, _build_artifact(wb, spec)))

    def images(self, name: str, images: list[tuple[np.ndarray | str | Path, str]]) -> None:
        """Log images (uint8 H x W x 3 arrays or image files) with captions under one key (a grid in W&B)."""
        self._call(
            f"images {name}",
            lambda run, wb: run.log({name: [wb.Image(_image(x), caption=c) for x, c in images]}),
        )

    def finish(self, exit_code: int = 0) -> None:
        self._call("finish", lambda run, wb: run.finish(exit_code=exit_code))
        self._run = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


def _image(x):
    return str(x) if isinstance(x, Path) else x


def upscale(image: np.ndarray, min_size: int = 128) -> np.ndarray:
    """An H x W (x C) image enlarged by an integer factor (nearest neighbour) until its short side is >= min_size."""
    factor = math.ceil(min_size / max(min(image.shape[:2]), 1))
    return image if factor <= 1 else np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def _offline(run: Any) -> bool:
    offline = getattr(run, "offline", None)  # wandb >= 0.19; older: the run's settings
    return bool(offline) if offline is not None else bool(run.settings._offline)


def _run_link(run: Any) -> RunLink | None:
    """The run's RunLink, or None (no run, or W&B cannot say: never raises)."""
    if run is None:
        return None
    try:
        offline = _offline(run)
        folder = getattr(run, "sync_dir", None) or run.settings.sync_dir
        return RunLink(path=str(run.path), url=None if offline else run.url, folder=str(folder), offline=offline)
    except Exception:
        return None


def _build_artifact(wb: Any, spec: ArtifactSpec) -> Any:
    artifact = wb.Artifact(spec.name, type=spec.type, metadata=dict(spec.metadata))
    for path, name in spec.files:
        artifact.add_file(str(path), name=name)
    for path, name in spec.references:
        artifact.add_reference(Path(path).resolve().as_uri(), name=name, checksum=True)
    return artifact


def _use_artifact(run: Any, artifact: Any) -> None:
    """Declare `artifact` (built locally, not yet logged) an input of `run` as `run.use_artifact(artifact)`
    does, without its two problems: offline it raises TypeError, online it then waits for the server with no
    time limit. Both call `_log_artifact(..., use_after_commit=True)`, which this calls directly (see the module
    docstring); a wandb without that method: `use_artifact` online, an output record offline."""
    log = getattr(run, "_log_artifact", None)
    if log is not None:
        log(artifact, is_user_created=True, use_after_commit=True)
    elif not _offline(run):
        run.use_artifact(artifact)
    else:  # no input edge after `wandb sync`, but the snapshot is recorded
        run.log_artifact(artifact)


def _plain(value):
    """JSON-safe cell values: numpy scalars to Python, NaN (and pandas' NA) to None, anything else to text."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if value != value else value
    return None if str(value) in ("<NA>", "NaT") else str(value)


# ---------------------------------------------------------------------------- starting a run


def resolve_mode(wb: WandbParams) -> str:
    """The W&B mode a run uses (see the module docstring)."""
    if wb.mode != "auto":
        return wb.mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    return "online" if has_api_key() else "offline"


def has_api_key() -> bool:
    """An API key in $WANDB_API_KEY, or in netrc for the W&B host ($WANDB_BASE_URL, else W&B's default hosts)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    base = os.environ.get("WANDB_BASE_URL")
    hosts = [urlparse(base).netloc] if base else ["api.wandb.ai", "api.forge.coreweave.com"]
    try:
        found = netrc.netrc(os.environ.get("NETRC"))
    except (OSError, netrc.NetrcParseError):
        return False
    return any(found.authenticators(host) is not None for host in hosts if host)


def run_root(wb: WandbParams, repo_root: Path | None = None) -> Path:
    """The folder W&B writes its `wandb/` folder into: wandb.dir, else $WANDB_DIR, else the repository root."""
    root = Path(wb.dir or os.environ.get("WANDB_DIR") or ".").expanduser()
    if not root.is_absolute():
        root = (repo_root or Path.cwd()) / root
    return root.resolve()


def git_commit(repo_root: Path | None = None) -> str | None:
    """The repository's HEAD commit, or None (no git, not a repository, too slow)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_root or Path.cwd(), capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def _default_dirs(root: Path) -> None:
    """Keep W&B's cache and artifact staging under the run folder unless the user set them.

    wandb reads these once per process, so the first run's folder is the one that counts.
    """
    for name, sub in (("WANDB_CACHE_DIR", ".cache"), ("WANDB_DATA_DIR", ".data")):
        os.environ.setdefault(name, str(root / "wandb" / sub))


def group_name(params: Params, dataset: str) -> str:
    return f"{dataset}/{params.wandb.experiment}"


def start(params: Params, job_type: str, name: str, group: str, config: dict, repo_root: Path | None = None) -> Tracker:
    """Start one W&B run; a no-op Tracker when disabled or when W&B cannot start (with a warning)."""
    wb = params.wandb
    mode = resolve_mode(wb)
    if mode == "disabled":
        return Tracker()
    if mode not in MODES:
        _warn(f"unknown mode {mode!r} (from WANDB_MODE); logging offline")
        mode = "offline"
    try:
        import wandb
    except Exception as exc:
        _warn(f"wandb cannot be imported ({type(exc).__name__}: {exc}); nothing is logged")
        return Tracker()
    root = run_root(wb, repo_root)
    config = {**config, "git_commit": git_commit(repo_root)}

    def init(mode: str) -> Any:
        root.mkdir(parents=True, exist_ok=True)
        _default_dirs(root)
        limits = {"init_timeout": wb.timeout} | ({"finish_timeout": wb.timeout} if mode != "offline" else {})
        if os.environ.get("WANDB_BASE_URL"):  # read at every start (wandb itself reads it once per process)
            limits["base_url"] = os.environ["WANDB_BASE_URL"]
        settings = wandb.Settings(quiet=True, silent=mode == "offline", console="off", **limits)  # offline: no chatter
        return wandb.init(
            project=wb.project,
            entity=wb.entity,
            dir=str(root),
            job_type=job_type,
            group=group,
            name=name,
            config=config,
            mode=mode,
            reinit="create_new",
            settings=settings,
        )

    try:
        return Tracker(init(mode), wandb)
    except Exception as exc:
        if mode == "offline":
            _warn(f"the run could not start ({type(exc).__name__}: {exc}); nothing is logged")
            return Tracker()
        _warn(
            f"the {mode} run could not start ({type(exc).__name__}: {exc}); logging offline to "
            f"{root / 'wandb'} instead (upload later with `wandb sync`)"
        )
    try:
        return Tracker(init("offline"), wandb)
    except Exception as exc:
        _warn(f"the offline run could not start either ({type(exc).__name__}: {exc}); nothing is logged")
        return Tracker()


# ---------------------------------------------------------------------------- what each stage logs


UPSTREAM_GROUPS = ("synthetic", "prepare", "split", "cf", "cache")  # what made a run's data, split and CF targets


def start_training(params: Params, config: dict, repo_root: Path | None = None, origin: dict | None = None) -> Tracker:
    """The `train` run of one grid run. Its config: experiment.run_config (every parameter of the run), the
    params groups that made its inputs (UPSTREAM_GROUPS: runs of two CF settings differ in `cf.*`), and
    `origin` (e.g. the Dagster run id) with the DVC experiment's name when `dvc exp run` runs it. Its charts
    plot against `epoch` (define_epoch_metrics); its inputs are declared (dataset, image cache, CF vectors)."""
    upstream = {group: getattr(params, group).model_dump(mode="json") for group in UPSTREAM_GROUPS}
    dvc_exp = os.environ.get("DVC_EXP_NAME")
    config = {**config, **upstream, **(origin or {}), **({"dvc_experiment": dvc_exp} if dvc_exp else {})}
    tracker = start(params, "train", config["run_key"], group_name(params, config["dataset"]), config, repo_root)
    if tracker.active:
        define_epoch_metrics(tracker)
        layout = dataset_layout(params, config["dataset"], repo_root)
        try:
            inputs = training_inputs(layout, config["method"], config["cf_weight"])
        except Exception as exc:  # an input folder missing or unreadable: training says so itself
            _warn(f"could not describe the run's input artifacts ({type(exc).__name__}: {exc})")
            inputs = []
        for spec in inputs:
            tracker.use_artifact(spec)
    return tracker


# the summary aggregate W&B keeps of each per-epoch key while a run trains (the module docstring)
EPOCH_SUMMARIES = {"val_map": "max", "val_cf_r2": "max", "val_cf_cosine": "max", "loss_*": "min"}


def define_epoch_metrics(tracker: Tracker) -> None:
    """Every per-epoch key plotted against `epoch` (cf_pretrain's first stage: `pretrain/epoch`), with the
    summary aggregates of EPOCH_SUMMARIES."""
    tracker.define_metric("epoch")
    for name, summary in EPOCH_SUMMARIES.items():
        tracker.define_metric(name, step_metric="epoch", summary=summary)
    for name in ("lr", "images_per_s"):
        tracker.define_metric(name, step_metric="epoch")
    tracker.define_metric("pretrain/epoch")
    tracker.define_metric("pretrain/*", step_metric="pretrain/epoch")


def log_training_results(tracker: Tracker, params: Params, metrics: dict, run_dir: Path, layout, info: dict) -> None:
    """Test metrics and the best epoch's validation values in the summary, the per-epoch history as a table
    and chart, the model artifact, the per-label AP table and a grid of sample test images."""
    if not tracker.active:
        return
    tracker.summary({k: v for k, v in metrics.items() if not isinstance(v, list | dict)})
    _log_history(tracker, run_dir)
    tracker.log_artifact(model_artifact(run_dir, metrics, info.get("config") or metrics))
    try:
        vocabulary, labels, images, scores = _test_samples(run_dir, layout, info)
    except Exception as exc:
        _warn(f"could not read the test items for logging ({type(exc).__name__}: {exc})")
        return
    positives = np.array([[lab in item for lab in vocabulary] for item in labels]).sum(axis=0) if len(labels) else []
    ap = metrics.get("test_ap_per_label", [])
    rows = [
        [lab, ap[j] if j < len(ap) else None, int(positives[j]) if len(positives) else 0]
        for j, lab in enumerate(vocabulary)
    ]
    tracker.table("test_ap_per_label", ["label", "ap", "n_positive"], rows)
    n = min(params.wandb.log_images, len(labels))
    if n:
        chosen = np.unique(np.linspace(0, len(labels) - 1, n).round().astype(int))
        samples = []
        for i in chosen:
            predicted = [vocabulary[j] for j in np.flatnonzero(scores[i] >= 0.5)] or [
                vocabulary[int(scores[i].argmax())]
            ]
            caption = f"pred: {', '.join(predicted)} | true: {', '.join(labels[i]) or '-'}"
            samples.append((upscale(np.asarray(images[i])), caption))  # cache-sized images are thumbnails
        tracker.images("test_samples", samples)


def _log_history(tracker: Tracker, run_dir: Path) -> None:
    """train.json's history (every epoch, also those before a resume; cf_pretrain: the second stage) as the
    table `epoch_history`, with the chart `val_map_vs_epoch`."""
    try:
        history = json.loads((run_dir / TRAIN_JSON).read_text())["history"]
    except Exception as exc:
        _warn(f"could not read the training history ({type(exc).__name__}: {exc})")
        return
    columns = list(dict.fromkeys(k for record in history for k in record))
    rows = [[record.get(c) for c in columns] for record in history]
    chart = LineChart("val_map_vs_epoch", "epoch", "val_map", title="validation mAP per epoch")
    tracker.table("epoch_history", columns, rows, chart)


class WandbObserver(TrainingObserver):
    """The `train` W&B run of one grid run: config, inputs, every epoch (committed at once: W&B would otherwise
    hold the last epoch's row and let it replace the best epoch's values set in the summary), test results and
    the model. `link` says where the run is, also after it finished (None when nothing was logged)."""

    def __init__(self, params: Params, repo_root: Path | None = None, origin: dict | None = None):
        self._params, self._repo_root, self._origin = params, repo_root, origin
        self._tracker, self._config = Tracker(), {}

    @property
    def link(self) -> RunLink | None:
        return self._tracker.link

    def started(self, config: dict) -> None:
        self._params = self._params.for_dataset(config["dataset"])
        self._config = config
        self._tracker = start_training(self._params, config, self._repo_root, self._origin)

    def epoch_end(self, record: dict, stage: str) -> None:
        if stage == "pretrain":
            values, step = {f"pretrain/{k}": v for k, v in record.items()}, record["epoch"]
        else:  # after cf_pretrain's stage 1, the steps go on from its last epoch
            values, step = dict(record), (self._config.get("pretrain_epochs") or 0) + record["epoch"]
        self._tracker.log(values, step=step, commit=True)

    def finished(self, metrics: dict, run_dir: Path, model_info: dict) -> None:
        layout = dataset_layout(self._params, self._config["dataset"], self._repo_root)
        log_training_results(self._tracker, self._params, metrics, run_dir, layout, model_info)

    def closed(self, failed: bool) -> None:
        self._tracker.finish(exit_code=1 if failed else 0)


def _test_samples(run_dir: Path, layout, info: dict) -> tuple[list[str], list[list[str]], Any, np.ndarray]:
    """The vocabulary, and per scored test item: true labels, cached image, scores."""
    import pandas as pd

    from collab_iu.image_cache import load_image_cache

    items, _ = load_prepared(layout)
    ids = pd.read_parquet(run_dir / TEST_ITEMS)["item_id"]
    labels = items.set_index("item_id")["labels"].reindex(ids).tolist()
    cache = load_image_cache(layout.cache)
    images = cache.images[cache.rows(ids)]
    return list(info["vocabulary"]), labels, images, np.load(run_dir / TEST_SCORES)


def _dataset_config(params: Params, dataset: str, group: str, repo_root: Path | None) -> dict:
    """Config of a per-dataset run: the dataset, one params group, the dataset fingerprint."""
    return {
        "dataset": dataset,
        group: getattr(params, group).model_dump(mode="json"),
        "fingerprint": read_report(dataset_layout(params, dataset, repo_root).prepared)["fingerprint"],
    }


def log_cf(params: Params, report: dict, repo_root: Path | None = None) -> RunLink | None:
    """The `cf` run of one CF fit: its parameters, its input (the dataset artifact) and output (the CF vectors
    artifact), and its quality against popularity (summary, table, bar plot). Returns where the run is."""
    dataset = report["dataset"]
    config = _dataset_config(params, dataset, "cf", repo_root)
    with start(params, "cf", "cf", group_name(params, dataset), config, repo_root) as tracker:
        if not tracker.active:
            return None
        layout = dataset_layout(params, dataset, repo_root)
        tracker.use_artifact(dataset_artifact(layout))
        tracker.log_artifact(cf_vectors_artifact(layout))
        tracker.summary({k: v for k, v in report.items() if k != "dataset"})
        rows = [["label_probe_map", report["label_probe"]["probe_map"], report["label_probe"]["popularity_map"]]]
        rec = report.get("recommendation", {})
        rows += [[name, value, rec["popularity"].get(name)] for name, value in rec.get("model", {}).items()]
        tracker.table("cf_vs_popularity", ["metric", "cf", "popularity"], rows)
        try:
            tracker.images("cf_vs_popularity_plot", [(_bar_plot(rows), "CF vectors vs popularity")])
        except Exception as exc:
            _warn(f"could not draw the CF plot ({type(exc).__name__}: {exc})")
    return tracker.link


def _bar_plot(rows: list[list]) -> np.ndarray:
    """A grouped bar chart (metric: cf vs popularity) as an RGB array."""
    from collab_iu.evaluate import new_figure

    fig = new_figure(6.0, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r[1] or 0 for r in rows], 0.4, label="cf")
    ax.bar(x + 0.2, [r[2] or 0 for r in rows], 0.4, label="popularity")
    ax.set_xticks(x, [r[0] for r in rows])
    ax.legend()
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def log_evaluation(params: Params, result: dict, repo_root: Path | None = None) -> RunLink | None:
    """The `evaluation` run: the results table, test mAP per series and label ratio as a table and a native
    line chart next to the two PNG plots, and the headline in the summary. Returns where the run is."""
    dataset = result["dataset"]
    config = _dataset_config(params, dataset, "experiment", repo_root)
    with start(params, "evaluation", "evaluation", group_name(params, dataset), config, repo_root) as tracker:
        if not tracker.active:
            return None
        summary = result["summary"]
        tracker.summary(
            {
                "n_test_items": summary["n_test_items"],
                "n_labels": summary["n_labels"],
                "headline": result["headline"] or {},
                "selection": summary["selection"],
                "cf_label_probe": summary.get("cf_label_probe") or {},
            }
        )
        table = result["table"]
        tracker.table("results", [str(c) for c in table.columns], table.astype(object).values.tolist())
        columns, rows = map_by_label_ratio(table)
        chart = LineChart("map_vs_label_ratio_chart", "label_ratio", "map_mean", "series", "test mAP vs label ratio")
        tracker.table("map_by_label_ratio", columns, rows, chart)
        paths = result["paths"]
        tracker.images("map_vs_label_ratio", [(paths["map_plot"], "mAP vs label ratio")])
        tracker.images("improvement", [(paths["improvement_plot"], "improvement over image_only")])
    return tracker.link


MAP_COLUMNS = ("map_mean", "map_std", "map_ci_low", "map_ci_high", "n_seeds")


def map_by_label_ratio(table) -> tuple[list[str], list[list]]:
    """The results table's test mAP, one row per series (a method, with its cf weight when it has one, as in
    map_vs_label_ratio.csv; the reference points by name) and label ratio, in label-ratio order."""
    from collab_iu.evaluate import series_name

    columns = ["series", "method", "cf_weight", "label_ratio", *[c for c in MAP_COLUMNS if c in table.columns]]
    ordered = table.sort_values("label_ratio", kind="stable")
    rows = [
        [series_name(row["method"], row["cf_weight"]), *[row[c] for c in columns[1:]]] for _, row in ordered.iterrows()
    ]
    return columns, rows
