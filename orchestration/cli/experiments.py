"""`collab-iu exp-show`: DVC's experiments table, narrowed to what differs and the key metrics.

Plain `dvc exp show` has one column per key of params.yaml (about 150: every group, the presets, the
families), one per dependency hash and one per metric; DVC has no setting to narrow it by default. This view
keeps the parameters that differ between the experiments shown, the headline metrics of every dataset, and
drops the dependency hashes and the per-cell metrics (`dvc metrics show` lists those).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

KEY_METRICS = r".*headline/(label_ratio|with_cf_map|image_only_map|improvement|p_value)$"  # kept even if equal
HIDDEN = r"^(data|collab_iu|orchestration)/|(^|:)(map|map_ci_low|map_ci_high|improvement|p_value)/"  # deps, cells


def exp_show_command(extra: list[str]) -> list[str]:
    """The `dvc exp show` command line of the view; `extra` (any `dvc exp show` option) comes last."""
    return ["dvc", "exp", "show", "--no-pager", "--only-changed", "--keep", KEY_METRICS, "--drop", HIDDEN, *extra]


def cmd_exp_show(args: argparse.Namespace) -> int:
    extra = args.dvc_args[1:] if args.dvc_args[:1] == ["--"] else args.dvc_args
    command = exp_show_command(extra)
    if shutil.which("dvc") is None:
        print("error: dvc is not installed in this environment (`make setup` installs it)", file=sys.stderr)
        return 2
    return subprocess.run(command, check=False).returncode


def add_experiment_parsers(sub) -> None:
    """`exp-show`."""
    text = "DVC's experiments table with the parameters that differ and the headline metrics"
    p = sub.add_parser(
        "exp-show",
        help=text,
        description=f"{text}: `{' '.join(exp_show_command(['...']))}` (options after -- go to dvc).",
    )
    p.add_argument("dvc_args", nargs=argparse.REMAINDER, help="more `dvc exp show` options, e.g. -- --csv")
    p.set_defaults(func=cmd_exp_show)
