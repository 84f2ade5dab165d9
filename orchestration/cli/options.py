"""Options every `collab-iu` subcommand shares."""

from __future__ import annotations

import argparse

from collab_iu.params import DEFAULT_PARAMS_FILE


def add_common_options(parser: argparse.ArgumentParser, dataset: bool = True) -> None:
    """--params, --set (repeatable) and, unless `dataset` is False, --dataset."""
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE, help="params file (default: %(default)s)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="GROUP.KEY=VALUE",
        help="override a parameter, e.g. --set cf.factors=64 (repeatable)",
    )
    if dataset:
        parser.add_argument("--dataset", help="dataset name from params.yaml data.datasets (default: data.default)")
