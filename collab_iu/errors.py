"""The core's half of the one error path: `UserError` marks what the user can fix (their data, parameters,
run keys, inputs), never a bug. Every entry point shows a UserError (and the built-in errors of
EXPECTED_BUILTINS) as one message, exit 2; anything else is a bug: a traceback and a request to report it.
"""

from __future__ import annotations

import errno

EXPECTED_BUILTINS: tuple[type[Exception], ...] = (FileNotFoundError, KeyError)  # a missing input, an unknown name
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# what the user's machine refuses (not a bug): shown naming the path
ENVIRONMENT_ERRNOS = (
    *DISK_FULL,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENAMETOOLONG,
    errno.EISDIR,
    errno.ENOTDIR,
)


class UserError(Exception):
    """A problem with the user's data, parameters or inputs: one message says what and where, and what to do."""


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def user_error_names() -> set[str]:
    """The class names of every expected error imported so far (for errors known only by name, e.g. a failed
    step of a Dagster run)."""
    return {cls.__name__ for cls in _subclasses(UserError) | set(EXPECTED_BUILTINS)}


def is_environment_error(exc: BaseException) -> bool:
    """An OSError of the user's machine (disk full, no permission, read-only, name too long, ...)."""
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


def wrapped_environment_error(exc: BaseException) -> OSError | None:
    """The machine's OSError behind a library's RuntimeError (torch.save reports a full disk as a RuntimeError
    whose context is the ENOSPC), else None."""
    if not isinstance(exc, RuntimeError):
        return None
    inner = exc.__cause__ or exc.__context__
    while inner is not None and not is_environment_error(inner):
        inner = inner.__cause__ or inner.__context__
    return inner


def is_expected(exc: BaseException) -> bool:
    """Whether `exc` is the user's to fix (a UserError, EXPECTED_BUILTINS, an environment error), not a bug."""
    return isinstance(exc, (UserError, *EXPECTED_BUILTINS)) or is_environment_error(exc)


def environment_message(exc: OSError) -> str:
    """An environment failure in one line, naming the file when the system did."""
    path = exc.filename if exc.filename is not None else "an output (the system did not name the file)"
    if exc.errno in DISK_FULL:
        return f"disk full while writing {path}: free some space and run the command again"
    return f"{path}: {exc.strerror or exc}"
