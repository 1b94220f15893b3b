"""Pretext methods: one LightningModule each, registered by name for `lidarssl pretrain` recipes."""

# importing the method modules registers them
from lidarssl.methods import also, depthcontrast, nclr, pointcontrast, ppkt, scalr, slidr  # noqa: F401
from lidarssl.methods.base import (
    PretrainMethod,
    list_methods,
    method_class,
    register_method,
)

__all__ = ["PretrainMethod", "list_methods", "method_class", "register_method"]
