"""Train one run of the grid (or all of them) and score it on the test items.

A run folder `data/<dataset>/runs/<run key>/` holds:

- `checkpoint.pt` (resume state), `best.pt` (state_dict of the best validation epoch), `train.json`;
- `model.json`: what `predict` needs to rebuild the model (backbone, vocabulary, sizes), and the run's config;
- `test_scores.npy` (float32, test items x labels) with `test_items.parquet` (item_id), from pixels only;
- `metrics.json`: test metrics of the best epoch, and how well its CF head predicts the validation items'
  CF vectors (`val_cf_r2`, `val_cf_cosine`, `val_cf_items`: see `train_run`); written last, so its presence
  marks a finished run. Runs written before the val_cf_* keys existed lack them: read them with .get().

A finished run with the same config is not trained again; an interrupted one resumes; a finished run with
another config is replaced only when asked (`replace`), never silently.
Each training (or resumed training) reports to a `TrainingObserver` (collab_iu/observer.py): the
orchestration layer attaches W&B and Dagster's run log there; a reused finished run reports nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from collab_iu import distributed
from collab_iu.artifacts import (
    BEST,
    CACHE_INDEX,
    CF_INDEX,
    CF_VECTORS,
    METRICS_JSON,
    MODEL_JSON,
    REPORT,
    SPLITS,
    TEST_ITEMS,
    TEST_SCORES,
    item_splits,
    load_cf_vectors,
    load_prepared,
    read_report,
    test_set_mask,
)
from collab_iu.atomic import write_json, write_parquet
from collab_iu.augment import IMAGENET_MEAN, IMAGENET_STD
from collab_iu.errors import UserError
from collab_iu.features import feature_report, feature_spec
from collab_iu.grid import RunSpec, parse_run_key
from collab_iu.layout import DatasetLayout, dataset_layout
from collab_iu.locks import output_lock
from collab_iu.methods import METHODS
from collab_iu.metrics import evaluate_scores
from collab_iu.models import MultitaskModel, load_weights_file
from collab_iu.observer import TrainingObserver
from collab_iu.params import Params, ParamsError, TrainParams
from collab_iu.train import (
    VAL_CF_KEYS,
    TrainingData,
    cf_targets,
    load_training_data,
    predict_scores,
    resolve_device,
    train_model,
)


def run_train_params(params: Params, spec: RunSpec) -> TrainParams:
    """The training parameters of one run: params.train with the run's cf weight and seed, and what its method
    forces (collab_iu/methods.py: the confidence type, the CF loss)."""
    method = METHODS[spec.method]
    update: dict = {"cf_weight": spec.cf_weight, "seed": spec.seed}
    if method.confidence is not None:
        update["confidence"] = method.confidence
    if method.cf_loss is not None:
        update["cf_loss"] = method.cf_loss
    elif params.train.cf_loss == "triplet":
        raise ParamsError("train.cf_loss 'triplet' is for the method `triplet`; choose exp, mse or cosine for with_cf")
    if method.cf_input and params.cf.cold_start:
        raise ParamsError(
            f"{spec.method} classifies items by their interactions too, and cf.cold_start withholds the validation "
            "and test items' interactions: drop the method from the grid, or set cf.cold_start: false"
        )
    return params.train.model_copy(update=update)


HOW_IT_RUNS = ("input", "input_memory_fraction")  # train.* keys that never change a run's result (tested)


def run_config(params: Params, spec: RunSpec, layout: DatasetLayout) -> dict:
    """Everything that determines a run's result; its hash decides whether a run folder is reusable."""
    config = {
        "dataset": layout.name,
        "run_key": spec.key,
        "method": spec.method,
        "label_ratio": spec.label_ratio,
        "cf_weight": spec.cf_weight,
        "seed": spec.seed,
        "train": run_train_params(params, spec).model_dump(mode="json", exclude=set(HOW_IT_RUNS)),
        "augment": params.augment.model_dump(mode="json"),
        "pretrain_epochs": params.experiment.pretrain_epochs if METHODS[spec.method].pretrain else None,
        "fingerprint": read_report(layout.prepared)["fingerprint"],
        # the inputs, whoever wrote them, with whatever params
        "inputs": _input_digest(layout, METHODS[spec.method].reads_cf, params),
    }
    config["config_hash"] = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return config


