"""The `collab-iu` command line: one subcommand per step, plus the main job `run`."""

from __future__ import annotations

import argparse
import sys

from collab_iu.dataset import CFOnlyDatasetError, DatasetError
from collab_iu.params import ParamsError
from collab_iu.splits import SplitError
from orchestration.cli.data_commands import add_dataset_parsers
from orchestration.cli.experiments import add_experiment_parsers
from orchestration.cli.pipeline_commands import add_pipeline_parsers
from orchestration.cli.predict import add_predict_parser
from orchestration.errors import MaterializeError

EXPECTED_ERRORS = (ParamsError, DatasetError, CFOnlyDatasetError, SplitError, FileNotFoundError, KeyError)


def _expected_errors() -> tuple[type[Exception], ...]:
    from collab_iu.importers import RawFormatError

    return (*EXPECTED_ERRORS, RawFormatError, MaterializeError)  # a failed Dagster run reads like the core's errors


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


def main(argv: list[str] | None = None) -> int:
    """Run one command; expected errors print `error: ...` and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _expected_errors() as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
