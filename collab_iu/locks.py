"""One writer per output: a lock per output folder (a dataset's `prepared/`, `split/`, `cf/`, `cache/`,
`evaluation/`, one run folder, the paper report), taken by the core function that writes it, so every entry
point (the CLI, Dagster, DVC, a script) shares it.

A second process that wants the same output waits for the first, saying who holds it, then does its own
work on what the first left: a finished run of the same configuration is reused, one of another
configuration is refused (collab_iu/experiment.py), a data stage is written again whole. The locks are
`fcntl.flock` locks on files in `<parent>/.locks/`: the kernel releases them when their process dies, so a
killed process never leaves a lock that blocks the next run (a stale lock file is just an unlocked file).
A lock file exists only while its lock is held. They hold between processes on one machine, and on network file systems that support flock (NFS >= 4 does;
test yours before sharing a data folder between machines).

Under the lock, the temporary files and folders a killed writer left (`.<name>.*.tmp`, `.<name>.old-*` beside
the output, `.*.tmp` inside it: see collab_iu/atomic.py) are removed before the new writer starts.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

LOCK_DIR = ".locks"  # in .dvcignore: lock files never change a DVC hash
_HELD: set[Path] = set()  # the locks this process holds


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def lock_path(dest: Path) -> Path:
    """The lock file of output `dest`."""
    return dest.parent / LOCK_DIR / f"{dest.name}.lock"


def holder(dest: Path) -> str:
    """Who holds (or last held) the lock of `dest`, in words."""
    try:
        info = json.loads(lock_path(dest).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        info = {}
    if not info:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"process {info.get('pid')} on {info.get('host')} since {since} (`{info.get('command', '?')}`)"


@contextmanager
def output_lock(dest: str | Path, notify: Callable[[str], None] = _say) -> Iterator[None]:
    """Hold the lock of output `dest` (waiting for another holder, with one `notify` naming it); then remove
    what dead writers left of `dest`'s temporaries. The lock file exists only while it is held."""
    dest = Path(dest)
    path = lock_path(dest)
    key = path.absolute()
    if key in _HELD:  # this process holds it already (e.g. prepare importing the raw files): flock would wait
        yield
        return
    created = _missing_folders(path.parent)  # removed again when empty: a failed step leaves nothing behind
    handle = _acquire(path, dest, notify)
    _HELD.add(key)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": " ".join(sys.argv)}
        handle.write(json.dumps(info))
        handle.flush()
        remove_temporaries(dest)
        yield
    finally:
        _HELD.discard(key)
        path.unlink(missing_ok=True)  # before unlocking: a waiter then sees its file is gone and opens a new one
        handle.close()  # releases the flock
        for folder in [path.parent, *created]:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: another output's lock, or what the step wrote


def _missing_folders(folder: Path) -> list[Path]:
    """`folder`'s ancestors that do not exist yet, deepest first (`folder` itself excluded)."""
    missing = []
    for parent in folder.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def _acquire(path: Path, dest: Path, notify: Callable[[str], None]):
    """An open, flock-ed handle on `path`, the lock file that is there now (retried when the holder removed
    the one this process waited on)."""
    told = False
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open("a+")
        except FileNotFoundError:  # a holder removed the empty folder between the two calls
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not told:
                notify(f"{dest} is being written by {holder(dest)}; waiting for it to finish")
                told = True
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(handle.fileno()).st_ino:
            handle.seek(0)
            handle.truncate()
            return handle
        handle.close()


def remove_temporaries(dest: Path) -> list[Path]:
    """Remove the temporaries of writes to `dest` that did not finish (call only while holding its lock)."""
    found = [*dest.parent.glob(f".{dest.name}.*.tmp"), *dest.parent.glob(f".{dest.name}.old-*")]
    if dest.is_dir():
        found += dest.rglob(".*.tmp")
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def locked_outputs(*folders: str) -> Callable:
    """Decorate a dataset step `fn(params, dataset=None, repo_root=None, ...)`: it runs holding the locks of its
    output folders (attributes of collab_iu.layout.DatasetLayout, taken in the order given)."""
    from collab_iu.layout import dataset_layout

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(params, dataset=None, repo_root=None, *args, **kwargs):
            layout = dataset_layout(params, dataset, repo_root)
            with ExitStack() as stack:
                for folder in folders:
                    stack.enter_context(output_lock(getattr(layout, folder)))
                return fn(params, dataset, repo_root, *args, **kwargs)

        return run

    return wrap
