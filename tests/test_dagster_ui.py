"""`dagster dev` as a new user meets it: the UI answers, shows the asset graph, and its button materialises."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from helpers import BIN, REPO, run_command, tiny_dvc_repo, tiny_params_tree

from collab_iu.features import feature_spec
from collab_iu.models import create_backbone
from collab_iu.params import params_from_dict
from collab_iu.steps import DATA_STEPS
from orchestration.defs.partitions import DATASET, RUN
from orchestration.defs.project import ensure_dagster_home

pytestmark = pytest.mark.e2e
DAGSTER = Path(sys.executable).parent / "dagster"
DATA_ASSETS = [s.asset for s in DATA_STEPS]
CLI = Path(sys.executable).parent / "collab-iu"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body["errors"]
    return body["data"]


def _wait_for_ui(port: int, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dagster dev exited:\n{log.read_text()[-3000:]}"
        try:
            data = _graphql(port, "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }")
            if data["repositoriesOrError"].get("nodes"):
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"the UI did not answer within {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    """`dagster dev` from the repository root, on a free port, in its own process group, on a tiny project
    (one for the module: each test leaves the project materialised further)."""
    tmp_path = tmp_path_factory.mktemp("ui")
    project = tmp_path / "project"
    project.mkdir()
    tree = tiny_params_tree(Path("data"), experiment={"workers": 1}, wandb={"mode": "disabled"})
    (project / "params.yaml").write_text(yaml.safe_dump(tree))
    with _dagster_dev(project, tmp_path) as port:
        yield port, project, tmp_path / "dagster-dev.log"


@contextmanager
def _dagster_dev(project: Path, tmp_path: Path) -> Iterator[int]:
    """`dagster dev` on `project` (its port), stopped at the end; its log in tmp_path/dagster-dev.log."""
    with pytest.MonkeyPatch.context() as env_vars:  # the project's own instance, even in an activated venv
        env_vars.delenv("DAGSTER_HOME", raising=False)  # (.venv/bin/activate exports the repository's)
        home = ensure_dagster_home(project)
    env = os.environ | {"COLLAB_IU_ROOT": str(project), "DAGSTER_HOME": str(home), "PYTHONWARNINGS": "ignore"}
    port = _free_port()
    log = tmp_path / "dagster-dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(DAGSTER), "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_ui(port, proc, log)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


ASSET_GRAPH = """
{ assetNodes { assetKey { path } dependencyKeys { path }
    partitionKeysByDimension { name partitionKeys } } }
"""
LOCATION = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
STATUS = "query Status($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"


def test_ui_shows_the_graph_and_materialises_the_default_dataset(dagster_dev):
    port, project, log = dagster_dev
    nodes = {"/".join(n["assetKey"]["path"]): n for n in _graphql(port, ASSET_GRAPH)["assetNodes"]}
    assert set(nodes) == {*DATA_ASSETS, "trained_model", "evaluation", "paper_report"}
    dims = {
        name: {d["name"]: d["partitionKeys"] for d in node["partitionKeysByDimension"]} for name, node in nodes.items()
    }
    for name in [*DATA_ASSETS, "evaluation"]:
        assert list(dims[name].values()) == [["synthetic"]], name
    assert dims["trained_model"]["dataset"] == ["synthetic"]
    assert "with_cf-r0.3-w2-s1" in dims["trained_model"]["run"] and len(dims["trained_model"]["run"]) == 8
    assert ["trained_model"] in [d["path"] for d in nodes["evaluation"]["dependencyKeys"]]
    assert [d["path"] for d in nodes["paper_report"]["dependencyKeys"]] == [["evaluation"]]
    assert dims["paper_report"] == {}  # unpartitioned: every dataset at once

    run_id = _launch(port, DATA_ASSETS, "synthetic")
    status = _wait(port, run_id, log)
    assert status == "SUCCESS", f"run {run_id} ended {status}:\n{log.read_text()[-3000:]}"
    base = project / "data" / "synthetic"
    for rel in ("prepared/items.parquet", "split/splits.parquet", "cf/item_vectors.npy", "cache/images.npy"):
        assert (base / rel).is_file(), rel


REEXECUTE = """
mutation Reexecute($parentRunId: String!) {
  launchPipelineReexecution(reexecutionParams: {parentRunId: $parentRunId, strategy: ALL_STEPS}) {
    __typename
    ... on LaunchRunSuccess { run { runId jobName tags { key value } } }
    ... on PythonError { message }
  }
}
"""
RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) { ... on Runs { results { runId jobName status startTime endTime runConfigYaml
    tags { key value } } } }
}
"""
BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
BACKFILL_STATUS = (
    "query B($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }"
)


