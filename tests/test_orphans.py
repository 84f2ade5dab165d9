"""`kill -9` of `collab-iu` while it trains: no process it started outlives it (a training worker holds about a
gigabyte; an OOM kill or a killed CI job must not leak one)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from helpers import BIN, tiny_params_tree, user_env

pytestmark = pytest.mark.e2e


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (read from /proc), zombies excluded."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def test_kill_9_of_the_cli_during_training_leaves_no_process(tmp_path):
    tree = tiny_params_tree(Path("data"), train={"epochs": 200}, experiment={"workers": 2})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    cli = subprocess.Popen(
        [str(BIN / "collab-iu"), "run"],
        cwd=tmp_path,
        env=user_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not any((tmp_path / "data/synthetic/runs").glob("*/checkpoint.pt")):  # training is under way
            assert cli.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.5)
        started = _descendants(cli.pid)
        assert started, "no worker process found"
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _alive(started)
        assert not left, [Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ")[:200] for p in left]
    finally:
        for pid in _alive(_descendants(cli.pid)) | {cli.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
