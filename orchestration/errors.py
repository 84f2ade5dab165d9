"""Errors of the orchestration layer (importable without dagster)."""

from __future__ import annotations


class MaterializeError(RuntimeError):
    """A materialisation failed or a blocking check did not pass; the message says which.

    `bug_traceback`: where the failure is not an error the core expects (a bug), the failed step's traceback;
    the CLI then prints it with a request to report the bug (exit 1) instead of `error: <message>` (exit 2).
    """

    def __init__(self, message: str, bug_traceback: str | None = None):
        super().__init__(message)
        self.bug_traceback = bug_traceback

    def __reduce__(self) -> tuple:  # keeps bug_traceback when a worker process sends the error back
        return (type(self), (str(self), self.bug_traceback))
