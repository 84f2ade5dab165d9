"""The optional production deployment (deploy/, docs/deploy.md).

A Postgres-backed instance (deploy/dagster-postgres.yaml), tested against a real PostgreSQL server that the test
starts: the project's own `collab-iu materialize` records its runs and materialisations there. The Kubernetes files
(Helm values, the k8s_job_executor's configuration, the code location) checked against dagster-k8s's schemas and
loaded as the code server loads them; no cluster here: nothing is launched on Kubernetes.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from helpers import BIN, REPO, run_command, tiny_params_tree

from collab_iu.steps import DATA_STEPS
from orchestration.defs.project import ensure_dagster_home

DEPLOY = REPO / "deploy"
PG_YAML = DEPLOY / "dagster-postgres.yaml"
PG_ENV = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")
RELEASE = "dagster"  # the Helm release name docs/deploy.md installs (names the chart's ConfigMaps and Secret)
GRID = {"methods": ["with_cf"], "label_ratios": [1.0], "seeds": [0], "workers": 1}
KEY = "with_cf-r1-w2-s0"


def _values() -> dict:
    return yaml.safe_load((DEPLOY / "helm-values.yaml").read_text())


def _user_deployment() -> dict:
    (deployment,) = _values()["dagster-user-deployments"]["deployments"]
    return deployment


def _executor_config() -> dict:
    return yaml.safe_load((DEPLOY / "k8s_executor.yaml").read_text())


# ---------------------------------------------------------------------------------------------------------------------
# The Postgres instance file


def test_postgres_instance_file_is_valid_and_keeps_the_embedded_settings(tmp_path, monkeypatch):
    """Dagster's instance schema accepts it; its pool granularity and telemetry are the embedded instance's;
    `collab-iu`'s ensure_dagster_home leaves it byte for byte (the `env:` references stay references)."""
    from dagster._core.instance.config import dagster_instance_config

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    embedded = yaml.safe_load((ensure_dagster_home(tmp_path / "embedded") / "dagster.yaml").read_text())
    home = tmp_path / "pg"
    home.mkdir()
    shutil.copy(PG_YAML, home / "dagster.yaml")
    config, _ = dagster_instance_config(str(home))
    assert {k: config[k] for k in ("concurrency", "telemetry")} == {
        k: embedded[k] for k in ("concurrency", "telemetry")
    }
    db = config["storage"]["postgres"]["postgres_db"]
    assert {field: value["env"] for field, value in db.items() if isinstance(value, dict)} == {
        "hostname": "DAGSTER_PG_HOST",
        "port": "DAGSTER_PG_PORT",
        "username": "DAGSTER_PG_USER",
        "password": "DAGSTER_PG_PASSWORD",
        "db_name": "DAGSTER_PG_DB",
    }
    assert _driver(db["scheme"]) == "psycopg2"  # the driver dagster-postgres installs, whatever SQLAlchemy's default
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_dagster_home()
    assert (home / "dagster.yaml").read_bytes() == PG_YAML.read_bytes()


def _driver(scheme: str) -> str:
    """The DBAPI module SQLAlchemy loads for a dagster-postgres URL of `scheme` (SQLAlchemy 2.1 takes a bare
    `postgresql` to mean psycopg 3, which dagster-postgres does not install)."""
    from dagster_postgres.utils import get_conn_string
    from sqlalchemy.engine import make_url

    dialect = make_url(get_conn_string("u", "p", "h", "d", scheme=scheme)).get_dialect()
    dialect.import_dbapi()  # ImportError when the driver is missing
    return dialect.driver


# ---------------------------------------------------------------------------------------------------------------------
# Kubernetes: the executor, the run launcher and the code location, against dagster-k8s's schemas


def test_k8s_executor_config_is_accepted_by_the_executor_schema():
    from dagster._config import validate_config
    from dagster_k8s import k8s_job_executor

    schema = k8s_job_executor.config_schema.config_type
    config = _executor_config()
    result = validate_config(schema, config)
    assert result.success, [e.message for e in result.errors]
    gpu = config["per_step_k8s_config"]["trained_model"]["container_config"]["resources"]
    assert gpu["requests"]["nvidia.com/gpu"] == gpu["limits"]["nvidia.com/gpu"] == "1"
    broken = {"per_step_k8s_config": {"trained_model": {"container": gpu}}}  # a misspelt key is refused
    assert not validate_config(schema, broken).success


