"""`collab-iu predict`: label new images with a trained run (collab_iu/predict.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from collab_iu.predict import ModelFolderError, format_prediction, predict_images, write_predictions_csv
from orchestration.cli.options import add_common_options


def resolve_model_arg(args: argparse.Namespace) -> Path:
    """--model as given when it exists; otherwise a bare run key under the dataset's runs folder (params)."""
    model = Path(args.model)
    if model.exists() or len(model.parts) != 1:
        return model
    from collab_iu.layout import dataset_layout
    from collab_iu.params import load_params

    params = load_params(args.params, args.overrides)
    candidate = dataset_layout(params, args.dataset).runs / args.model
    if not candidate.exists():
        raise ModelFolderError(f"{args.model}: no such run folder, nor a run key with a folder {candidate}")
    return candidate


def cmd_predict(args: argparse.Namespace) -> int:
    from collab_iu.params import load_params
    from collab_iu.train import resolve_device

    run_dir = resolve_model_arg(args)
    try:
        device = resolve_device(args.device)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    limit = load_params(args.params, args.overrides).prepare.max_image_pixels
    predictions, skipped = predict_images(run_dir, args.images, args.top_k, device, args.batch_size, max_pixels=limit)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not predictions:
        print(f"error: none of the images could be read ({len(skipped)} skipped)", file=sys.stderr)
        return 2
    if args.output is not None:
        write_predictions_csv(predictions, args.output)
        print(f"wrote {len(predictions)} predictions (top {args.top_k}) to {args.output}")
    else:
        for prediction in predictions:
            print(format_prediction(prediction))
    return SOME_SKIPPED if skipped else 0


SOME_SKIPPED = 3  # not 1: 1 means a bug everywhere else


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    """Register `collab-iu predict` on the subparsers of the CLI's parser."""
    text = "label new images with a trained run (pixels only); exit 3 if some files were skipped, 2 if none read"
    p = subparsers.add_parser("predict", help=text, description=text)
    p.add_argument(
        "--model",
        required=True,
        metavar="RUN_DIR",
        help="a run folder (data/<dataset>/runs/<run key>) or a bare run key of --dataset",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER", help="image files or folders (recursive)")
    p.add_argument("--top-k", type=_positive_int, default=3, help="labels per image (default: %(default)s)")
    p.add_argument("--output", type=Path, metavar="FILE.csv", help="write a CSV (path, rank, label, score) instead")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto", help="default: %(default)s")
    p.add_argument(
        "--batch-size", type=_positive_int, default=64, help="images per forward pass (default: %(default)s)"
    )
    add_common_options(p)
    p.set_defaults(func=cmd_predict)
    return p
