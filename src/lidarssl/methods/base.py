"""The base of every pretext method, and the method registry.

A method is a LightningModule that owns the student backbone, its own heads and its loss. It declares

* ``Options``: a schema of its own settings (``method.options`` in a recipe), so a typo names the valid keys;
* :meth:`PretrainMethod.builders`: the sample builders its batches need (pairs and images, queries, ...);
* :meth:`PretrainMethod.losses`: named loss terms of a batch, summed into the training loss.

The base does the rest the same way for all: optimiser and schedule, logging every term, stopping on a
non-finite loss with the batch named, and keeping a frozen teacher out of checkpoints (it is rebuilt from
its weights file; a checkpoint holds only what training changes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from lidarssl.batch import Batch
from lidarssl.data.loader import SampleBuilder
from lidarssl.errors import ConfigError
from lidarssl.methods.config import PretrainConfig, PretrainOptimConfig
from lidarssl.models.backbones.base import Backbone
from lidarssl.models.teachers.base import Teacher
from lidarssl.optim import optimizer_and_schedule, param_groups
from lidarssl.registry import METHODS
from lidarssl.schema import Schema

__all__ = ["PretrainMethod", "register_method", "method_class", "list_methods", "point_head"]

#: Class decorator: make a method available to recipes under ``cls.name`` (declared in ``lidarssl.registry``).
register_method = METHODS.register


def method_class(name: str) -> type[PretrainMethod]:
    """The method registered as ``name`` (its module is imported on first use)."""
    return METHODS.get(name)


def list_methods() -> list[str]:
    """Names of the pretext methods, sorted."""
    return sorted(METHODS.names())


def point_head(in_channels: int, out_channels: int) -> nn.Module:
    """The projection of backbone features into a method's embedding space (dropped after pretraining)."""
    return nn.Linear(in_channels, out_channels)


class PretrainMethod(L.LightningModule, ABC):
    """Base of the pretext methods.

    Args:
        backbone: the student.
        options: the method's ``Options`` (validated).
        optim: optimiser settings; ``lr`` is already scaled to the global batch.
        teacher: frozen image teacher, for methods that use one.
        loss_scope: ``process`` or ``global`` (see :func:`lidarssl.methods.pair_losses.gather_across_processes`).
    """

    name: ClassVar[str]
    Options: ClassVar[type[Schema]]
    needs_teacher: ClassVar[bool] = False
    #: whether the point head is trained to match pixels of the teacher's feature maps (``lidarssl viz pixels``
    #: compares a point with every pixel of a camera through :meth:`pixel_embedding`)
    matches_pixels: ClassVar[bool] = False

    def __init__(self, backbone: Backbone, options: Schema, optim: PretrainOptimConfig,
                 teacher: Teacher | None = None, loss_scope: str = "process") -> None:
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise ConfigError(f"method '{self.name}' needs an image teacher; set `teacher:` in the recipe")
        self.backbone = backbone
        self.options = options
        self.optim = optim
        self.loss_scope = loss_scope
        self.teacher = teacher.freeze() if teacher is not None else None

    # -- what subclasses provide ----------------------------------------------------------------------------

    @classmethod
    def parse_options(cls, options: Mapping[str, Any]) -> Schema:
        """Validate ``method.options`` of a recipe against the method's schema."""
        from pydantic import ValidationError

        try:
            return cls.Options.model_validate(dict(options))
        except ValidationError as err:
            keys = ", ".join(cls.Options.model_fields)
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise ConfigError(f"method.options of '{cls.name}': {problems} (valid keys: {keys})") from None

    @classmethod
    @abstractmethod
    def builders(cls, config: PretrainConfig, options: Schema) -> list[SampleBuilder]:
        """The sample builders this method's batches need."""

    @abstractmethod
    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named loss terms of a batch; the training loss is their sum."""

    def pixel_embedding(self, maps: torch.Tensor) -> torch.Tensor:
        """Teacher feature maps (B, C, h, w) in the space the point head is trained to match, before the upsampling
        and normalisation of training: the teacher's own features unless the method projects them."""
        return maps

    # -- shared behaviour ------------------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        terms = self.losses(batch)
        loss = torch.stack([t.float() for t in terms.values()]).sum()
        if not torch.isfinite(loss):
            from lidarssl.runs import non_finite

            detail = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
            raise non_finite(self.trainer, f"loss ({detail})")
        size = int(batch["offsets"].shape[0] - 1)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        if len(terms) > 1:
            self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=False, on_epoch=True,
                          batch_size=size)
        return loss

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        """Named parameters that training changes (the teacher's are frozen)."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad and not n.startswith("teacher.")]

    def configure_optimizers(self):
        o = self.optim
        groups = param_groups(self.trainable(), o.weight_decay, decay_all=o.decay_all)
        return optimizer_and_schedule(groups, o, self.trainer)

    # -- the teacher stays out of checkpoints -----------------------------------------------------------------

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = super().state_dict(*args, **kwargs)
        return {k: v for k, v in state.items() if not k.startswith("teacher.")}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        if self.teacher is not None:  # the teacher comes from its weights file, not the checkpoint
            state_dict = {**state_dict, **{f"teacher.{k}": v for k, v in self.teacher.state_dict().items()}}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
