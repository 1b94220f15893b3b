"""Fixtures of the model tests."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread) -> None:
    """Model tests use tiny tensors: one thread each (see the ``one_thread`` fixture)."""
