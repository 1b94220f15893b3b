"""The frozen image-teacher contract, its input convention and the registry of teacher variants.

Input convention (the one place it is decided): images are channel-first RGB tensors ``(B, 3, H, W)``, as
the camera views of a :class:`~lidarssl.data.scan.Scan` become after ``permute(0, 3, 1, 2)``. Their dtype
says their scale: ``uint8`` holds 0..255, a floating tensor holds 0..1. :meth:`Teacher.prepare` turns them
into what every supported network was trained on: float RGB in [0, 1], resized (bilinear, antialiased) to
the teacher's ``image_size`` and rounded to a multiple of its patch size, then normalised with the
ImageNet mean and std.

A teacher's output is a dense feature map ``(B, C, h, w)``; with ``upsample=True`` it is bilinearly
resized to the input's ``(H, W)`` so that row ``v``, column ``u`` holds the feature of pixel ``(u, v)``.

Variants are registered timm style: one function per variant decorated with :func:`register_teacher`,
built by name with :func:`create_teacher`.
"""

from __future__ import annotations

import inspect
import pickle
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lidarssl.checkpoints import load_torch_file
from lidarssl.errors import CheckpointError, ConfigError
from lidarssl.registry import TEACHERS

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Release",
    "Teacher",
    "create_teacher",
    "list_teachers",
    "read_checkpoint",
    "register_teacher",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Release:
    """Where the official weights file of a teacher is published, for the missing-file message.

    Attributes:
        filename: the file's name as the release publishes it.
        url: its download address.
        project: the repository that releases it (``owner/name``).
        note: how to get the usable file from the download, when it is not the download itself.
    """

    filename: str
    url: str
    project: str
    note: str = ""

    def describe(self) -> str:
        """One sentence naming the file and where to get it."""
        text = f"{self.filename} from the {self.project} release ({self.url})"
        return f"{text}; {self.note}" if self.note else text


