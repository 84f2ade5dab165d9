"""Atomic writes: outputs appear whole or not at all.

Every file is written to a temporary name beside its destination and renamed into
place, so an interrupted stage never leaves a half-written output behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from collab_iu.errors import wrapped_environment_error


def _umask() -> int:
    """The process's umask (read once, at import: os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()


@contextmanager
def atomic_file(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it is renamed to `dest`, on error removed. `dest` gets the modes a
    plain `open()` would give it (0666 less the umask), not mkstemp's private 0600."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.fchmod(fd, 0o666 & ~UMASK)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _naming(dest):
            yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `dest` whole, on error it is removed. `dest` gets the
    modes of a plain `mkdir` (0777 less the umask), not mkdtemp's private 0700."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    tmp.chmod(0o777 & ~UMASK)
    try:
        with _naming(dest):
            yield tmp
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _naming(dest: Path) -> Iterator[None]:
    """An OSError without a file name (a full disk says none) raised again naming the output being written; so is
    one that a library wrapped in a RuntimeError (torch.save), as a plain OSError."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(dest)) from None  # innermost: what Dagster's runs report
    except RuntimeError as exc:
        inner = wrapped_environment_error(exc)
        if inner is None:
            raise
        raise OSError(inner.errno, inner.strerror, str(dest)) from None


def reserve(path: Path) -> None:
    """Allocate every block of `path` (at its size) now: a file written through a memory map on a full disk then
    fails here with an OSError naming it, instead of a SIGBUS that kills the process mid-write."""
    if not hasattr(os, "posix_fallocate"):
        return
    with path.open("r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, path.stat().st_size)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from None


def write_json(obj: Any, dest: str | Path) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_file(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_parquet(df: pd.DataFrame, dest: str | Path) -> None:
    """Write a DataFrame as parquet (no index), atomically."""
    with atomic_file(dest) as tmp:
        df.to_parquet(tmp, index=False)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars (arrays also have .item, which fails beyond size 1)
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
