"""What every on-disk writer of synthetic data shares: the sequences to generate, their frames, atomic files.

A dataset of ``num_frames`` frames is several short sequences (consecutive seeds, the last ones held out as
``val``), each its own street. :class:`Generation` builds the world of each sequence in turn and yields its
frames; the writers (native layout, nuScenes, SemanticKITTI, PandaSet) only decide where the bytes go.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from lidarssl.data.scan import Scan
from lidarssl.errors import ConfigError
from lidarssl.synthetic.world import SyntheticWorld

#: Called after each written frame with (frames written, frames in total).
ProgressFn = Callable[[int, int], None]


def encode_image(image: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    """An (H, W, 3) RGB or (H, W) grey uint8 image as ``"JPEG"`` (at ``quality``) or ``"PNG"`` bytes."""
    buf = io.BytesIO()
    options = {"quality": quality} if fmt == "JPEG" else {}
    Image.fromarray(image).save(buf, format=fmt, **options)
    return buf.getvalue()


def sequence_plan(num_frames: int, per_sequence: int, val_fraction: float) -> list[tuple[int, str]]:
    """(frames, split) per sequence: at least two sequences so that val exists, val last."""
    n_seq = max(1, math.ceil(num_frames / per_sequence))
    if n_seq < 2 and num_frames >= 2:
        n_seq = 2
    base, extra = divmod(num_frames, n_seq)
    counts = [base + (k < extra) for k in range(n_seq)]
    n_val = 0 if n_seq < 2 else min(n_seq - 1, max(1, round(n_seq * val_fraction)))
    return [(c, "val" if k >= n_seq - n_val else "train") for k, c in enumerate(counts)]


@dataclass(frozen=True)
class Sequence:
    """One generated sequence: its position in the dataset, seed, split and length."""

    id: int
    seed: int
    split: str
    num_frames: int


@dataclass(frozen=True)
class Frame:
    """One generated frame: the scan, its index in its sequence, the world that made it, and per camera of the
    scan its (H, W) uint8 image of raw class ids (255 = sky)."""

    sequence: Sequence
    index: int
    world: SyntheticWorld
    scan: Scan
    class_images: tuple[np.ndarray, ...] = ()


class Generation:
    """The sequences of a synthetic dataset and, on demand, their frames.

    Sequence ``k`` uses seed ``seed + k`` and the other parameters of ``source``; sequence 0 is therefore
    exactly ``source`` when a world is given (same scans, frame by frame).

    Args:
        source: a :class:`SyntheticWorld`, or its parameters (``SyntheticWorld(**source)``).
        num_frames: total frames over all sequences.
        frames_per_sequence: frames per sequence; defaults to the world's ``num_frames`` (40).
        val_fraction: share of sequences held out as ``val`` (at least one when there are two).
        threads: render threads (0 = one per core); None keeps the setting of a given world and uses all
            cores for parameters.

    Raises:
        ConfigError: invalid parameters.
    """

    def __init__(
        self,
        source: SyntheticWorld | Mapping[str, Any],
        num_frames: int,
        *,
        frames_per_sequence: int | None = None,
        val_fraction: float = 0.2,
        threads: int | None = None,
    ) -> None:
        if num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {num_frames}")
        if isinstance(source, SyntheticWorld):
            self.world0 = source
        else:
            try:
                self.world0 = SyntheticWorld(**dict(source))
            except TypeError as e:  # an unknown or missing parameter name
                raise ConfigError(f"bad generator parameters {sorted(source)}: {e}") from None
        self.source = source
        self.params: dict[str, Any] = self.world0.params
        self.per_sequence = int(frames_per_sequence or self.params["num_frames"])
        if self.per_sequence < 1:
            raise ConfigError(f"frames_per_sequence must be >= 1, got {self.per_sequence}")
        self.num_frames = num_frames
        if threads is None:
            threads = source.threads if isinstance(source, SyntheticWorld) else 0
        self.threads = threads
        plan = sequence_plan(num_frames, self.per_sequence, val_fraction)
        self.sequences = [Sequence(k, self.params["seed"] + k, split, count) for k, (count, split) in enumerate(plan)]

    @property
    def generator_params(self) -> dict[str, Any]:
        """``SyntheticWorld`` parameters of sequence 0 (sequence ``k`` adds ``k`` to the seed)."""
        return {**self.params, "num_frames": self.per_sequence}

    def world(self, sequence: Sequence) -> SyntheticWorld:
        """A fresh world for ``sequence`` (the caller closes it)."""
        return SyntheticWorld(**{**self.generator_params, "seed": sequence.seed}, threads=self.threads)

    def frames(self, progress: ProgressFn | None = None,
               skip: Callable[[int, int], bool] | None = None) -> Iterator[Frame]:
        """Every frame in order; ``progress(done, total)`` runs once the consumer is done with a frame.
        Frames for which ``skip(sequence id, frame index)`` is true (already on disk) are not rendered."""
        done = 0
        for seq in self.sequences:
            if skip is not None and all(skip(seq.id, i) for i in range(seq.num_frames)):
                done += seq.num_frames
                if progress is not None:
                    progress(done, self.num_frames)
                continue
            # sequence 0 of a given world is that world itself, unless its length changes
            same_length = self.per_sequence == self.params["num_frames"]
            reuse = isinstance(self.source, SyntheticWorld) and seq.id == 0 and same_length
            world = self.world0 if reuse else self.world(seq)
            saved_threads = world.threads
            world.threads = self.threads
            try:
                for i in range(seq.num_frames):
                    if skip is not None and skip(seq.id, i):
                        done += 1
                        continue
                    scan, classes = world.scan_with_classes(i)
                    yield Frame(seq, i, world, scan, tuple(classes))
                    done += 1
                    if progress is not None:
                        progress(done, self.num_frames)
            finally:
                world.threads = saved_threads
                if not reuse:
                    world.close()


class SequenceWriter(Protocol):
    """Writes one sequence: its frames as they come, then what it keeps until the end (poses, tables)."""

    def add(self, frame: Frame) -> None: ...

    def finish(self) -> None: ...


def write_sequences(gen: Generation, start: Callable[[Frame], SequenceWriter], progress: ProgressFn | None) -> None:
    """Hand every frame of ``gen`` to the writer ``start`` makes from its sequence's first frame.

    Each writer is finished right after its last frame, so a sequence's closing files are on disk before the
    next sequence starts.
    """
    writer: SequenceWriter | None = None
    for frame in gen.frames(progress):
        if frame.index == 0:
            writer = start(frame)
        writer.add(frame)
        if frame.index == frame.sequence.num_frames - 1:
            writer.finish()