def _chart_run_launcher(values: dict) -> dict:
    """The run_launcher section the chart (dagster/dagster 1.13, helpers/instance/_run-launcher.tpl) renders into
    the instance's dagster.yaml from these values: the keys our values set, and those the chart always sets."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    config = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or "collab-iu",
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": RELEASE,
        "dagster_home": values["global"]["dagsterHome"],
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    if k8s.get("envSecrets"):
        config["env_secrets"] = [s["name"] for s in k8s["envSecrets"]]
    names = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config"}
    names |= {"podTemplateSpecMetadata": "pod_template_spec_metadata", "jobSpecConfig": "job_spec_config"}
    names |= {"jobMetadata": "job_metadata"}
    if k8s.get("runK8sConfig"):
        config["run_k8s_config"] = {names[key]: value for key, value in k8s["runK8sConfig"].items()}
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def _chart_postgres(values: dict) -> dict:
    """The storage config the chart renders (helpers/instance/_postgresql.tpl) for the chart's own PostgreSQL."""
    pg = values["postgresql"]
    db = {"username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"}}
    db |= {"hostname": f"{RELEASE}-postgresql", "db_name": pg["postgresqlDatabase"], "port": 5432, "params": {}}
    return {"postgres_db": db | {"scheme": pg["postgresqlScheme"]}}


def test_the_instance_the_chart_renders_is_accepted(tmp_path):
    """The K8sRunLauncher's and the Postgres storages' schemas accept the config the chart makes of the values,
    and Dagster's instance schema the instance around them (with the embedded instance's pool granularity and
    telemetry, so that the code location leaves the chart's read-only dagster.yaml alone)."""
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    values = _values()
    launcher = _chart_run_launcher(values)
    result = validate_config(K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, [e.message for e in result.errors]
    storage = _chart_postgres(values)
    for kind in (PostgresRunStorage, PostgresEventLogStorage, PostgresScheduleStorage):
        assert validate_config(kind.config_type(), storage).success, kind
    assert _driver(storage["postgres_db"]["scheme"]) == "psycopg2"
    instance = {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": storage},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage"},
        "schedule_storage": {"module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage"},
        "run_launcher": launcher,
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"},
        "concurrency": {"pools": {"granularity": values["concurrency"]["pools"]["granularity"]}},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }
    instance["event_log_storage"]["config"] = instance["schedule_storage"]["config"] = storage
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["concurrency"] == {"pools": {"granularity": "run"}} and config["telemetry"] == {"enabled": False}
    assert values["concurrency"]["enabled"] is True and values["dagsterDaemon"]["runCoordinator"]["enabled"] is True


def _code_location_context(deployment: dict) -> dict:
    """The container context the chart gives the code location and, with includeConfigInLaunchedRuns, its run and
    step pods (charts/dagster-user-deployments, helpers/_helpers.tpl: dagsterUserDeployments.k8sContainerContext)."""
    return {
        "k8s": {
            "image_pull_policy": deployment["image"]["pullPolicy"],
            "env_config_maps": [f"{RELEASE}-{deployment['name']}-user-env"],
            "env_secrets": [s["name"] for s in deployment.get("envSecrets") or []],
            "volume_mounts": deployment["volumeMounts"],
            "volumes": deployment["volumes"],
            "resources": deployment["resources"],
            "namespace": "collab-iu",
            "service_account_name": f"{RELEASE}-user-deployments",
            "env": deployment["env"],
            "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
        }
    }


