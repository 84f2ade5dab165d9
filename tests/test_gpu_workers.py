"""Filling the device: how many trainings run at once, and which GPU each training process sees."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from collab_iu.params import params_from_dict
from orchestration import pipeline
from orchestration.defs.project import GPUS_ENV, training_gpus, training_limit
from orchestration.pipeline import worker_devices

REPORT_DIR_ENV = "COLLAB_IU_TEST_REPORT_DIR"  # where the fake trainings below write what their process saw


def test_each_gpu_gets_runs_per_gpu_workers_taken_in_turn():
    assert worker_devices(1, 1) == ["0"]
    assert worker_devices(1, 3) == ["0", "0", "0"]
    assert worker_devices(2, 1) == ["0", "1"]
    assert worker_devices(2, 2) == ["0", "1", "0", "1"]  # the first two workers are on different GPUs
    assert worker_devices(3, 2) == ["0", "1", "2", "0", "1", "2"]


def test_the_callers_visible_devices_name_the_gpus():
    assert worker_devices(2, 2, "4,6") == ["4", "6", "4", "6"]
    assert worker_devices(1, 2, "GPU-8f3a, GPU-77c1") == ["GPU-8f3a", "GPU-8f3a"]  # the visible device 0 only
    assert worker_devices(2, 1, "") == ["0", "1"]  # unset and empty alike
    with pytest.raises(ValueError, match="names fewer than the 2 GPUs"):
        worker_devices(2, 1, "3")


@pytest.mark.parametrize(
    ("gpus", "runs_per_gpu", "workers", "limit"), [(0, 4, 3, 3), (1, 1, 3, 1), (1, 4, 3, 4), (2, 3, 1, 6)]
)
def test_the_training_limit_is_the_gpu_workers_or_the_cpu_workers(gpus, runs_per_gpu, workers, limit):
    params = params_from_dict({"experiment": {"runs_per_gpu": runs_per_gpu, "workers": workers}})
    assert training_limit(params, gpus) == limit
    if gpus:  # the Dagster pool's limit is the number of processes `collab-iu run` trains in
        assert len(worker_devices(gpus, runs_per_gpu)) == limit


def test_runs_per_gpu_defaults_to_one_and_must_be_positive():
    assert params_from_dict({}).experiment.runs_per_gpu == 1
    with pytest.raises(ValueError, match="runs_per_gpu"):
        params_from_dict({"experiment": {"runs_per_gpu": 0}})


def test_a_pinned_worker_counts_the_gpus_the_pipeline_saw(monkeypatch):
    """In a worker pinned to one GPU, torch would see one: the Dagster pool limit uses the pipeline's count."""
    monkeypatch.setenv(GPUS_ENV, "4")
    assert training_gpus(params_from_dict({"train": {"device": "cpu"}})) == 4
    monkeypatch.delenv(GPUS_ENV)
    assert training_gpus(params_from_dict({"train": {"device": "cpu"}})) == 0


def _two_gpus() -> tuple[int, int]:
    """The pipeline's device query on a machine with 2 GPUs, one run per GPU (runs in a worker)."""
    return 2, 1


def _report_environment(dataset: str, run_key: str) -> None:
    """A fake training: writes what its process sees, then waits until every run of the test has started, so
    the runs are known to overlap in different processes."""
    import torch

    folder = Path(os.environ[REPORT_DIR_ENV])
    seen = {
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus": os.environ.get(GPUS_ENV),
        "threads": torch.get_num_threads(),
    }
    (folder / f"{run_key}.json").write_text(json.dumps(seen))
    deadline = time.monotonic() + 120
    while len(list(folder.glob("*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return None


def test_run_pipeline_pins_each_training_worker_to_its_own_gpu(tmp_path, monkeypatch):
    """With a (faked) 2-GPU count, two runs train at once in two processes that see different GPUs: the
    caller's CUDA_VISIBLE_DEVICES entries, set in each worker before it imports torch."""
    monkeypatch.setattr(pipeline, "_training_plan", _two_gpus)
    monkeypatch.setattr(pipeline, "_train", _report_environment)
    monkeypatch.setenv(REPORT_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    lines: list[str] = []
    pipeline.run_pipeline("synthetic", [], ["run_a", "run_b"], evaluate=False, workers=1, report=lines.append)
    seen = [json.loads((tmp_path / f"{key}.json").read_text()) for key in ("run_a", "run_b")]
    assert len({s["pid"] for s in seen}) == 2
    assert sorted(s["cuda_visible_devices"] for s in seen) == ["3", "5"]
    assert {s["gpus"] for s in seen} == {"2"}
    assert {s["threads"] for s in seen} == {max(1, (os.cpu_count() or 1) // 2)}  # the cores shared by the two
    assert lines[0] == "[train] 2 at once: 1 per GPU on 2 GPU(s)"
    finished = (["[train 1/2] run_a", "[train 2/2] run_b"], ["[train 1/2] run_b", "[train 2/2] run_a"])
    assert sorted(lines[1:]) in finished


def test_under_torchrun_the_runs_stay_in_the_callers_workers_unpinned(tmp_path, monkeypatch):
    """torchrun's ranks train each run together (DDP): no GPU pool, no pinning, whatever the GPU count."""
    monkeypatch.setattr(pipeline, "_training_plan", _two_gpus)
    monkeypatch.setattr(pipeline, "_train", _report_environment)
    monkeypatch.setenv(REPORT_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setenv("WORLD_SIZE", "2")
    lines: list[str] = []
    pipeline.run_pipeline("synthetic", [], ["run_a", "run_b"], evaluate=False, workers=2, report=lines.append)
    seen = [json.loads((tmp_path / f"{key}.json").read_text()) for key in ("run_a", "run_b")]
    assert [s["cuda_visible_devices"] for s in seen] == ["3,5", "3,5"]
    assert [s["gpus"] for s in seen] == [None, None]
    assert not any("at once" in line for line in lines)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_worker_dies_with_the_process_that_started_it():
    """A killed `collab-iu` (or a torchrun rank) leaves no orphaned worker holding its locks and pipes."""
    import signal
    import subprocess
    import time

    code = (
        "import os, sys\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from multiprocessing import get_context\n"
        "from orchestration.pipeline import _start_worker\n"
        "pool = ProcessPoolExecutor(1, mp_context=get_context('spawn'), initializer=_start_worker, initargs=(1,))\n"
        "print(pool.submit(os.getpid).result(), flush=True)\n"
        "import time; pool.submit(time.sleep, 600); time.sleep(600)\n"  # the worker is busy when its parent dies
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    raise AssertionError(f"worker {worker} outlived its parent")