def _partition_tags(partition: str) -> dict[str, str]:
    """The tags the UI gives a run of one partition (a multi-partition key also per dimension)."""
    tags = {"dagster/partition": partition}
    if "|" in partition:
        dataset, run = partition.split("|")
        tags |= {f"dagster/partition/{DATASET}": dataset, f"dagster/partition/{RUN}": run}
    return tags


def _launch(port: int, assets: list[str], partition: str) -> str:
    """Launch the implicit asset job over `assets` for one partition, as the UI's Materialize button does; the run id."""
    repo = _graphql(port, LOCATION)["repositoriesOrError"]["nodes"][0]
    params = {
        "selector": {
            "repositoryLocationName": repo["location"]["name"],
            "repositoryName": repo["name"],
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": [name]} for name in assets],
        },
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in _partition_tags(partition).items()]},
        "runConfigData": {},
        "mode": "default",
    }
    launched = _graphql(port, LAUNCH, {"executionParams": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def _wait(port: int, run_id: str, log: Path, timeout: float = 300) -> str:
    deadline, status = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        status = _graphql(port, STATUS, {"runId": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(1)
    raise AssertionError(f"run {run_id} still {status} after {timeout}s:\n{log.read_text()[-3000:]}")


def _runs(port: int, **tags: str) -> list[dict]:
    filter_ = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
    return _graphql(port, RUNS, {"filter": filter_})["runsOrError"]["results"]


def test_a_run_of_the_cli_is_reexecuted_from_the_ui(dagster_dev):
    port, project, log = dagster_dev
    env = os.environ | {"COLLAB_IU_ROOT": str(project), "DAGSTER_HOME": str(project / ".dagster")}
    done = subprocess.run([str(CLI), "cf"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    runs = [r for r in _runs(port, **{"collab_iu/entry": "cli"}) if r["jobName"] == "pipeline"]
    assert len(runs) == 1, [(r["runId"], r["status"], r["tags"]) for r in runs]
    [parent] = runs
    assert parent["status"] == "SUCCESS"
    assert "cf:" in parent["runConfigYaml"] and "factors: 8" in parent["runConfigYaml"]  # every key the step read
    launched = _graphql(port, REEXECUTE, {"parentRunId": parent["runId"]})["launchPipelineReexecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    child = launched["run"]
    assert child["jobName"] == "pipeline"
    tags = {t["key"]: t["value"] for t in child["tags"]}
    assert tags["dagster/parent_run_id"] == parent["runId"] and tags["dagster/partition"] == "synthetic"
    assert tags["collab_iu/invocation"] == {t["key"]: t["value"] for t in parent["tags"]}["collab_iu/invocation"]
    assert _wait(port, child["runId"], log) == "SUCCESS"


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_max_overlap_counts_runs_at_once():
    assert _max_overlap([(0, 2), (1, 3), (2.5, 4)]) == 2  # [2.5, 3] overlaps the second only
    assert _max_overlap([(0, 1), (1, 2)]) == 1  # one ends as the next starts


def test_materialize_all_from_the_ui_trains_at_most_the_limit_at_once(dagster_dev):
    """A backfill of trained_model partitions (the UI's Materialize all) runs one training at a time here
    (experiment.workers: 1, so the `training` pool has one slot)."""
    port, project, log = dagster_dev
    env = os.environ | {"COLLAB_IU_ROOT": str(project), "DAGSTER_HOME": str(project / ".dagster")}
    inputs = [str(CLI), "materialize", *DATA_ASSETS]  # the models' inputs, through the CLI
    done = subprocess.run(inputs, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    partitions = ["synthetic|image_only-r0.3-w0-s0", "synthetic|with_cf-r0.3-w2-s0"]
    params = {"assetSelection": [{"path": ["trained_model"]}], "partitionNames": partitions}
    launched = _graphql(port, BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill, deadline, status = launched["backfillId"], time.monotonic() + 400, None
    while time.monotonic() < deadline:
        status = _graphql(port, BACKFILL_STATUS, {"id": backfill})["partitionBackfillOrError"]["status"]
        if status.startswith("COMPLETED") or status in ("FAILED", "CANCELED"):
            break
        time.sleep(2)
    runs = _runs(port, **{"dagster/backfill": backfill})
    assert len(runs) == 2 and {r["status"] for r in runs} == {"SUCCESS"}, (status, runs, log.read_text()[-3000:])
    assert _max_overlap([(r["startTime"], r["endTime"]) for r in runs]) == 1
    for key in partitions:
        assert (project / "data" / "synthetic" / "runs" / key.split("|")[1] / "metrics.json").is_file()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_run_from_the_feature_cache_is_the_same_from_the_cli_the_ui_and_dvc(tmp_path_factory):
    """train.finetune tail: the feature cache, best.pt and metrics.json are byte-identical whichever entry point
    made them: `collab-iu run`, the UI's buttons (the implicit asset job) and `dvc repro`."""
    base = tmp_path_factory.mktemp("modes")
    torch.manual_seed(0)
    weights = base / "small_cnn.pt"  # one absolute path: it is part of the run's config
    torch.save(create_backbone("small_cnn")[0].state_dict(), weights)
    groups = {
        "train": {"finetune": "tail", "weights": str(weights)},
        "experiment": {"methods": ["with_cf"], "label_ratios": [1.0], "seeds": [0], "workers": 1},
        "wandb": {"mode": "disabled"},
    }
    key = "with_cf-r1-w2-s0"
    spec_key = feature_spec(params_from_dict(tiny_params_tree(Path("data"), **groups))).key
    outputs = (f"features/{spec_key}/features.npy", f"runs/{key}/best.pt", f"runs/{key}/metrics.json")
    made = {}

    cli = base / "cli"
    cli.mkdir()
    (cli / "params.yaml").write_text(yaml.safe_dump(tiny_params_tree(Path("data"), **groups)))
    run_command([str(CLI), "run"], cli)
    made["cli"] = {o: _sha256(cli / "data/synthetic" / o) for o in outputs}

    ui = base / "ui"
    ui.mkdir()
    (ui / "params.yaml").write_text(yaml.safe_dump(tiny_params_tree(Path("data"), **groups)))
    with _dagster_dev(ui, base) as port:
        for assets, partition in ((DATA_ASSETS, "synthetic"), (["trained_model"], f"synthetic|{key}")):
            run_id = _launch(port, assets, partition)
            assert _wait(port, run_id, base / "dagster-dev.log") == "SUCCESS", (base / "dagster-dev.log").read_text()[
                -3000:
            ]
    made["ui"] = {o: _sha256(ui / "data/synthetic" / o) for o in outputs}

    dvc = tiny_dvc_repo(base / "dvc", groups["experiment"], train=groups["train"])
    run_command([str(BIN / "dvc"), "repro", "train-synthetic-cf"], dvc)
    made["dvc"] = {o: _sha256(dvc / "data/synthetic" / o) for o in outputs}
    assert made["cli"] == made["ui"] == made["dvc"]
