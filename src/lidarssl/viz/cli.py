"""``lidarssl features``, ``lidarssl viz similarity | pca | pixels | predictions`` and ``lidarssl view``.

Datasets are given as ``PATH`` or ``PATH,key=value,...`` with the keys ``split``, ``frame``, ``format`` and any
reader option (``sensor=pandargt`` for PandaSet's front lidar), so several datasets fit on one command line.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lidarssl.errors import ConfigError, DataError

__all__ = ["add_commands", "DatasetSpec", "parse_dataset"]


@dataclass
class DatasetSpec:
    """A dataset named on the command line: its folder, split, frame, format and reader options."""

    root: Path
    split: str | None = None
    frame: int | None = None
    format: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def open(self):
        from lidarssl.data.datasets import open_dataset

        return open_dataset(self.root, split=self.split, format=self.format, **self.options)


def parse_dataset(text: str, split: str | None = None, frame: int | None = None) -> DatasetSpec:
    """``PATH[,split=S][,frame=I][,format=F][,reader_option=V]`` (``split``/``frame`` default to the arguments)."""
    root, *items = text.split(",")
    spec = DatasetSpec(root=Path(root), split=split, frame=frame)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"dataset '{text}': '{item}' is not key=value (e.g. {root},split=val,frame=3)")
        parsed = yaml.safe_load(value) if value else value
        if key == "split":
            spec.split = str(value)
        elif key == "frame":
            if not isinstance(parsed, int):
                raise ConfigError(f"dataset '{text}': frame must be an integer, got '{value}'")
            spec.frame = parsed
        elif key == "format":
            spec.format = value
        else:
            spec.options[key] = parsed
    return spec


def _xyz(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y,Z in metres, got '{text}'") from None


def _progress(label: str):
    tty = sys.stdout.isatty()

    def show(done: int, total: int) -> None:
        if tty:
            print(f"\r{label} {done}/{total}", end="" if done < total else "\n", flush=True)
        elif done == total or done % max(1, total // 10) == 0:
            print(f"{label} {done}/{total}", flush=True)

    return show


def _query_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("query point (one of)")
    g.add_argument("--point", type=int, default=None, help="index of the point in the scan")
    g.add_argument("--xyz", type=_xyz, default=None, metavar="X,Y,Z", help="the point nearest these lidar-frame coordinates")
    g.add_argument("--class", dest="cls", default=None, metavar="NAME",
                   help="a point of this class, in the middle of a well-sampled object (labelled datasets)")


def _run_frame_args(p: argparse.ArgumentParser, split_key: str) -> None:
    """--split and --frame of the figures that read a run's dataset."""
    p.add_argument("--split", default=None, help=f"split (default: the run's {split_key})")
    p.add_argument("--frame", type=int, default=0, help="frame index (default 0)")


