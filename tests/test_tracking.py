"""Weights & Biases logging: offline runs read back from disk, and W&B failures never stop training.

The offline runs are read from their transaction log (`offline-run-*/run-*.wandb`, a
LevelDB-style log of protobuf `Record`s, the format `wandb sync` uploads): the run record
(job type, group, config), config updates, history rows, summary updates, metric definitions
(`define_metric`) and artifact records (`log_artifact`; an input declared offline is an artifact
record marked `use_after_commit`: offline wandb writes no `use_artifact` record). Media files
(tables, images) lie under `offline-run-*/files/media/`.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, tiny_params_tree, train_grid

from collab_iu.artifacts import METRICS_JSON
from collab_iu.evaluate import run_evaluation
from collab_iu.experiment import train_run
from collab_iu.layout import dataset_layout
from collab_iu.params import Params, WandbParams, params_from_dict
from collab_iu.stages import run_cache, run_cf, run_prepare, run_split
from orchestration import tracking
from orchestration.tracking import TrackingWarning

GRID = {"methods": ["image_only", "with_cf"], "label_ratios": [0.5], "seeds": [0], "workers": 1}
EPOCHS = 2


# ---------------------------------------------------------------------------- reading offline runs back


def _records(path: Path):
    """The protobuf records of a .wandb transaction log (7-byte header; 32 KiB blocks of checksummed chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, head = 32768, 7
    pos, pending = head, b""
    while pos + head <= len(data):
        left = block - pos % block
        if left < head:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + head])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += data[pos + head : pos + head + length]
        pos += head + length
        if kind in (1, 4):  # FULL or LAST chunk
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _items(updates) -> dict:
    return {(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in updates}


def _complete_log(folder: Path, wait_s: float = 30.0) -> list:
    """The records of a run's log once its `exit` record is on disk (wandb-core may still be flushing)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            records = list(_records(next(folder.glob("run-*.wandb"))))
        except Exception:  # not (completely) written yet
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _artifact(record) -> dict:
    """An artifact record: name, type, metadata, whether it is an input (use_after_commit), manifest entries."""
    a = record.artifact
    entries = {e.path: {"ref": e.ref, "local_path": e.local_path, "digest": e.digest} for e in a.manifest.contents}
    return {
        "name": a.name,
        "type": a.type,
        "metadata": json.loads(a.metadata or "{}"),
        "input": a.use_after_commit,
        "digest": a.digest,
        "entries": entries,
    }


def read_offline_runs(root: Path) -> list[dict]:
    """Every offline run under root/wandb: job type, group, name, id, folder, config, history rows, summary,
    metric definitions (name or glob -> record), artifacts (user-logged, not W&B's own table artifacts)."""
    runs = []
    for folder in sorted((root / "wandb").glob("offline-run-*")):
        run: dict = {"config": {}, "history": [], "summary": {}, "metrics": {}, "artifacts": [], "use_artifact": []}
        run |= {"files": folder / "files", "folder": folder}
        for record in _complete_log(folder):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                r = record.run
                run |= {"job_type": r.job_type, "group": r.run_group, "name": r.display_name, "id": r.run_id}
                run["config"] |= _items(r.config.update)
            elif kind == "config":
                run["config"] |= _items(record.config.update)
            elif kind == "history":
                run["history"].append(_items(record.history.item))
            elif kind == "summary":
                run["summary"] |= _items(record.summary.update)
            elif kind == "metric":
                run["metrics"][record.metric.name or record.metric.glob_name] = record.metric
            elif kind == "artifact" and record.artifact.type != "run_table":
                run["artifacts"].append(_artifact(record))
            elif kind == "use_artifact":
                run["use_artifact"].append(record.use_artifact.name)
        runs.append(run)
    return runs


def _media(run: dict, key: str) -> dict:
    """The summary entry of a logged table or image list, checking its files exist."""
    entry = {k.split("/", 1)[1]: v for k, v in run["summary"].items() if k.startswith(key + "/")}
    assert entry, f"{run['name']}: no {key} logged"
    for name in [entry["path"]] if "path" in entry else entry["filenames"]:
        assert (run["files"] / name).is_file(), name
    return entry


def _table(run: dict, key: str) -> list[dict]:
    """A logged wandb.Table's rows as dicts."""
    content = json.loads((run["files"] / _media(run, key)["path"]).read_text())
    return [dict(zip(content["columns"], row)) for row in content["data"]]


def _chart(run: dict, key: str) -> dict:
    """The columns a native W&B chart (wandb.plot.*) plots: {"x", "y", "stroke"}; its data is the table `<key>_table`."""
    panel = run["config"][f"_wandb/visualize/{key}"]
    assert panel["panel_config"]["panelDefId"] == "wandb/line/v0"
    _media(run, f"{key}_table")
    return panel["panel_config"]["fieldSettings"]


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def prepared_master(tmp_path_factory) -> Path:
    """A tiny prepared dataset (W&B disabled), copied by each test."""
    root = tmp_path_factory.mktemp("tracking_master")
    params = params_from_dict(tiny_params_tree(root / "data", wandb={"mode": "disabled"}))
    for stage in (run_prepare, run_split, run_cf, run_cache):
        stage(params)
    return root


@pytest.fixture
def wandb_env(tmp_path, monkeypatch) -> Path:
    """W&B offline, every one of its folders under tmp_path; returns the wandb.dir for params."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_env" / name.lower()))
    return tmp_path / "wb"


@pytest.fixture
def project(prepared_master, tmp_path, wandb_env):
    """project(**groups) -> Params on a writable copy of the prepared dataset, W&B runs under wandb_env."""
    shutil.copytree(prepared_master / "data", tmp_path / "data")

    def _make(**groups) -> Params:
        groups["wandb"] = {"dir": str(wandb_env), "experiment": "tiny", "log_images": 4} | groups.get("wandb", {})
        groups["train"] = {"epochs": EPOCHS} | groups.get("train", {})
        groups["experiment"] = GRID | groups.get("experiment", {})
        return params_from_dict(tiny_params_tree(tmp_path / "data", **groups))

    return _make


# ---------------------------------------------------------------------------- the acceptance test


def test_tiny_grid_logs_every_run_offline(project, wandb_env):
    params = project()
    tracking.log_cf(params, run_cf(params))  # attached as the cf_embeddings asset attaches it
    results = {m["run_key"]: m for m in train_grid(params, observer=tracking.WandbObserver)}
    evaluation = run_evaluation(params)
    tracking.log_evaluation(params, evaluation)
    runs = read_offline_runs(wandb_env)
    by_type: dict[str, list] = {}
    for run in runs:
        by_type.setdefault(run["job_type"], []).append(run)
    assert sorted(by_type) == ["cf", "evaluation", "train"]
    assert {run["group"] for run in runs} == {"synthetic/tiny"}

    train = {run["name"]: run for run in by_type["train"]}
    assert set(train) == set(results)
    n_labels = len(
        json.loads((dataset_layout(params).runs / next(iter(results)) / "model.json").read_text())["vocabulary"]
    )
    for key, run in train.items():
        metrics, config = results[key], run["config"]
        for name in ("method", "label_ratio", "cf_weight", "seed"):
            assert config[name] == metrics[name], name
        assert config["train"]["epochs"] == EPOCHS and config["fingerprint"] and "git_commit" in config
        val_rows = [row for row in run["history"] if "val_map" in row]
        assert [row["epoch"] for row in val_rows] == list(range(1, EPOCHS + 1))  # one row per epoch
        terms = {"loss_label", "loss_total", "lr", "images_per_s"} | (
            {"loss_cf"} if key.startswith("with_cf") else set()
        )
        assert terms <= set(val_rows[0])
        assert run["summary"]["test_map"] == pytest.approx(metrics["test_map"])
        cf_head = key.startswith("with_cf")  # the CF head's fit per epoch, and at the best epoch in the summary
        assert ("val_cf_r2" in val_rows[0]) == ("val_cf_cosine" in val_rows[0]) == cf_head
        assert run["summary"].get("val_cf_r2") == (pytest.approx(metrics["val_cf_r2"]) if cf_head else None)
        assert run["summary"]["val_map"] == pytest.approx(metrics["val_map"])  # the best epoch's, not the last's
        assert run["summary"]["val_map"] == pytest.approx(max(row["val_map"] for row in val_rows))
        assert run["metrics"]["val_map"].step_metric == "epoch" and run["metrics"]["val_map"].summary.max
        table = _media(run, "test_ap_per_label")
        content = json.loads((run["files"] / table["path"]).read_text())
        assert content["columns"] == ["label", "ap", "n_positive"] and len(content["data"]) == n_labels
        images = _media(run, "test_samples")
        assert images["count"] == 4 and all(c.startswith("pred: ") for c in images["captions"])
        assert min(images["width"], images["height"]) >= 128  # the 16 px cache images, upscaled
        history = _table(run, "epoch_history")  # the native chart's data: every epoch of train.json
        assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
        assert [row["val_map"] for row in history] == pytest.approx([row["val_map"] for row in val_rows])
        assert _chart(run, "val_map_vs_epoch") == {"x": "epoch", "y": "val_map", "stroke": None}
        [model] = [a for a in run["artifacts"] if not a["input"]]
        inputs = {a["name"] for a in run["artifacts"] if a["input"]}  # CF vectors: only a run that learns from them
        assert inputs == {"dataset-synthetic", "image_cache-synthetic"} | (
            {"cf_vectors-synthetic"} if cf_head else set()
        )
        assert model["name"] == f"model-synthetic-{key}" and model["type"] == "model" and not model["input"]
        assert set(model["entries"]) == {"best.pt", "model.json", "metrics.json"}
        assert model["metadata"]["test_map"] == pytest.approx(metrics["test_map"])
        assert (
            model["metadata"]["config_hash"] == config["config_hash"]
            and model["metadata"]["method"] == metrics["method"]
        )

    [cf] = by_type["cf"]
    assert cf["summary"]["label_probe"]["probe_map"] is not None
    _media(cf, "cf_vs_popularity")
    _media(cf, "cf_vs_popularity_plot")

    [ev] = by_type["evaluation"]
    results_table = _media(ev, "results")
    assert results_table["nrows"] == len(evaluation["table"])
    cells = evaluation["table"]
    by_ratio = _table(ev, "map_by_label_ratio")  # one row per cell: its series and label ratio
    assert len(by_ratio) == len(cells)
    with_cf = cells[cells["method"] == "with_cf"].iloc[0]
    [row] = [r for r in by_ratio if r["series"] == f"with_cf_w{with_cf['cf_weight']:g}"]
    assert row["label_ratio"] == with_cf["label_ratio"] and row["map_mean"] == pytest.approx(with_cf["map_mean"])
    assert {r["series"] for r in by_ratio} >= {"image_only", "popularity", "random"}
    assert _chart(ev, "map_vs_label_ratio_chart") == {"x": "label_ratio", "y": "map_mean", "stroke": "series"}
    _media(ev, "map_vs_label_ratio")
    _media(ev, "improvement")
    assert ev["summary"]["headline"] == json.loads(json.dumps(evaluation["headline"]))


def test_summary_keeps_the_best_epoch_while_training(wandb_env):
    """W&B's own aggregates (define_metric), before the run is scored: the best val_map, not the last epoch's."""
    params = params_from_dict({"wandb": {"mode": "offline", "dir": str(wandb_env)}})
    tracker = tracking.start(params, "train", "run", "group", {})
    tracking.define_epoch_metrics(tracker)
    for epoch, (val_map, loss) in enumerate([(0.5, 0.9), (0.8, 0.7), (0.6, 0.4)], start=1):
        tracker.log({"epoch": epoch, "val_map": val_map, "val_cf_r2": val_map / 2, "loss_total": loss}, step=epoch)
    tracker.finish()
    [run] = read_offline_runs(wandb_env)
    assert run["summary"]["val_map"] == {"max": 0.8} and run["summary"]["val_cf_r2"] == {"max": 0.4}
    assert run["summary"]["loss_total"] == {"min": 0.4} and run["summary"]["epoch"] == 3
    assert run["metrics"]["loss_*"].step_metric == "epoch"  # charts plot against epoch
    assert run["metrics"]["pretrain/*"].step_metric == "pretrain/epoch"


def test_link_metadata_for_dagster():
    from orchestration.defs.metadata import wandb_run_metadata

    online = tracking.RunLink("team/collab_iu/abc123", "https://wandb.ai/team/collab_iu/runs/abc123", "/r/run", False)
    metadata = wandb_run_metadata(online)
    assert metadata["wandb_run"].url == online.url and metadata["wandb_run_path"].text == online.path
    assert "wandb_sync" not in metadata  # uploaded already
    offline = wandb_run_metadata(tracking.RunLink("collab_iu/abc123", None, "/r/my runs/offline-run-x", True))
    assert offline["wandb_run"].path == "/r/my runs/offline-run-x"
    assert offline["wandb_sync"].text == "wandb sync '/r/my runs/offline-run-x'"  # quoted for the shell
    assert wandb_run_metadata(None) == {}  # nothing logged: no link


def test_upscale_is_nearest_neighbour():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    big = tracking.upscale(image, 128)
    assert big.shape == (128, 192, 3)  # factor 64: the short side reaches 128
    assert (big[::64, ::64] == image).all() and (big[63, 63] == image[0, 0]).all()
    large = np.zeros((200, 300, 3), np.uint8)
    assert tracking.upscale(large, 128) is large


# ---------------------------------------------------------------------------- W&B never stops training


def test_unreachable_server_warns_and_training_completes(project, wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    params = project(wandb={"timeout": 2.0})
    with pytest.warns(TrackingWarning, match="could not start"):
        metrics = train_run(params, "image_only-r0.5-w0-s0", progress=False, observer=tracking.WandbObserver(params))
    assert (dataset_layout(params).runs / metrics["run_key"] / METRICS_JSON).exists()
    [run] = read_offline_runs(wandb_env)  # logged offline instead, for `wandb sync` later
    assert run["summary"]["test_map"] == pytest.approx(metrics["test_map"])


def test_wandb_errors_warn_and_training_completes(project, wandb_env, monkeypatch):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("wandb is broken")

    monkeypatch.setattr(wandb, "init", broken)
    params = project()
    with pytest.warns(TrackingWarning, match="wandb is broken"):
        metrics = train_run(params, "image_only-r0.5-w0-s0", progress=False, observer=tracking.WandbObserver(params))
    assert (dataset_layout(params).runs / metrics["run_key"] / METRICS_JSON).exists()
    assert not list((wandb_env / "wandb").glob("offline-run-*"))


def test_failing_log_call_stops_logging_only(project, wandb_env, monkeypatch):
    from wandb.sdk.wandb_run import Run

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Run, "log", broken)
    params = project()
    with pytest.warns(TrackingWarning, match="disk full") as caught:
        metrics = train_run(params, "image_only-r0.5-w0-s0", progress=False, observer=tracking.WandbObserver(params))
    assert len([w for w in caught if issubclass(w.category, TrackingWarning)]) == 1  # warned once, then silent
    assert (dataset_layout(params).runs / metrics["run_key"] / METRICS_JSON).exists()


def test_disabled_writes_nothing(project, wandb_env, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    params = project(wandb={"mode": "disabled"})
    train_run(params, "image_only-r0.5-w0-s0", progress=False, observer=tracking.WandbObserver(params))
    assert not wandb_env.exists()


# ---------------------------------------------------------------------------- modes and the core without wandb


def test_mode_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("")
    monkeypatch.setenv("NETRC", str(netrc))
    auto = WandbParams()
    assert tracking.resolve_mode(auto) == "offline"  # no key: offline, nothing fails
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert tracking.resolve_mode(auto) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.resolve_mode(auto) == "disabled"  # WANDB_MODE wins over auto
    assert tracking.resolve_mode(WandbParams(mode="offline")) == "offline"  # params.yaml wins over WANDB_MODE


def test_run_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_DIR", raising=False)
    assert tracking.run_root(WandbParams(), tmp_path) == tmp_path.resolve()  # <repo>/wandb/, git-ignored
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    assert tracking.run_root(WandbParams(), tmp_path) == (tmp_path / "elsewhere").resolve()
    assert tracking.run_root(WandbParams(dir="runs"), tmp_path) == (tmp_path / "runs").resolve()  # params.yaml wins


def test_dagster_resource_sets_the_mode():
    from orchestration.defs.resources import WandbResource

    params = Params()
    assert WandbResource(mode="disabled").apply(params).wandb.mode == "disabled"
    with pytest.raises(ValueError, match="wandb.mode"):
        WandbResource(mode="loud").apply(params)


def test_dagster_materialisation_logs(tmp_path, monkeypatch, wandb_env):
    import warnings

    import dagster as dg
    import yaml

    from orchestration.defs.build import build_definitions
    from orchestration.defs.resources import WandbResource

    tree = tiny_params_tree(Path("data"), wandb={"dir": "wb"})  # relative to the project root
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    monkeypatch.setenv("COLLAB_IU_ROOT", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ".dagster"))
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the resource's mode wins over it
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    defs = build_definitions()
    assert isinstance(defs.resources["wandb"], WandbResource)
    result = dg.materialize(
        defs.assets,
        selection=dg.AssetSelection.assets("catalogue", "splits", "cf_embeddings"),
        partition_key="synthetic",
        resources=dict(defs.resources) | {"wandb": WandbResource(mode="offline")},
    )
    assert result.success
    [run] = read_offline_runs(tmp_path / "wb")
    assert run["job_type"] == "cf" and run["group"] == "synthetic/default"
    assert run["config"]["cf"]["factors"] == tree["cf"]["factors"]
    [cf_materialisation] = result.asset_materializations_for_node("cf_embeddings")
    assert Path(cf_materialisation.metadata["wandb_run"].path) == run["folder"]  # the link back to W&B
    # lineage: the cf run reads the dataset snapshot and writes the CF vectors, both references to the files
    cf_artifacts = {a["name"]: a for a in run["artifacts"]}
    assert set(cf_artifacts) == {"dataset-synthetic", "cf_vectors-synthetic"}
    dataset, vectors = cf_artifacts["dataset-synthetic"], cf_artifacts["cf_vectors-synthetic"]
    assert dataset["input"] and not vectors["input"] and not run["use_artifact"]  # offline: no use_artifact record
    data = (tmp_path / "data" / "synthetic").resolve()
    assert dataset["entries"]["split/splits.parquet"]["ref"] == (data / "split" / "splits.parquet").as_uri()
    assert {"prepared/items.parquet", "prepared/interactions.parquet"} <= set(dataset["entries"])
    assert vectors["entries"]["cf/item_vectors.npy"]["ref"] == (data / "cf" / "item_vectors.npy").as_uri()
    assert not any(e["local_path"] for a in cf_artifacts.values() for e in a["entries"].values())  # nothing copied

    # a trained model: the parameters that made its inputs, and the Dagster run that trained it
    resources = dict(defs.resources) | {"wandb": WandbResource(mode="offline")}
    inputs = dg.materialize(
        defs.assets, selection=dg.AssetSelection.assets("image_cache"), partition_key="synthetic", resources=resources
    )
    assert inputs.success
    key = dg.MultiPartitionKey({"dataset": "synthetic", "run": "with_cf-r1-w2-s0"})
    trained = dg.materialize(
        defs.assets, selection=dg.AssetSelection.assets("trained_model"), partition_key=key, resources=resources
    )
    assert trained.success
    [train] = [r for r in read_offline_runs(tmp_path / "wb") if r["job_type"] == "train"]
    assert train["config"]["dagster_run_id"] == trained.run_id
    metrics = json.loads(
        (tmp_path / "data" / "synthetic" / "runs" / key.keys_by_dimension["run"] / METRICS_JSON).read_text()
    )
    best = max(row["val_map"] for row in train["history"] if "val_map" in row)
    assert train["summary"]["val_map"] == pytest.approx(best) == pytest.approx(metrics["val_map"])
    inputs = {a["name"]: a for a in train["artifacts"] if a["input"]}
    assert set(inputs) == {"dataset-synthetic", "image_cache-synthetic", "cf_vectors-synthetic"}
    assert inputs["dataset-synthetic"]["digest"] == dataset["digest"]  # the same version as the cf run's
    assert inputs["cf_vectors-synthetic"]["digest"] == vectors["digest"]  # the cf run's output, used here
    assert "cache/images.npy" not in inputs["image_cache-synthetic"]["entries"]  # too large: left out
    [model] = [a for a in train["artifacts"] if not a["input"]]
    assert model["name"] == "model-synthetic-with_cf-r1-w2-s0" and model["type"] == "model"
    assert model["entries"]["best.pt"]["local_path"]  # copied, uploaded by `wandb sync`
    assert model["metadata"]["test_map"] == pytest.approx(metrics["test_map"])
    # the link back: the materialisation names the offline run's folder and how to upload it
    [materialisation] = trained.asset_materializations_for_node("trained_model")
    link = materialisation.metadata
    assert Path(link["wandb_run"].path) == train["folder"]
    assert link["wandb_run_path"].text.endswith(train["id"])
    assert link["wandb_sync"].text == f"wandb sync {train['folder']}"
    for group in ("cf", "split", "cache", "synthetic", "prepare"):
        logged = train["config"][group]  # the whole group, with every value the tiny project set
        assert all(logged[k] == v for k, v in tree.get(group, {}).items()) and len(logged) > 1, group
    assert train["config"]["cf"]["factors"] == tree["cf"]["factors"]
    assert train["config"]["split"]["min_items_per_label"] == 3


def test_core_runs_without_wandb(tmp_path):
    code = """
import sys, warnings
sys.modules["wandb"] = None  # `import wandb` now raises ImportError
import collab_iu.experiment, collab_iu.stages, collab_iu.evaluate
from orchestration import tracking
from collab_iu.params import params_from_dict
params = params_from_dict({"wandb": {"mode": "offline", "dir": sys.argv[1]}})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tracker = tracking.start(params, "train", "run", "group", {})
tracker.log({"a": 1}); tracker.finish()
assert not tracker.active
assert any("cannot be imported" in str(w.message) for w in caught), caught
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert not (tmp_path / "wandb").exists()
