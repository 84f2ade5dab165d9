"""`dagster dev` as a new user meets it: the UI answers, shows the asset graph, and its button materialises."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import REPO, tiny_params_tree

from orchestration.defs.project import ensure_dagster_home

pytestmark = pytest.mark.slow
DAGSTER = Path(sys.executable).parent / "dagster"
DATA_ASSETS = ["catalogue", "splits", "cf_embeddings", "image_cache"]


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


@pytest.fixture
def dagster_dev(tmp_path):
    """`dagster dev` from the repository root, on a free port, in its own process group, on a tiny project."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params_tree(Path("data"))))
    home = ensure_dagster_home(project)
    env = os.environ | {"COLLAB_IU_ROOT": str(project), "DAGSTER_HOME": str(home), "PYTHONWARNINGS": "ignore"}
    port = _free_port()
    log = tmp_path / "dagster-dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(DAGSTER), "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for_ui(port, proc, log)
        yield port, project, log
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
    dims = {name: {d["name"]: d["partitionKeys"] for d in node["partitionKeysByDimension"]} for name, node in nodes.items()}
    for name in [*DATA_ASSETS, "evaluation"]:
        assert list(dims[name].values()) == [["synthetic"]], name
    assert dims["trained_model"]["dataset"] == ["synthetic"]
    assert "with_cf-r0.3-w2-s1" in dims["trained_model"]["run"] and len(dims["trained_model"]["run"]) == 8
    assert ["trained_model"] in [d["path"] for d in nodes["evaluation"]["dependencyKeys"]]
    assert [d["path"] for d in nodes["paper_report"]["dependencyKeys"]] == [["evaluation"]]
    assert dims["paper_report"] == {}  # unpartitioned: every dataset at once

    repo = _graphql(port, LOCATION)["repositoriesOrError"]["nodes"][0]
    params = {
        "selector": {
            "repositoryLocationName": repo["location"]["name"],
            "repositoryName": repo["name"],
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": [name]} for name in DATA_ASSETS],
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "synthetic"}]},
        "runConfigData": {},
        "mode": "default",
    }
    launched = _graphql(port, LAUNCH, {"executionParams": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline, status = time.monotonic() + 300, None
    while time.monotonic() < deadline:
        status = _graphql(port, STATUS, {"runId": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    assert status == "SUCCESS", f"run {run_id} ended {status}:\n{log.read_text()[-3000:]}"
    base = project / "data" / "synthetic"
    for rel in ("prepared/items.parquet", "split/splits.parquet", "cf/item_vectors.npy", "cache/images.npy"):
        assert (base / rel).is_file(), rel