def _step_pod(step: str) -> dict:
    """What a step pod's container gets: the code location's context, then the executor's step_k8s_config, then its
    per_step_k8s_config entry (the order of dagster_k8s.executor.K8sStepHandler._get_container_context)."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    assert _user_deployment()["includeConfigInLaunchedRuns"]["enabled"] is True
    config = _executor_config()
    context = K8sContainerContext.create_from_config(_code_location_context(_user_deployment()))  # schema-checked
    context = context.merge(
        K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config.get("step_k8s_config", {})))
    )
    per_step = config.get("per_step_k8s_config", {}).get(step, {})
    context = context.merge(K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(per_step)))
    return context.run_k8s_config.to_dict()


def test_trained_model_steps_request_a_gpu_and_the_others_none():
    training, cache = _step_pod("trained_model"), _step_pod("image_cache")
    assert training["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert training["container_config"]["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in training["pod_spec_config"][
        "tolerations"
    ]
    assert not any("gpu" in key for part in cache["container_config"]["resources"].values() for key in part)
    assert cache["container_config"]["resources"]["requests"]["cpu"] == "2"
    for pod in (training, cache):  # both see the shared data volume and the instance file
        mounts = {
            m["mount_path"] if "mount_path" in m else m["mountPath"] for m in pod["container_config"]["volume_mounts"]
        }
        assert {"/app/data", "/opt/dagster/dagster_home/dagster.yaml"} <= mounts


def test_helm_values_dockerfile_and_volume_agree():
    """The paths, names and commands the Helm values, the Dockerfile, the volume claim and the chart share."""
    values, deployment = _values(), _user_deployment()
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert "-c constraints.txt" in dockerfile and "['k8s']" in dockerfile
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert cmd[:7] == ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", str(deployment["port"])]
    assert cmd[7:] == deployment["codeServerArgs"]  # what the chart runs: `dagster code-server start ...` + these
    location_file = Path(cmd[cmd.index("-f") + 1]).relative_to("/app")
    assert (REPO / location_file).is_file() and f"COPY deploy/{location_file.name} " in dockerfile
    assert "ENV " in dockerfile and "COLLAB_IU_ROOT=/app" in dockerfile
    assert {"name": "COLLAB_IU_ROOT", "value": "/app"} in deployment["env"]
    pvc = yaml.safe_load((DEPLOY / "data-pvc.yaml").read_text())
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    volumes = {v["name"]: v for v in deployment["volumes"]}
    mounts = {m["name"]: m for m in deployment["volumeMounts"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert mounts["data"]["mountPath"] == "/app/data"
    assert volumes["dagster-instance"]["configMap"]["name"] == f"{RELEASE}-instance"
    assert mounts["dagster-instance"]["mountPath"] == f"{values['global']['dagsterHome']}/dagster.yaml"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagster-user-deployments"]["enabled"] and values["dagster-user-deployments"]["enableSubchart"]
    assert values["postgresql"]["enabled"] is True


def _load_code_location():
    spec = importlib.util.spec_from_file_location("collab_iu_k8s_definitions", DEPLOY / "k8s_definitions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_k8s_code_location_runs_every_job_on_the_k8s_executor(tmp_path, monkeypatch):
    """deploy/k8s_definitions.py as the code server loads it, on a tiny project: every named job and the UI's asset
    job use the k8s_job_executor, and the steps deploy/k8s_executor.yaml configures by name exist."""
    project = tmp_path / "project"
    project.mkdir()
    tree = tiny_params_tree(Path("data"), experiment=GRID, wandb={"mode": "disabled"})
    (project / "params.yaml").write_text(yaml.safe_dump(tree))
    monkeypatch.setenv("COLLAB_IU_ROOT", str(project))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    defs = _load_code_location().defs()
    jobs = {name: defs.resolve_job_def(name) for name in ("pipeline", "training")}
    jobs["(the UI's asset job)"] = defs.resolve_implicit_global_asset_job_def()
    assert {name: job.executor_def.name for name, job in jobs.items()} == dict.fromkeys(jobs, "k8s")
    steps = set(jobs["training"].graph.node_dict) | set(jobs["pipeline"].graph.node_dict)
    assert set(_executor_config()["per_step_k8s_config"]) <= steps
    assert jobs["pipeline"].partitions_def is not None and jobs["training"].partitions_def is not None


# ---------------------------------------------------------------------------------------------------------------------
# A real PostgreSQL server


def _pg_program(name: str) -> str | None:
    """PostgreSQL's server program `name`: on PATH, else Debian's /usr/lib/postgresql/<version>/bin/."""
    version = lambda path: [int(part) for part in path.parts[-3].split(".") if part.isdigit()]  # noqa: E731
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=version)
    return shutil.which(name) or (str(versions[-1]) if versions else None)


def _server_user() -> tuple[list[str], int | None]:
    """(the command prefix, the uid) to run PostgreSQL's programs with: initdb and postgres refuse root, so as root
    they run as the `postgres` (Debian's package) or `nobody` account through runuser."""
    if os.geteuid() != 0:
        return [], None
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")  # root's PATH may lack sbin
    if runuser is None:
        pytest.skip("running as root and `runuser` is missing: PostgreSQL's initdb refuses to run as root")
    for name in ("postgres", "nobody"):
        try:
            return [runuser, "-u", name, "--"], pwd.getpwnam(name).pw_uid
        except KeyError:
            continue
    pytest.skip("running as root with no `postgres` or `nobody` account to run PostgreSQL's server as")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(folder: Path, prefix: list[str], password: str) -> int:
    """initdb a cluster in `folder` (superuser `dagster`, password auth) and start it on a free local port."""
    (folder / "pw").write_text(password + "\n")
    initdb, pg_ctl = _pg_program("initdb"), _pg_program("pg_ctl")
    init = [initdb, "-D", str(folder / "data"), "-U", "dagster", f"--pwfile={folder / 'pw'}", "-A", "scram-sha-256"]
    out = subprocess.run([*prefix, *init, "-E", "UTF8", "--no-sync"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"initdb failed:\n{out.stdout}{out.stderr}"
    port = _free_port()
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder} -c fsync=off"
    start = [pg_ctl, "-D", str(folder / "data"), "-l", str(folder / "server.log"), "-o", options, "-w", "-t", "60"]
    out = subprocess.run([*prefix, *start, "start"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{out.stdout}{out.stderr}\n{(folder / 'server.log').read_text()[-2000:]}"
    return port


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own, in a temporary folder, on a free 127.0.0.1 port, with an empty database
    `collab_iu`: the DAGSTER_PG_* variables that reach it. Stopped and removed afterwards."""
    if not (_pg_program("initdb") and _pg_program("pg_ctl")):
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed: `apt-get install postgresql`")
    import psycopg2

    prefix, uid = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="collab-iu-pg-"))  # under /tmp: the server's account can enter it
    if uid is not None:
        os.chown(folder, uid, -1)
    password = "collab-iu-test"
    try:
        port = _start_server(folder, prefix, password)
        connection = psycopg2.connect(host="127.0.0.1", port=port, user="dagster", password=password, dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:  # autocommit: CREATE DATABASE refuses a transaction
            cursor.execute("CREATE DATABASE collab_iu")
        connection.close()
        yield {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_USER": "dagster"} | {
            "DAGSTER_PG_PASSWORD": password,
            "DAGSTER_PG_DB": "collab_iu",
        }
    finally:
        if (folder / "data" / "postmaster.pid").exists():
            stop = [_pg_program("pg_ctl"), "-D", str(folder / "data"), "-m", "fast", "-w", "stop"]
            subprocess.run([*prefix, *stop], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def _sql(pg: dict, query: str) -> list[tuple]:
    import psycopg2

    with (
        psycopg2.connect(
            host=pg["DAGSTER_PG_HOST"],
            port=int(pg["DAGSTER_PG_PORT"]),
            user=pg["DAGSTER_PG_USER"],
            password=pg["DAGSTER_PG_PASSWORD"],
            dbname=pg["DAGSTER_PG_DB"],
        ) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute(query)
        return cursor.fetchall()


@pytest.mark.e2e
def test_postgres_instance_records_the_project_runs(postgres, tmp_path, monkeypatch):
    """`collab-iu materialize` with DAGSTER_HOME holding deploy/dagster-postgres.yaml: the data assets and one
    trained model; their runs, materialisations and the `training` pool's limit are in the PostgreSQL database
    (read back through the DagsterInstance and with plain SQL), and no SQLite file was written."""
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus

    project = tmp_path / "project"
    project.mkdir()
    tree = tiny_params_tree(Path("data"), experiment=GRID, wandb={"mode": "disabled"})
    (project / "params.yaml").write_text(yaml.safe_dump(tree))
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(PG_YAML, home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(home), "COLLAB_IU_ROOT": str(project), **postgres}
    data_assets = [s.asset for s in DATA_STEPS]
    run_command([str(BIN / "collab-iu"), "materialize", *data_assets], project, **env)
    run_command(
        [str(BIN / "collab-iu"), "materialize", "trained_model", "--partition", f"synthetic|{KEY}"], project, **env
    )
    assert (project / "data/synthetic/runs" / KEY / "best.pt").is_file()

    for name, value in postgres.items():
        monkeypatch.setenv(name, value)
    instance = DagsterInstance.from_config(str(home))
    try:
        storages = (instance.run_storage, instance.event_log_storage, instance.schedule_storage)
        assert [type(s).__name__ for s in storages] == [
            "PostgresRunStorage",
            "PostgresEventLogStorage",
            "PostgresScheduleStorage",
        ]
        runs = instance.get_runs()
        assert sorted(r.job_name for r in runs) == ["pipeline"] * len(data_assets) + ["training"]
        assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}
        expected = {asset: "synthetic" for asset in data_assets} | {"trained_model": f"synthetic|{KEY}"}
        for asset, partition in expected.items():
            event = instance.get_latest_materialization_event(AssetKey(asset))
            assert event is not None and event.dagster_event.partition == partition, asset
        assert instance.event_log_storage.get_concurrency_info("training").slot_count == GRID["workers"]
    finally:
        instance.dispose()
    rows = _sql(postgres, "SELECT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
    assert sorted(yaml.safe_load(key)[0] for (key,) in rows) == sorted(expected)  # asset keys are JSON lists
    assert _sql(postgres, "SELECT count(*) FROM runs") == [(len(data_assets) + 1,)]
    assert not list(home.rglob("*.db")), "a SQLite file was written beside the Postgres instance"
    assert (home / "dagster.yaml").read_bytes() == PG_YAML.read_bytes()
