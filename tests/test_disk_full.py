"""A full disk, for real: a small tmpfs as the data root. Writing through a memory map (the image cache) and
torch.save (a checkpoint) both end with exit 2 naming the file, and leave no temporary behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import tiny_params_tree

from orchestration.cli import main


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only; skipped where mounting is not allowed), unmounted at the end."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _project(tmp_path: Path, root: Path, monkeypatch) -> None:
    tree = tiny_params_tree(root, experiment={"workers": 1})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    monkeypatch.chdir(tmp_path)


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name.endswith(".tmp") or ".old-" in p.name]


def test_a_cache_larger_than_the_disk_exits_2_naming_it(small_disk, tmp_path, monkeypatch, capsys):
    _project(tmp_path, small_disk, monkeypatch)
    assert main(["prepare"]) == 0
    capsys.readouterr()
    assert main(["cache", "--set", "cache.image_size=192"]) == 2  # 200 x 192 x 192 x 3: 22 MB on 4 MB
    err = capsys.readouterr().err
    assert "disk full while writing " in err and "/images.npy: free some space" in err, err
    assert "Traceback" not in err and not _temporaries(small_disk)
    assert not (small_disk / "synthetic" / "cache").exists()


def test_a_checkpoint_on_a_full_disk_exits_2_naming_it(small_disk, tmp_path, monkeypatch, capsys):
    _project(tmp_path, small_disk, monkeypatch)
    for step in ("prepare", "split", "cf", "cache"):
        assert main([step]) == 0, step
    free = os.statvfs(small_disk)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 64 * 1024))  # 64 KiB left: model.json, not best.pt
    capsys.readouterr()
    assert main(["train", "--run", "image_only-r1-w0-s0"]) == 2
    err = capsys.readouterr().err
    assert (
        "disk full while writing " in err
        and "runs/image_only-r1-w0-s0/" in err
        and "Traceback" not in err
        and "this is a bug" not in err
    ), err
    assert not _temporaries(small_disk)