def _input_digest(layout: DatasetLayout, reads_cf: bool, params: Params) -> str:
    """A digest of the split, the cache index, the feature cache's report (weights, spec and image cache it was
    computed from; train.finetune tail or heads) and (for a method that reads CF) the CF vectors a run trains
    on: a run that reads no CF output is not invalidated by a new CF fit."""
    cf = (layout.cf / CF_VECTORS, layout.cf / CF_INDEX) if reads_cf else ()
    spec = feature_spec(params)
    features = (feature_report(layout, spec),) if spec is not None else ()
    digest = hashlib.sha256()
    for path in (layout.split / SPLITS, *cf, layout.cache / CACHE_INDEX, layout.cache / REPORT, *features):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class RunConflictError(UserError, RuntimeError):
    """A finished run exists under the run key with another configuration, and replacing it was not asked."""


def _changed(saved: dict, config: dict, prefix: str = "") -> list[str]:
    """`key: old -> new` for every value that differs between two run configs (nested keys dotted)."""
    changes = []
    for key in sorted((set(saved) | set(config)) - {"config_hash"}):
        old, new = saved.get(key), config.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += _changed(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def _refuse_replacing(run_dir: Path, config: dict) -> None:
    try:
        saved = json.loads((run_dir / MODEL_JSON).read_text()).get("config", {})
    except (FileNotFoundError, json.JSONDecodeError):
        saved = {}
    changes = _changed(saved, config) or ["its model.json is missing or unreadable"]
    raise RunConflictError(
        f"{run_dir} holds a finished run with another configuration ({'; '.join(changes[:6])}"
        f"{'; ...' if len(changes) > 6 else ''}); it is kept. To train it again with the new configuration, "
        "replace it explicitly: `--replace` on the command line, the run tag collab_iu/replace=true in Dagster "
        "(dvc repro replaces its outputs by itself)."
    )


def _claim_run_dir(run_dir: Path, config: dict, replace: bool) -> dict | None:
    """The metrics of a finished run of this config (reused), else None with `run_dir` ready to train in:
    kept for a resume, emptied for another config (a finished one only when `replace`)."""
    finished = (run_dir / METRICS_JSON).exists()
    if _reusable(run_dir, config):
        if finished:
            return json.loads((run_dir / METRICS_JSON).read_text())
    elif finished and not replace:
        _refuse_replacing(run_dir, config)
    elif run_dir.exists():
        shutil.rmtree(run_dir)  # another config: start over
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


def _reusable(run_dir: Path, config: dict) -> bool:
    try:
        saved = json.loads((run_dir / MODEL_JSON).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return saved.get("config", {}).get("config_hash") == config["config_hash"]


def train_run(
    params: Params,
    spec: RunSpec | str,
    dataset: str | None = None,
    repo_root: Path | None = None,
    progress: bool = True,
    observer: TrainingObserver | None = None,
    replace: bool = False,
) -> dict:
    """Train (or resume, or reuse) one grid run and score its best epoch on the test items; returns metrics.

    A finished run of the same key with another configuration raises RunConflictError, unless `replace`;
    an unfinished one with another configuration starts over.

    Besides the test metrics: `val_cf_r2`, `val_cf_cosine` (collab_iu/cf_fit.py) and `val_cf_items` of the
    best epoch's CF head over the validation items with a CF target, against targets prepared as for
    training. None (null) without a CF head (image_only), for triplet (its head outputs embeddings, not CF
    vectors) and, r2 and cosine only, when no validation item has a target (cf.cold_start: items 0).
    cf_pretrain's final model has no CF head: its values are those of the pretraining stage's last epoch.
    """
    from collab_iu.stages import ensure_trainable

    spec = parse_run_key(spec) if isinstance(spec, str) else spec
    layout = dataset_layout(params, dataset, repo_root)
    ensure_trainable(layout)  # a dataset prepared with prepare.cf_only has no images to train on
    params = params.for_dataset(layout.name)
    run_dir = layout.runs / spec.key
    if distributed.launched():  # under torchrun: rank 0 claims, trains, writes and reports; the others compute
        distributed.start(resolve_device(params.train.device))
        if not distributed.is_main():
            return _train_as_worker(params, spec, layout, run_dir)
    with output_lock(run_dir):  # a second process on this run key waits, then reuses or refuses what it finds
        return _claim_and_train(params, spec, layout, run_dir, progress, observer or TrainingObserver(), replace)


def _train_as_worker(params: Params, spec: RunSpec, layout: DatasetLayout, run_dir: Path) -> dict:
    """A torchrun rank above 0: its share of rank 0's training, once rank 0 has claimed the run folder; what
    rank 0 decided (a finished run reused, a refusal) it does too. It writes nothing."""
    decision = distributed.broadcast(None)
    if "error" in decision:
        raise RunConflictError(decision["error"])
    if "metrics" in decision:
        return decision["metrics"]
    train_params = run_train_params(params, spec)
    data = _run_data(layout, params, spec, train_params)
    _train_method(params, spec, data, train_params, run_dir, False, TrainingObserver())
    return {}


def _run_data(layout: DatasetLayout, params: Params, spec: RunSpec, train_params: TrainParams) -> TrainingData:
    """What the run of `spec` trains on (the CF vectors as an input too for a method of warm items)."""
    run_params = params.model_copy(update={"train": train_params})
    return load_training_data(layout, run_params, spec.label_ratio, spec.seed, cf_input=METHODS[spec.method].cf_input)


def _claim_and_train(
    params: Params,
    spec: RunSpec,
    layout: DatasetLayout,
    run_dir: Path,
    progress: bool,
    observer: TrainingObserver,
    replace: bool,
) -> dict:
    """train_run's work, holding the run folder's lock."""
    config = run_config(params, spec, layout)
    try:
        finished = _claim_run_dir(run_dir, config, replace)
    except RunConflictError as exc:
        distributed.broadcast({"error": str(exc)})
        raise
    distributed.broadcast({"metrics": finished} if finished is not None else {"train": True})
    if finished is not None:
        return finished

    train_params = run_train_params(params, spec)
    data = _run_data(layout, params, spec, train_params)
    size = params.augment.output_size or params.cache.image_size
    model_info = {
        "backbone": train_params.backbone,
        "vocabulary": data.vocabulary,
        "cf_dim": int(data.cf_target.shape[1]) if METHODS[spec.method].final_cf_head else 0,
        "cf_input_dim": int(data.cf_target.shape[1]) if data.cf_input else 0,
        "cache_size": params.cache.image_size,
        "input_size": size,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "config": config,
    }
    write_json(model_info, run_dir / MODEL_JSON)

    observer.started(config)
    failed = True
    try:
        metrics = _train_and_score(params, spec, data, train_params, run_dir, layout, model_info, progress, observer)
        observer.finished(metrics, run_dir, model_info)
        failed = False
    finally:
        observer.closed(failed)
    return metrics


def _train_method(
    params: Params,
    spec: RunSpec,
    data,
    train_params: TrainParams,
    run_dir: Path,
    progress: bool,
    observer: TrainingObserver,
) -> tuple[dict, dict | None, TrainParams]:
    """Train one run's method (cf_pretrain: stage 1 on the CF target only, then stage 2 on labels only with the
    optimiser restarted); returns the training summary, stage 1's (or None) and the final stage's params."""
    init, pretrained = None, None
    if METHODS[spec.method].pretrain:
        stage1 = train_params.model_copy(update={"label_weight": 0.0, "epochs": params.experiment.pretrain_epochs})
        pretrained = train_model(
            data,
            stage1,
            params.augment,
            run_dir / "pretrain",
            progress=progress,
            on_epoch_end=lambda record: observer.epoch_end(record, "pretrain"),
        )
        init = run_dir / "pretrain" / BEST
        train_params = train_params.model_copy(update={"cf_weight": 0.0})
    elif not METHODS[spec.method].uses_cf:
        train_params = train_params.model_copy(update={"cf_weight": 0.0})
    summary = train_model(
        data,
        train_params,
        params.augment,
        run_dir,
        progress=progress,
        init_backbone=init,
        on_epoch_end=lambda record: observer.epoch_end(record, "train"),
    )
    return summary, pretrained, train_params


def _train_and_score(
    params: Params,
    spec: RunSpec,
    data,
    train_params: TrainParams,
    run_dir: Path,
    layout: DatasetLayout,
    model_info: dict,
    progress: bool,
    observer: TrainingObserver,
) -> dict:
    """Train one run's method (cf_pretrain: two stages), score its best epoch, write metrics.json."""
    summary, pretrained, train_params = _train_method(params, spec, data, train_params, run_dir, progress, observer)
    metrics = score_run(run_dir, layout, model_info, train_params, data)
    metrics |= {
        "run_key": spec.key,
        "method": spec.method,
        "label_ratio": spec.label_ratio,
        "cf_weight": spec.cf_weight,
        "seed": spec.seed,
        "best_epoch": summary["best_epoch"],
        "val_map": summary["best_val_map"],
        "labelled_train_items": summary["labelled_train_items"],
        **{k: summary[k] for k in ("gpu_memory_peak_gb", "gpu_utilization") if k in summary},  # CUDA runs
        **{k: (pretrained or summary).get(k) for k in VAL_CF_KEYS},  # cf_pretrain: stage 1's head
    }
    write_json(metrics, run_dir / METRICS_JSON)
    return metrics


def load_run_model(
    run_dir: str | Path, device: torch.device | str = "cpu", trainable_blocks: int | None = None
) -> tuple[MultitaskModel, dict]:
    """Rebuild a trained run's model (best epoch) and its model.json: from pixels, or (`trainable_blocks`, as it
    was trained) from the feature cache."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / MODEL_JSON).read_text())
    cf_in = info.get("cf_input_dim", 0)
    model = MultitaskModel(info["backbone"], len(info["vocabulary"]), info["cf_dim"], None, trainable_blocks, cf_in)
    state = load_weights_file(run_dir / BEST)
    model.load_state_dict(state)
    return model.to(device).eval(), info


def score_run(run_dir: Path, layout: DatasetLayout, info: dict, train_params: TrainParams, data: TrainingData) -> dict:
    """Score the test items with the best epoch, from the inputs the run trained on (`data.images`: the pixels, or
    their cached features when the run trained from them: the same network, with the frozen blocks' output read
    back; a model of warm items also reads their CF vectors, prepared as for training); write test_scores.npy and
    test_items.parquet."""
    from collab_iu.dataset import label_matrix
    from collab_iu.image_cache import load_image_cache

    items, _ = load_prepared(layout)
    cache = load_image_cache(layout.cache)
    rows = cache.rows(items["item_id"])
    test = np.flatnonzero(test_set_mask(item_splits(layout, items), rows))
    device = resolve_device(train_params.device)
    blocks = train_params.trainable_blocks
    model, _ = load_run_model(run_dir, device, blocks)
    size = info["input_size"]
    cf_input = _test_cf_vectors(layout, items, test, data) if data.cf_input else None
    scores = predict_scores(
        model, data.images, rows[test], size, device, from_features=blocks is not None, cf_input=cf_input
    )
    scores = scores.astype(np.float32)
    np.save(run_dir / TEST_SCORES, scores)
    write_parquet(pd.DataFrame({"item_id": items["item_id"].to_numpy()[test]}), run_dir / TEST_ITEMS)
    y = label_matrix(items["labels"].iloc[test], info["vocabulary"])
    metrics = evaluate_scores(y, scores)
    return {"test_" + k: v for k, v in metrics.items()}


def _test_cf_vectors(layout: DatasetLayout, items: pd.DataFrame, test: np.ndarray, data: TrainingData) -> np.ndarray:
    """The test items' CF vectors prepared as the training items' were (0 for an item without interactions)."""
    vectors, index = load_cf_vectors(layout)
    has_target = index["n_interactions"].to_numpy()[test] > 0
    return cf_targets(vectors[test], has_target, data.cf_center, data.cf_scale)
