"""Pretext methods: one LightningModule each, registered by name for `lidarssl pretrain` recipes.

A method is one module here defining a :class:`~lidarssl.methods.base.PretrainMethod` subclass decorated with
``@register_method``, and one line in :mod:`lidarssl.registry` declaring its name. Importing this package loads
no method (nor torch): the names below are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["PretrainMethod", "list_methods", "method_class", "register_method"]

if TYPE_CHECKING:
    from lidarssl.methods.base import PretrainMethod, list_methods, method_class, register_method


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("lidarssl.methods.base"), name)
    raise AttributeError(f"module 'lidarssl.methods' has no attribute '{name}'")