class Teacher(nn.Module, ABC):
    """A frozen image encoder returning dense feature maps; always in eval mode, never trained.

    Subclasses build ``self.encoder`` and implement :meth:`encode` (normalised images to features) and
    :meth:`convert` (a foreign checkpoint to ``self.encoder``'s key layout).

    Attributes:
        name: registry name of the variant.
        out_channels: channels ``C`` of the feature map.
        stride: pixels of the (resized) input per feature cell.
        size_multiple: input sizes are rounded to a multiple of this (the patch size of a ViT, else 1).
        image_size: ``(H, W)`` every input is resized to before encoding, or ``None`` to keep its size.
        upsample: whether :meth:`forward` resizes the features to the input's ``(H, W)``.
        align_corners: ``align_corners`` of that upsampling (ScaLR used ``True``).
        weights: the weights file loaded, or ``None`` for a randomly initialised teacher.
    """

    out_channels: int
    stride: int
    size_multiple: int = 1
    encoder: nn.Module

    def __init__(
        self,
        name: str,
        image_size: tuple[int, int] | None = None,
        upsample: bool = False,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if image_size is not None:
            if not isinstance(image_size, (list, tuple)) or len(image_size) != 2 or min(image_size) < 1:
                raise ConfigError(f"teacher '{name}': image_size must be [H, W] with positive sides, got {image_size}")
            image_size = (int(image_size[0]), int(image_size[1]))
        self.name = name
        self.image_size = image_size
        self.upsample = upsample
        self.align_corners = align_corners
        self.weights: Path | None = None
        # Not persistent: they are constants of the input convention, not weights.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # -- frozen behaviour ------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> Teacher:
        """Stay in eval mode whatever is asked: BatchNorm statistics and dropout of a teacher are fixed."""
        return super().train(False)

    def freeze(self) -> Teacher:
        """Turn off gradients of every parameter and switch to eval mode; returns ``self``."""
        self.requires_grad_(False)
        return self.eval()

    # -- input convention ------------------------------------------------------------------------------

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(H, W)`` the network sees for an input of ``height`` x ``width`` pixels."""
        h, w = self.image_size or (height, width)
        m = self.size_multiple
        # Nearest multiple, halves rounded up (Python's round() would round 3.5 and 2.5 differently).
        return max(m, (h + m // 2) // m * m), max(m, (w + m // 2) // m * m)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Scale, resize and normalise ``images`` as described in the module docstring.

        Args:
            images: (B, 3, H, W) RGB, ``uint8`` in 0..255 or floating in 0..1.

        Returns:
            (B, 3, H', W') normalised float images with ``(H', W') = network_size(H, W)``.

        Raises:
            ValueError: on a tensor that is not (B, 3, H, W) or has an integer dtype other than uint8.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            channels_last = images.ndim == 4 and images.shape[-1] == 3
            hint = " (channels last? use images.permute(0, 3, 1, 2))" if channels_last else ""
            raise ValueError(f"teacher '{self.name}' expects (B, 3, H, W) RGB images, got {tuple(images.shape)}{hint}")
        dtype = self.mean.dtype
        if images.dtype == torch.uint8:
            x = images.to(dtype) / 255.0
        elif images.is_floating_point():
            x = images.to(dtype)
        else:
            raise ValueError(f"teacher '{self.name}' expects uint8 (0..255) or float (0..1) images, got {images.dtype}")
        size = self.network_size(*x.shape[-2:])
        if size != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Dense features of ``images``, without gradients.

        Args:
            images: (B, 3, H, W) RGB, ``uint8`` in 0..255 or floating in 0..1.

        Returns:
            (B, out_channels, h, w) features, ``(h, w) = feature_size(H, W)``, or ``(H, W)`` when
            ``upsample`` is set.
        """
        features = self.encode(self.prepare(images))
        if self.upsample:
            features = F.interpolate(features, size=tuple(images.shape[-2:]), mode="bilinear",
                                     align_corners=self.align_corners)  # fmt: skip
        return features

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features (B, C, h, w) of images already passed through :meth:`prepare`."""

    @abstractmethod
    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(h, w)`` of the feature map for an input of ``height`` x ``width`` pixels (before upsampling)."""

    # -- weights ---------------------------------------------------------------------------------------

    @abstractmethod
    def releases(self) -> list[Release]:
        """The official files this teacher loads, for the missing-file message."""

    @abstractmethod
    def convert(self, checkpoint: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
        """Map a foreign checkpoint's contents to ``self.encoder``'s state-dict keys.

        Keys the teacher does not use (heads, momentum encoders) are dropped by name; anything else is
        passed through, so a wrong file fails the strict load with a key report.

        Raises:
            CheckpointError: the checkpoint is not of this teacher's model.
        """

    def load_state(self, checkpoint: Mapping[str, Any], source: str) -> None:
        """Convert ``checkpoint`` and load it strictly into the encoder.

        Args:
            checkpoint: the object read from a weights file (see :func:`read_checkpoint`).
            source: name of the file for error messages.

        Raises:
            CheckpointError: wrong model, or missing, unexpected or mis-shaped keys after conversion.
        """
        from lidarssl.checkpoints import load_state_dict_strict

        state = self.convert(checkpoint, source)
        load_state_dict_strict(self.encoder, state, f"{source} (teacher '{self.name}')")

    def load(self, weights: str | Path) -> None:
        """Read the weights file ``weights`` and load it strictly (see :meth:`load_state`).

        Raises:
            CheckpointError: the file is missing (the message says which official file to get and where),
                unreadable, or does not match this teacher.
        """
        path = Path(weights).expanduser()
        if not path.is_file():
            what = "is a directory, not a weights file" if path.is_dir() else "not found"
            files = " or ".join(r.describe() for r in self.releases())
            raise CheckpointError(
                f"teacher '{self.name}': weights file {path} {what}. Expected the official file {files}. "
                "Download it where there is network access, copy it to this machine and set the teacher's "
                "`weights` to its path (or `weights: none` for a randomly initialised teacher)."
            )
        self.load_state(read_checkpoint(path), str(path))
        self.weights = path


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """Read a foreign weights file without running code from it.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(map_location="cpu", weights_only=True)``.

    Raises:
        CheckpointError: the file cannot be read that way, or does not hold a mapping.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        obj: Any = load_torch_file(path)
    else:
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 -- safetensors raises several types for a damaged header
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise CheckpointError(f"{path}: not a readable safetensors file ({first})") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, expected a dict of tensors")
    return obj


def check_options(cls: type, name: str, options: Mapping[str, Any]) -> None:
    """Raise a ConfigError when ``options`` holds a key that is not an option of ``cls``.

    The options of a teacher class are the parameters of its constructor that have a default value;
    those without one (name, architecture) are fixed by the registered variant.
    """
    params = inspect.signature(cls.__init__).parameters.values()
    allowed = sorted(p.name for p in params if p.default is not inspect.Parameter.empty)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"teacher '{name}' has no option {unknown}; options: {', '.join(allowed)}")


def key_sample(keys: Any, limit: int = 6) -> str:
    """A short listing of a checkpoint's keys for error messages."""
    keys = list(keys)
    return ", ".join(map(str, keys[:limit])) + (f", ... ({len(keys)} keys)" if len(keys) > limit else "")


#: Decorator: register a teacher variant under its function's name (declared in ``lidarssl.registry``). The
#: function takes ``weights`` (a path or ``None``) and keyword options, and returns a frozen teacher.
register_teacher = TEACHERS.register


def list_teachers() -> list[str]:
    """Names of the registered teacher variants, sorted."""
    return sorted(TEACHERS.names())


def create_teacher(name: str, weights: str | Path | None = None, **options: Any) -> Teacher:
    """Build a registered teacher, load its weights strictly, and freeze it.

    Args:
        name: variant name, one of :func:`list_teachers`.
        weights: path of the official weights file; ``None`` (or the config string ``"none"``) builds a
            randomly initialised teacher, for tests and the synthetic demo.
        **options: teacher options: ``image_size``, ``upsample``, ``align_corners``; ``after_norm`` for
            ViTs; ``format`` for ResNet-50s.

    Raises:
        ConfigError: unknown name or option.
        CheckpointError: missing, unreadable or mismatching weights file.
    """
    fn = TEACHERS.get(name)
    if isinstance(weights, str) and weights.strip().lower() in ("", "none", "null"):
        weights = None
    return fn(weights=weights, **options)


def build(teacher: Teacher, weights: str | Path | None) -> Teacher:
    """Load ``weights`` into a freshly built ``teacher`` (unless ``None``) and freeze it."""
    if weights is not None:
        teacher.load(weights)
    return teacher.freeze()
