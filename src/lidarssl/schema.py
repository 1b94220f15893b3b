"""The base of every recipe section. It imports only pydantic, so any layer can define its own section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Schema"]


class Schema(BaseModel):
    """Base of every config section: unknown keys are errors, values are checked on assignment, and no float
    is infinite or NaN (``optim.lr=.inf`` would train NaN weights)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