def _figure_args(p: argparse.ArgumentParser, kind: str, cameras: bool = True) -> None:
    p.add_argument("--out", type=Path, default=Path(f"{kind}.png"), help=f"PNG to write (default {kind}.png)")
    p.add_argument("--height", type=int, default=360, help="height of each row's views in pixels (default 360)")
    p.add_argument("--compact", action="store_true", help="a 256-colour PNG, about a third of the size")
    if cameras:
        p.add_argument("--cameras", default="auto", help="cameras beside the bird's-eye view: auto (the one that sees "
                       "the query point, or the most points), all, none, or names separated by commas")
        p.add_argument("--range", dest="extent", type=float, default=40.0,
                       help="half-width of the bird's-eye view in metres (default 40)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


def _frame_of(dataset, spec: DatasetSpec) -> int:
    from lidarssl.features import check_frame

    return check_frame(dataset, spec.frame or 0)


def _query(scan, args, class_names, extent: float = 40.0) -> int:
    from lidarssl.viz.query import select_query

    return select_query(scan, point=args.point, xyz=args.xyz, cls=args.cls, class_names=class_names, extent=extent)


def _weights_label(path: Path) -> str:
    from lidarssl.checkpoints import read_metadata

    meta = read_metadata(path)
    how = ", ".join(str(x) for x in (meta.get("method") or meta.get("mode"), meta.get("epochs") and
                                     f"{meta['epochs']} epochs") if x)
    return f"{path.parent.name}/{path.name}" + (f" ({how})" if how else "")


def _feature_rows(args) -> list[tuple[Any, Any, Any, str]]:
    """(scan, features, dataset, title) for every dataset x weights pair of the command line."""
    from lidarssl.features import FeatureExtractor

    specs = [parse_dataset(d, args.split, args.frame) for d in args.datasets]
    extractors = [FeatureExtractor(w, backbone=args.backbone, device=args.device) for w in args.weights]
    rows = []
    for spec in specs:
        dataset = spec.open()
        scan = dataset[_frame_of(dataset, spec)]
        for w, ex in zip(args.weights, extractors):
            title = f"{scan.dataset} {scan.frame_id}  |  {_weights_label(Path(w))}"
            rows.append((scan, ex(scan).features, dataset, title))
    return rows


def _report(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        print(f"wrote {path} ({im.width} x {im.height} px)")


def cmd_similarity(args: argparse.Namespace) -> None:
    from lidarssl.viz.similarity import save_similarity, similarity_panel

    panels = []
    for scan, feats, dataset, title in _feature_rows(args):
        q = _query(scan, args, dataset.class_map.classes, args.extent)
        panels.append(similarity_panel(scan, feats, q, f"{title}  |  query point {q}", cameras=args.cameras))
    _report(save_similarity(panels, args.out, height=args.height, extent=args.extent, compact=args.compact))


def cmd_pca(args: argparse.Namespace) -> None:
    from lidarssl.viz.pca import pca_panel, save_pca

    panels = [pca_panel(scan, feats, title, cameras=args.cameras) for scan, feats, _, title in _feature_rows(args)]
    _report(save_pca(panels, args.out, height=args.height, extent=args.extent, compact=args.compact))


def _run_dataset(args, config_root: Path, config_split: str) -> DatasetSpec:
    if args.data is not None:
        return parse_dataset(args.data, args.split, args.frame)
    return parse_dataset(str(config_root), args.split or config_split, args.frame)


def _camera_frame(spec: DatasetSpec):
    """The frame of ``spec`` and its dataset; an error when the frame has no camera to compare pixels with."""
    dataset = spec.open()
    scan = dataset[_frame_of(dataset, spec)]
    if not scan.cameras:
        raise DataError(f"{scan.source}: this frame has no cameras; `pixels` compares a point with the pixels of "
                        "the camera that sees it: use a dataset with cameras (synthetic, nuScenes, PandaSet, KITTI)")
    return scan, dataset


def cmd_pixels(args: argparse.Namespace) -> None:
    from lidarssl.viz.pixels import PretrainedRun, save_pixels

    runs = [PretrainedRun(r, device=args.device) for r in args.runs]
    config = runs[0].config.data
    specs = [parse_dataset(d, args.split, args.frame) for d in args.data] if args.data else \
        [parse_dataset(str(config.root), args.split or config.split, args.frame)]
    rows = []
    for spec in specs:
        scan, dataset = _camera_frame(spec)
        q = _query(scan, args, dataset.class_map.classes)
        rows += [(f"{scan.dataset} {scan.frame_id}  |  {r.run.name} ({r.method})", r.pixel_similarity(scan, q))
                 for r in runs]
    _report(save_pixels(rows, args.out, height=args.height, compact=args.compact))


def _check_classes(run_classes, dataset, root: Path) -> None:
    if tuple(run_classes) != tuple(dataset.class_map.classes):
        raise DataError(f"{root}: its labels use the {dataset.class_map.name} classes, which the run does not "
                        f"predict ({', '.join(run_classes[:4])}, ...); compare with a dataset of the run's classes")


def cmd_predictions(args: argparse.Namespace) -> None:
    from lidarssl.viz.predictions import RunPredictor, save_predictions

    predictors = [RunPredictor(r, device=args.device) for r in args.runs]
    spec = _run_dataset(args, predictors[0].config.data.root, predictors[0].config.data.val_split)
    dataset = spec.open()
    for p in predictors:
        _check_classes(p.class_names, dataset, spec.root)
    scan = dataset[_frame_of(dataset, spec)]
    preds = [(p.run.name, p(scan)) for p in predictors]
    _report(save_predictions(scan, preds, dataset.class_map.classes, args.out, f"{scan.dataset} {scan.frame_id}",
                             cameras=args.cameras, height=args.height, extent=args.extent, compact=args.compact))


def cmd_features(args: argparse.Namespace) -> None:
    from lidarssl.features import FeatureExtractor, parse_frames, write_features

    dataset = DatasetSpec(args.dataset, args.split, format=args.format).open()
    frames = parse_frames(args.frames, len(dataset))
    extractor = FeatureExtractor(args.weights, backbone=args.backbone, device=args.device)
    index = write_features(extractor, dataset, args.out, frames, dtype=args.dtype, progress=_progress("features of frame"))
    print(f"wrote {extractor.channels}-channel features of {len(frames)} frames to {args.out} (list: {index})")


def cmd_view(args: argparse.Namespace) -> None:
    from lidarssl.features import parse_frames
    from lidarssl.viz.viewer import record, require_rerun

    require_rerun()  # before any model is loaded: the missing extra is the first thing to fix
    spec = parse_dataset(args.dataset, args.split)
    dataset = spec.open()
    frames = parse_frames(args.frames, len(dataset))
    extras = {}
    classes = dataset.class_map.classes
    if args.weights is not None:
        from lidarssl.features import FeatureExtractor

        extractor = FeatureExtractor(args.weights, backbone=args.backbone, device=args.device)
        last: list[Any] = [None, None]  # (scan, features): computed once per scan for PCA and similarity

        def features(scan):
            if last[0] is not scan:
                last[:] = [scan, extractor(scan).features]
            return last[1]

        extras["features"] = features
        if any(x is not None for x in (args.point, args.xyz, args.cls)):
            extras["query"] = lambda scan: _query(scan, args, classes)
    elif any(x is not None for x in (args.point, args.xyz, args.cls)):
        raise ConfigError("a query point (--point, --xyz, --class) colours points by feature similarity: "
                          "also give --weights")
    if args.run is not None:
        from lidarssl.viz.predictions import RunPredictor

        predictor = RunPredictor(args.run, device=args.device)
        _check_classes(predictor.class_names, dataset, spec.root)
        extras["predict"] = predictor
    out = record(dataset, classes, out=args.out, spawn=args.spawn, extras=extras, frames=frames,
                 progress=_progress("logging frame"))
    if out is not None:
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); open it with: rerun {out}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``features``, ``viz`` and ``view`` on the ``lidarssl`` parser."""
    feat = sub.add_parser("features", help="write a trained backbone's per-point features, one .npy per frame",
                          description="Per-point features of every original point (points the backbone dropped "
                          "take their nearest kept point's), one (N, C) .npy per frame named after its frame id, "
                          "and index.json listing them.")
    feat.add_argument("weights", type=Path, help="backbone .safetensors written by pretrain, train, probe or finetune")
    feat.add_argument("dataset", type=Path, help="dataset folder, recognised by its layout")
    feat.add_argument("--out", type=Path, required=True, help="folder to write the .npy files into")
    feat.add_argument("--split", default=None, help="split (default: the reader's default)")
    feat.add_argument("--format", default=None, help="dataset format instead of recognising it")
    feat.add_argument("--frames", default=None, help="frames: 3, 0,4,7, 2:10 or ::5 (default: all)")
    feat.add_argument("--backbone", default=None, help="the backbone preset the weights must hold")
    feat.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored precision")
    feat.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    feat.set_defaults(func=cmd_features)

    viz = sub.add_parser("viz", help="figures of what a backbone learned: similarity, pixels, pca, predictions",
                         description="PNG figures: correlation maps of point features (similarity), point-to-pixel "
                         "similarity of an image-pretraining run (pixels), features as colours (pca), and a "
                         "segmentation run's predictions beside the labels (predictions).")
    kinds = viz.add_subparsers(dest="kind", required=True, metavar="KIND")

    def feature_figure(name: str, helptext: str) -> argparse.ArgumentParser:
        p = kinds.add_parser(name, help=helptext, description=helptext + ". One row per (dataset, weights) pair; "
                             "datasets as PATH or PATH,split=S,frame=I,sensor=pandargt.")
        p.add_argument("datasets", nargs="+", metavar="DATASET", help="dataset folders, optionally with ,key=value")
        p.add_argument("--weights", type=Path, nargs="+", required=True, help="backbone .safetensors files")
        p.add_argument("--backbone", default=None, help="the backbone preset the weights must hold")
        p.add_argument("--split", default=None, help="split of every dataset (default: the reader's default)")
        p.add_argument("--frame", type=int, default=0, help="frame index of every dataset (default 0)")
        return p

    sim = feature_figure("similarity", "colour scans by the cosine similarity of each point's feature to a query point's")
    _query_args(sim)
    _figure_args(sim, "similarity")
    sim.set_defaults(func=cmd_similarity)

    pca = feature_figure("pca", "colour scans by the first three principal components of their point features")
    _figure_args(pca, "pca")
    pca.set_defaults(func=cmd_pca)

    pix = kinds.add_parser("pixels", help="similarity of a point's embedding to every pixel of its camera",
                           description="For a pretraining run of an image method (ScaLR, PPKT, SLidR, ST-SLidR, NCLR): "
                           "the cosine similarity of one point's embedding (student backbone and head) to every "
                           "pixel's (frozen teacher and pixel head) in the camera that sees the point.")
    pix.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="pretraining run directories (out= of pretrain)")
    pix.add_argument("--data", nargs="+", default=None, metavar="DATASET",
                     help="datasets, one row each (default: the run's data.root)")
    _run_frame_args(pix, "data.split")
    _query_args(pix)
    _figure_args(pix, "pixels", cameras=False)
    pix.set_defaults(func=cmd_pixels)

    pred = kinds.add_parser("predictions", help="a segmentation run's predictions beside the labels, errors in red",
                            description="Labels, predictions and errors of every original point of one frame, from "
                            "above and on a camera; several runs stack their rows.")
    pred.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories of train, probe or finetune")
    pred.add_argument("--data", default=None, metavar="DATASET", help="dataset (default: the run's data.root)")
    _run_frame_args(pred, "data.val_split")
    _figure_args(pred, "predictions")
    pred.set_defaults(func=cmd_predictions)

    view = sub.add_parser("view", help="interactive 3D viewer (rerun): scans, cameras, labels, predictions, features",
                          description="Log frames to a rerun recording: points (height, labels, predictions, errors, "
                          "PCA colours, similarity to a query point), camera poses, images and projections, one "
                          "timeline step per frame. Needs the optional extra: pip install 'lidarssl[viz]'.")
    view.add_argument("dataset", help="dataset folder (PATH or PATH,split=S,sensor=...)")
    view.add_argument("--split", default=None, help="split (default: the reader's default)")
    view.add_argument("--frames", default="0", help="frames: 3, 0,4,7, 2:10 or all (default 0)")
    view.add_argument("--weights", type=Path, default=None, help="backbone .safetensors: adds PCA colours and, with a "
                      "query point, similarity")
    view.add_argument("--backbone", default=None, help="the backbone preset the weights must hold")
    view.add_argument("--run", type=Path, default=None, help="segmentation run directory: adds predictions and errors")
    _query_args(view)
    view.add_argument("--out", type=Path, default=None, help="write the recording to this .rrd file")
    view.add_argument("--spawn", action="store_true", help="open the rerun viewer and stream the recording to it")
    view.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    view.set_defaults(func=cmd_view)
