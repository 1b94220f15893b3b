"""Shared fixtures. Real data samples live in ../shared/data/real beside the repository (or $LIDARSSL_REAL_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real-sample folder; skipped where absent (a user's clone) but a failure on CI."""
    root = Path(os.environ.get("LIDARSSL_REAL_DATA", REPO.parent / "shared" / "data" / "real"))
    if not (root / "README.md").is_file():
        message = f"real data samples not found at {root} (set LIDARSSL_REAL_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root
