"""DDP training under torchrun (collab_iu/distributed.py), on the CPU with gloo: two processes train one run,
the loss goes down, rank 0 alone writes, a killed DDP run resumes to the same files as an uninterrupted one,
and the result is close to a single-process run of the same seed and global batch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import BIN, tiny_params_tree, user_env

from collab_iu.params import params_from_dict
from collab_iu.stages import run_cache, run_cf, run_prepare, run_split

KEY = "with_cf-r1-w2-s0"
TRAIN = {"epochs": 6, "batch_size": 32, "num_threads": 1, "lr": 0.003}
TOLERANCE = 0.08  # |test mAP (2 ranks) - test mAP (1 process)|: per-rank BatchNorm statistics and augmentation


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp") / "data"
    params = params_from_dict(tiny_params_tree(root, train=TRAIN))
    for step in (run_prepare, run_split, run_cf, run_cache):
        step(params)
    return root


def _project(tmp_path: Path, data_root: Path, name: str) -> Path:
    """A project folder (params.yaml) whose data root is a copy of the prepared data (no runs yet)."""
    project = tmp_path / name
    shutil.copytree(data_root, project / "data", ignore=shutil.ignore_patterns("runs"))
    tree = tiny_params_tree(Path("data"), train=TRAIN, wandb={"mode": "disabled"})
    (project / "params.yaml").write_text(yaml.safe_dump(tree))
    return project


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(project: Path, ranks: int) -> subprocess.Popen:
    """`collab-iu train --run KEY` in `project`, under `torchrun --nproc_per_node RANKS` when RANKS > 1."""
    command = [str(BIN / "collab-iu"), "train", "--run", KEY]
    if ranks > 1:
        torchrun = ["-m", "torch.distributed.run", f"--nproc_per_node={ranks}", f"--master_port={_free_port()}"]
        command = [sys.executable, *torchrun, command[0], "--", *command[1:]]  # `--`: the rest is collab-iu's
    return subprocess.Popen(
        command,
        cwd=project,
        env=user_env(OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, (out.decode()[-2000:], err.decode()[-4000:])


def _run_dir(project: Path) -> Path:
    return project / "data" / "synthetic" / "runs" / KEY


def _epochs_done(run_dir: Path) -> int:
    try:
        return torch.load(run_dir / "checkpoint.pt", weights_only=True)["state"]["epoch"]
    except Exception:  # not written yet
        return 0


@pytest.mark.e2e
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is tested on Linux")
def test_two_gloo_processes_train_resume_and_match_one_process(tmp_path, data_root):
    ddp = _project(tmp_path, data_root, "ddp")
    _finish(_launch(ddp, 2))
    run = _run_dir(ddp)
    history = json.loads((run / "train.json").read_text())["history"]
    assert len(history) == TRAIN["epochs"] and history[-1]["loss_total"] < history[0]["loss_total"]
    assert (run / "metrics.json").is_file() and not list(run.rglob("*.tmp"))

    # killed (SIGKILL to both ranks and torchrun) after its second epoch, then run again: the same files
    resumed = _project(tmp_path, data_root, "resumed")
    proc = _launch(resumed, 2)
    deadline = time.monotonic() + 300
    while _epochs_done(_run_dir(resumed)) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert 2 <= _epochs_done(_run_dir(resumed)) < TRAIN["epochs"]
    _finish(_launch(resumed, 2))
    for name in ("train.json", "best.pt", "metrics.json"):
        assert (_run_dir(resumed) / name).read_bytes() == (run / name).read_bytes(), name

    # one process, same seed and global batch: close, not equal (per-rank BatchNorm and augmentation draws)
    single = _project(tmp_path, data_root, "single")
    _finish(_launch(single, 1))
    maps = [json.loads((d / "metrics.json").read_text())["test_map"] for d in (run, _run_dir(single))]
    assert abs(maps[0] - maps[1]) <= TOLERANCE, maps
