"""The `collab-iu` command line: one subcommand per step, plus the main job `run`."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback

from collab_iu.errors import EXPECTED_BUILTINS, UserError, environment_message, is_environment_error
from orchestration.cli.data_commands import add_dataset_parsers
from orchestration.cli.experiments import add_experiment_parsers
from orchestration.cli.pipeline_commands import add_pipeline_parsers
from orchestration.cli.predict import add_predict_parser
from orchestration.errors import MaterializeError

# shown as `error: <message>`, exit 2 (collab_iu/errors.py); a failed Dagster run reads like the core's errors
EXPECTED_ERRORS = (UserError, *EXPECTED_BUILTINS, MaterializeError)


def build_parser() -> argparse.ArgumentParser:
    """The `collab-iu` parser: every subcommand, each with its function in `func`."""
    parser = argparse.ArgumentParser(
        prog="collab-iu",
        description="Collaborative Image Understanding: image classifiers that also learn from user interactions.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_pipeline_parsers(sub)
    add_predict_parser(sub)
    add_dataset_parsers(sub)
    add_experiment_parsers(sub)
    for action in sub._choices_actions:  # a subcommand's --help opens with its one-line help when it has no other
        chosen = sub.choices[action.dest]
        chosen.description = chosen.description or action.help
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("collab-iu")
    except PackageNotFoundError:
        return "unknown"


def _report_bug(trace: str | None = None) -> int:
    """An unexpected exception is a bug: its traceback (this one's, or `trace`), one line asking to report it,
    exit 1."""
    if trace:
        print(trace.rstrip(), file=sys.stderr)
    else:
        traceback.print_exc()
    print(
        f"collab-iu {_version()}: this is a bug in collab-iu, not a problem with your data or parameters; "
        "please report it with the traceback above and the command you ran",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run one command. Expected errors (data, parameters, run keys, missing inputs, a failed Dagster run, a full
    disk) print one message `error: ...` (no traceback) and exit 2; anything else is a bug: its traceback, a
    request to report it, exit 1."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EXPECTED_ERRORS as exc:
        if getattr(exc, "bug_traceback", None):  # a Dagster run failed with an unexpected error: a bug
            return _report_bug(exc.bug_traceback)
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`collab-iu predict ... | head`): stop quietly
        with contextlib.suppress(OSError, ValueError):  # no flush error at exit either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        if not is_environment_error(exc):
            return _report_bug()
        print(f"error: {environment_message(exc)}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - every other exception is a bug, reported as one
        return _report_bug()


if __name__ == "__main__":
    sys.exit(main())
