"""The model-zoo commands of ``lidarssl``: ``import``, ``export``, and ``evaluate`` of a release folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lidarssl.zoo.formats import COMMANDS, EXPORT_LAYOUTS, EXPORT_TARGETS, FORMATS
from lidarssl.zoo.origins import ORIGINS

__all__ = ["add_zoo_commands", "evaluate_release_command"]


def cmd_import(args: argparse.Namespace) -> None:
    from lidarssl.zoo.release import import_checkpoint

    size = args.path.stat().st_size if args.path.is_file() else 0
    if size > 50e6:  # reading and hashing a release takes a few seconds
        print(f"reading {args.path} ({size / 1e6:.0f} MB) ...", flush=True)
    result = import_checkpoint(args.path, args.out, fmt=args.format, origin=args.origin, overwrite=args.overwrite)
    print(result.report)


def cmd_export(args: argparse.Namespace) -> None:
    from lidarssl.zoo.export import export_backbone

    result = export_backbone(args.weights, args.to, args.out, target_channels=args.target_channels, layout=args.layout)
    for warning in result.warnings:
        print(f"lidarssl export: warning: {warning}", file=sys.stderr)
    print(f"exported {result.keys} tensors of {result.backbone} to {result.out} ({args.to})")
    for note in result.notes:
        print(f"note: {note}")


def evaluate_release_command(folder: Path, overrides: list[str]) -> None:
    """``lidarssl evaluate RELEASE``: print the release's IoU table beside its published mIoU."""
    from lidarssl.zoo.evaluate import evaluate_release

    score = evaluate_release(folder, overrides)
    print(score.table)
    published = ", ".join(f"{k} {v}" for k, v in score.published.items())
    line = f"release {folder} ({score.origin}): mIoU {score.miou:.1f}"
    print(line + (f"; published {published}" if published else ""))
    print(f"scores: {score.out / 'metrics.json'}")


def add_zoo_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``import`` and ``export`` on the ``lidarssl`` parser."""
    imp = sub.add_parser(
        "import", help=COMMANDS["import"],
        description="Read a release or training checkpoint (.pt, .pth, .ckpt, ScaLR's .tar.gz) without running code "
        "from it, detect its format, network and kernel layout, and write DIR/backbone.safetensors (for probe, "
        "finetune, export), DIR/head.safetensors (heads, when it has some) and DIR/import.json (every key with where "
        "it went). Formats: " + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()) + ".")
    imp.add_argument("path", type=Path, help="checkpoint file, release .tar.gz, or a folder holding one checkpoint")
    imp.add_argument("--out", type=Path, required=True, metavar="DIR", help="release folder to write")
    imp.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="read the file as this format")
    imp.add_argument("--origin", default=None, choices=list(ORIGINS), metavar="ORIGIN",
                     help=f"the release's origin when its file name does not tell it ({', '.join(ORIGINS)})")
    imp.add_argument("--overwrite", action="store_true", help="replace DIR if it holds files")
    imp.set_defaults(func=cmd_import)

    exp = sub.add_parser(
        "export", help=COMMANDS["export"],
        description="--to openpcdet writes {'model_state': {'backbone_3d.*': ...}, 'version'} with spconv 2.x kernels, "
        "loadable with torch.load(weights_only=True); only VoxelNet presets fit OpenPCDet's VoxelBackBone8x. "
        "--to state_dict writes the backbone's own keys (kernels in --layout).")
    exp.add_argument("weights", type=Path, help="backbone.safetensors (or a run or import folder holding one)")
    exp.add_argument("--to", required=True, choices=list(EXPORT_TARGETS), help="what to write")
    exp.add_argument("--out", type=Path, required=True, metavar="FILE", help="file to write")
    exp.add_argument("--target-channels", type=int, default=None, metavar="N",
                     help="point features of the OpenPCDet config (4 on KITTI, 5 on nuScenes): warn when conv_input "
                     "takes another number")
    exp.add_argument("--layout", default="spconv2", choices=list(EXPORT_LAYOUTS),
                     help="kernel layout of a state_dict export (default spconv2)")
    exp.set_defaults(func=cmd_export)
