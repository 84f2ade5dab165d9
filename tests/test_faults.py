"""Faults as they happen: three `collab-iu train` processes on one run key at once, and every step killed
(SIGKILL) at random points, then run again: the outputs equal an uninterrupted run's and nothing is left
behind (no temporary, no lock)."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import BIN, tiny_params_tree, user_env

from collab_iu.params import params_from_dict
from collab_iu.stages import run_cache, run_cf, run_prepare, run_split

GRID = {"methods": ["image_only", "with_cf"], "label_ratios": [1.0], "seeds": [0], "workers": 1}
KEY = "with_cf-r1-w2-s0"


def _project(root: Path, **train) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tree = tiny_params_tree(Path("data"), experiment=GRID, wandb={"mode": "disabled"}, train=train)
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    return root


def _prepare_data(project: Path) -> None:
    params = params_from_dict(yaml.safe_load((project / "params.yaml").read_text()))
    params = params.model_copy(update={"data": params.data.model_copy(update={"root": project / "data"})})
    for step in (run_prepare, run_split, run_cf, run_cache):
        step(params)


def _train(project: Path, *settings: str) -> subprocess.Popen:
    args = [str(BIN / "collab-iu"), "train", "--run", KEY, *(a for s in settings for a in ("--set", s))]
    return subprocess.Popen(args, cwd=project, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.e2e
def test_three_processes_on_one_run_key(tmp_path):
    """The first trains; one with the same settings waits, then reuses it; one with other settings waits, then
    is refused (exit 2, the finished run kept whole)."""
    project = _project(tmp_path / "project")
    _prepare_data(project)
    lock = project / "data/synthetic/runs/.locks" / f"{KEY}.lock"
    first = _train(project, "train.epochs=250")
    deadline = time.monotonic() + 120
    while not lock.exists():  # it exists only while a process holds it: the first one trains now
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.2)
    same, other = _train(project, "train.epochs=250"), _train(project, "train.epochs=2")
    outputs = {name: p.communicate(timeout=600) for name, p in (("first", first), ("same", same), ("other", other))}
    err = {name: e.decode() for name, (_, e) in outputs.items()}
    assert (first.returncode, same.returncode, other.returncode) == (0, 0, 2), err
    holder = "is being written by process"  # (the first's training worker) and the command that started it:
    command = f"collab-iu train --run {KEY} --set train.epochs=250`); waiting for it to finish"
    assert all(holder in err[name] and command in err[name] for name in ("same", "other")), err  # both waited
    assert "another configuration (train.epochs: 250 -> 2)" in err["other"]
    run = project / "data/synthetic/runs" / KEY
    assert len(json.loads((run / "train.json").read_text())["history"]) == 250
    assert not lock.exists() and not list(run.rglob("*.tmp"))


STEP_CODE = """
import sys
from pathlib import Path
from collab_iu.params import load_params
from collab_iu import stages
from collab_iu.evaluate import run_evaluation
from collab_iu.experiment import train_run
params = load_params("params.yaml")
params = params.model_copy(update={"data": params.data.model_copy(update={"root": Path("data").resolve()})})
step = sys.argv[1]
if step == "train":
    train_run(params, sys.argv[2], progress=False)
elif step == "evaluate":
    run_evaluation(params)
else:
    stages.DATA_STAGES[step](params)
"""
STEPS = (("prepare", "prepared"), ("split", "split"), ("cf", "cf"), ("cache", "cache"))


def _step(project: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", STEP_CODE, *args], cwd=project, env=user_env(), stderr=subprocess.PIPE
    )


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def _leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name or p.name == ".locks"]


def _run_through(project: Path, args: tuple[str, ...]) -> float:
    start = time.monotonic()
    done = _step(project, *args)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err.decode()[-3000:]
    return time.monotonic() - start


@pytest.mark.e2e
def test_every_step_killed_at_random_points_then_run_again_gives_the_same_outputs(tmp_path):
    """Each step (prepare, split, cf, cache, train, evaluate) is killed with SIGKILL at 3 random moments of
    its run (seeded), each time run again to the end: its output equals an uninterrupted run's."""
    reference = _project(tmp_path / "reference", epochs=4)
    project = _project(tmp_path / "faulty", epochs=4)
    steps = [*((name, (name,), folder) for name, folder in STEPS)]
    steps += [("train", ("train", KEY), f"runs/{KEY}"), ("evaluate", ("evaluate",), "evaluation")]
    rng = random.Random(0)
    for name, args, folder in steps:
        seconds = _run_through(reference, args)
        if name == "train":
            _run_through(reference, ("train", "image_only-r1-w0-s0"))
        for _ in range(3):
            if name == "train":  # a finished run would be reused: kill a training, then resume it
                shutil.rmtree(project / "data/synthetic" / folder, ignore_errors=True)
            victim = _step(project, *args)
            time.sleep(rng.uniform(0.3, max(seconds, 0.6)))
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=60)
            _run_through(project, args)
            expected = _hashes(reference / "data/synthetic" / folder)
            assert _hashes(project / "data/synthetic" / folder) == expected, name
            assert _leftovers(project / "data") == [], name
        if name == "train":
            _run_through(project, ("train", "image_only-r1-w0-s0"))
