"""Output locks (collab_iu/locks.py): a second writer waits for the holder and names it, a killed holder never
blocks the next run, a dead writer's temporaries are removed, and outputs get the umask's permissions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers import tiny_params_tree

from collab_iu.atomic import atomic_dir, write_json
from collab_iu.layout import dataset_layout
from collab_iu.locks import lock_path, output_lock
from collab_iu.params import params_from_dict
from collab_iu.stages import run_cf, run_prepare, run_split


@pytest.fixture
def project(tmp_path) -> Path:
    tree = tiny_params_tree(tmp_path / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    params = params_from_dict(tree)
    run_prepare(params)
    run_split(params)
    return tmp_path


def _python(code: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


CF_STEP = (
    "from collab_iu.params import load_params; from collab_iu.stages import run_cf; run_cf(load_params('params.yaml'))"
)


def test_a_second_writer_waits_for_the_holder_then_writes(project):
    layout = dataset_layout(params_from_dict(yaml.safe_load((project / "params.yaml").read_text())))
    with output_lock(layout.cf):
        waiter = _python(CF_STEP, project)
        said: list[str] = []
        reader = threading.Thread(target=lambda: said.extend(waiter.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while not any("being written by" in line for line in said) and time.monotonic() < deadline:
            assert waiter.poll() is None, said
            time.sleep(0.2)
        time.sleep(1.0)
        assert waiter.poll() is None and not layout.cf.exists()  # it waits while the lock is held
    assert waiter.wait(timeout=120) == 0, said
    reader.join(timeout=10)
    assert f"{layout.cf} is being written by process {os.getpid()}" in "".join(said)
    assert (layout.cf / "report.json").is_file()
    assert not lock_path(layout.cf).exists()  # a lock file exists only while held


def test_a_killed_holder_never_blocks_the_next_run(project):
    dest = project / "data" / "synthetic" / "cf"
    holder = _python(
        f"from collab_iu.locks import output_lock; import time\nwith output_lock({str(dest)!r}):\n"
        "    print('held', flush=True); time.sleep(600)",
        project,
    )
    assert holder.stdout.readline().strip() == "held"
    assert lock_path(dest).exists()
    holder.send_signal(signal.SIGKILL)  # no cleanup runs: its lock file stays behind, unlocked
    holder.wait(timeout=30)
    assert lock_path(dest).exists()
    told = []
    with output_lock(dest, notify=told.append):
        pass
    assert told == []  # taken at once: the kernel released the dead process's lock


def test_temporaries_of_a_dead_writer_are_removed_by_the_next_run(project):
    params = params_from_dict(yaml.safe_load((project / "params.yaml").read_text()))
    layout = dataset_layout(params)
    leftovers = [
        layout.base / ".cf.k1ll3d.tmp",  # atomic_dir's folder of a killed writer
        layout.base / ".cf.old-4242",  # the previous output it was about to remove
        layout.base / ".prepared.x.tmp",  # another step's: not the cf step's to remove
    ]
    for folder in leftovers:
        folder.mkdir()
        (folder / "item_vectors.npy").write_bytes(b"half")
    run_cf(params)
    assert [p.exists() for p in leftovers] == [False, False, True]
    run_prepare(params)
    assert not leftovers[2].exists()


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_get_the_umask_permissions(tmp_path, umask):
    """A shared cache or DVC remote needs group-readable outputs, not mkstemp's 0600 and mkdtemp's 0700."""
    code = (
        f"import os; os.umask({umask}); from collab_iu.atomic import atomic_dir, write_json\n"
        f"write_json({{}}, {str(tmp_path / 'a.json')!r})\n"
        f"with atomic_dir({str(tmp_path / 'out')!r}) as tmp: (tmp / 'f').write_text('x')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_failed_step_leaves_no_folder_behind(tmp_path):
    dest = tmp_path / "data" / "new" / "cf"
    with pytest.raises(RuntimeError):
        with output_lock(dest):
            raise RuntimeError("the step failed")
    assert not (tmp_path / "data").exists()
    with output_lock(dest), atomic_dir(dest) as tmp:
        write_json({}, tmp / "report.json")
    assert sorted(p.name for p in (tmp_path / "data" / "new").iterdir()) == ["cf"]  # no .locks left
