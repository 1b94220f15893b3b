"""An interactive 3D viewer of scans, cameras and what a model makes of them, with rerun (https://rerun.io).

:func:`record` logs frames of a dataset to a rerun recording, one step of the ``frame`` timeline per frame, so a
sequence plays back as the vehicle drives (ego poses relative to the first frame):

* ``world/ego/lidar/scan``: the points coloured by height; ``labels`` and ``predictions`` as class ids (named
  and coloured by the annotation context), ``errors`` (wrong points red), ``similarity`` (to a query point, with
  the query as ``query``) and ``pca`` (principal feature components as colours), each when available;
* ``world/ego/cam/<name>``: each camera's pose, pinhole and image (JPEG), with ``projection``: the points drawn
  on the image, coloured by class (or by depth without labels), and ``similarity`` with a query point.

The recording is written to an ``.rrd`` file (``rerun file.rrd`` opens it) and/or streamed to a viewer that
:func:`record` spawns. rerun-sdk is an optional extra: ``pip install 'lidarssl[viz]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lidarssl.data.geometry import project
from lidarssl.data.scan import IGNORE_INDEX, Scan
from lidarssl.errors import ConfigError
from lidarssl.io import atomic_write
from lidarssl.viz.palette import IGNORE_COLOUR, class_colours

__all__ = ["require_rerun", "record", "open_viewer", "FrameExtras", "MISSING_RERUN"]

MISSING_RERUN = ("the interactive viewer needs rerun-sdk, which is not installed; install it with: "
                 "pip install 'lidarssl[viz]'  (or: pip install rerun-sdk==0.41.0)")

#: What a caller can add to each frame: ``features(scan) -> (N, C)``, ``predict(scan) -> (N,)``, and
#: ``query(scan) -> index`` of the point whose similarity map is drawn.
FrameExtras = dict[str, Callable[[Scan], Any]]


def require_rerun() -> Any:
    """The ``rerun`` module, or a one-line error saying how to install it."""
    try:
        import rerun
    except ImportError:
        raise ConfigError(MISSING_RERUN) from None
    return rerun


def _height_colours(points: np.ndarray) -> np.ndarray:
    import matplotlib

    z = points[:, 2]
    lo, hi = np.percentile(z, [1, 99])
    return (matplotlib.colormaps["viridis"](np.clip((z - lo) / max(hi - lo, 1e-6), 0, 1))[:, :3] * 255).astype(np.uint8)


def _annotations(rr: Any, class_names: Sequence[str]) -> Any:
    palette = class_colours(len(class_names))
    infos = [rr.AnnotationInfo(id=i, label=name, color=tuple(int(c) for c in palette[i]))
             for i, name in enumerate(class_names)]
    infos.append(rr.AnnotationInfo(id=IGNORE_INDEX, label="unlabelled", color=IGNORE_COLOUR))
    return rr.AnnotationContext(infos)


def _log_frame(rec: Any, rr: Any, scan: Scan, origin_inv: np.ndarray, extras: FrameExtras, radius: float,
               jpeg_quality: int) -> None:
    from lidarssl.features import cosine_similarity
    from lidarssl.viz.pca import pca_colours
    from lidarssl.viz.similarity import similarity_colours

    similarity = None
    pose = origin_inv @ scan.ego_pose
    rec.log("world/ego", rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]))
    pts = scan.points
    lidar = "world/ego/lidar"
    rec.log(f"{lidar}/scan", rr.Points3D(pts, colors=_height_colours(pts), radii=radius))
    if scan.labels is not None:
        rec.log(f"{lidar}/labels", rr.Points3D(pts, class_ids=scan.labels.astype(np.uint16), radii=radius))
    if "predict" in extras:
        pred = np.asarray(extras["predict"](scan))
        rec.log(f"{lidar}/predictions", rr.Points3D(pts, class_ids=pred.astype(np.uint16), radii=radius))
        if scan.labels is not None:
            labelled = scan.labels != IGNORE_INDEX
            colours = np.tile(np.array(IGNORE_COLOUR, np.uint8), (len(pts), 1))
            colours[labelled] = 110
            colours[labelled & (pred != scan.labels)] = (255, 30, 30)
            rec.log(f"{lidar}/errors", rr.Points3D(pts, colors=colours, radii=radius))
    if "features" in extras:
        feats = extras["features"](scan)
        rec.log(f"{lidar}/pca", rr.Points3D(pts, colors=(pca_colours(feats) * 255).astype(np.uint8), radii=radius))
        if "query" in extras:
            q = int(extras["query"](scan))
            similarity = (similarity_colours(cosine_similarity(feats, q)) * 255).astype(np.uint8)
            rec.log(f"{lidar}/similarity", rr.Points3D(pts, colors=similarity, radii=radius))
            rec.log(f"{lidar}/query", rr.Points3D(pts[q : q + 1], colors=[(255, 255, 255)], radii=6 * radius,
                                                   labels=[f"query point {q}"]))
    for cam in scan.cameras:
        path = f"world/ego/cam/{cam.name}"
        cam_to_lidar = np.linalg.inv(cam.lidar_to_cam)
        h, w = cam.hw
        rec.log(path, rr.Transform3D(translation=cam_to_lidar[:3, 3], mat3x3=cam_to_lidar[:3, :3]))
        rec.log(path, rr.Pinhole(image_from_camera=cam.K, resolution=[w, h], camera_xyz=rr.ViewCoordinates.RDF))
        rec.log(path, rr.Image(cam.image).compress(jpeg_quality=jpeg_quality))
        proj = project(pts, cam.K, cam.lidar_to_cam, cam.hw, 1.0)
        idx = np.flatnonzero(proj.valid)
        if scan.labels is not None:
            points2d = rr.Points2D(proj.uv[idx], class_ids=scan.labels[idx].astype(np.uint16), radii=1.5)
        else:
            import matplotlib

            d = proj.depth[idx]
            far = float(np.percentile(d, 99)) if len(d) else 1.0
            colours = matplotlib.colormaps["turbo"](np.clip(d / max(far, 1e-6), 0, 1))[:, :3]
            points2d = rr.Points2D(proj.uv[idx], colors=(colours * 255).astype(np.uint8), radii=1.5)
        rec.log(f"{path}/projection", points2d)
        if similarity is not None:
            rec.log(f"{path}/similarity", rr.Points2D(proj.uv[idx], colors=similarity[idx], radii=1.5))


def record(scans: Sequence[Scan] | Callable[[], Any], class_names: Sequence[str], out: str | Path | None = None,
           spawn: bool = False, extras: FrameExtras | None = None, frames: Sequence[int] | None = None,
           name: str = "lidarssl", radius: float = 0.06, jpeg_quality: int = 85,
           progress: Callable[[int, int], None] | None = None) -> Path | None:
    """Log scans to a rerun recording: to ``out`` (an ``.rrd`` file, written atomically), to a spawned viewer
    (``spawn``), or both.

    Args:
        scans: the scans in playback order (a dataset or a list; indexed by ``frames`` when given).
        class_names: names of the training ids of labels and predictions.
        out: ``.rrd`` file to write.
        spawn: start the rerun viewer and stream the recording to it.
        extras: per-frame functions (see :data:`FrameExtras`) adding predictions and feature layers.
        frames: indices of ``scans`` to log (all by default); the ``frame`` timeline takes these values.
        name: application id of the recording.
        radius: point radius in metres.
        jpeg_quality: quality of the camera images in the recording.

    Raises:
        ConfigError: rerun-sdk is not installed, or neither ``out`` nor ``spawn`` is given.
    """
    rr = require_rerun()
    if out is None and not spawn:
        raise ConfigError("the viewer needs somewhere to send the recording: give an .rrd file (--out) or --spawn")
    extras = dict(extras or {})
    indices = list(range(len(scans))) if frames is None else list(frames)

    def log_all(rec: Any) -> None:
        rec.log("/", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
        rec.log("world", _annotations(rr, class_names), static=True)
        origin_inv = None
        for done, i in enumerate(indices, 1):
            scan = scans[i]
            if origin_inv is None:
                origin_inv = np.linalg.inv(scan.ego_pose)
            rec.set_time("frame", sequence=i)
            _log_frame(rec, rr, scan, origin_inv, extras, radius, jpeg_quality)
            if progress is not None:
                progress(done, len(indices))

    rec = rr.RecordingStream(name)
    if out is None:
        import rerun_cli

        # the viewer binary shipped in rerun-sdk's wheel: found without the environment's bin/ on PATH
        rr.spawn(executable_path=str(Path(rerun_cli.__file__).parent / "rerun"), recording=rec)
        log_all(rec)
        try:
            rec.flush()
        except RuntimeError as exc:
            raise ConfigError(f"could not reach the rerun viewer ({str(exc).splitlines()[0]}); on a machine without "
                              "a display write the recording with --out FILE.rrd and open it with `rerun FILE.rrd` "
                              "where there is one") from None
        return None

    def write(tmp: str) -> None:
        rec.save(tmp)
        try:
            log_all(rec)
        finally:
            rec.flush()
            rec.disconnect()

    path = atomic_write(Path(out), write)
    if spawn:
        open_viewer(path)
    return path


def open_viewer(path: Path, wait: float = 2.0) -> None:
    """Open an ``.rrd`` file in the rerun viewer (a detached process); an error if the viewer exits at once."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "rerun_cli", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    if proc.poll() is not None:  # a viewer that is gone already never opened (it exits 0 without a display)
        import re

        lines = re.sub(r"\x1b\[[0-9;]*m", "", proc.stderr.read().decode(errors="replace")).strip().splitlines()
        last = next((x for x in reversed(lines) if "rror" in x), lines[-1] if lines else "no message")
        last = last.strip()
        last = last if len(last) <= 100 else "..." + last[-97:]  # the end of rust errors says what is missing
        raise ConfigError(f"the rerun viewer did not open ({last}); the recording is in {path}: "
                          f"open it with `rerun {path}` where there is a display")
