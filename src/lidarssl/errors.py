"""The one error hierarchy of lidarssl.

The command line prints these as a single line (``--debug`` shows the traceback), so every message
names the file or key at fault and says what was expected.
"""

from __future__ import annotations


class LidarSSLError(Exception):
    """Base of every error lidarssl raises on purpose."""


class DataError(LidarSSLError):
    """A scan, dataset file or on-disk layout is not what it should be."""


class ConfigError(LidarSSLError):
    """A recipe or override names an unknown key or holds a value of the wrong type."""


class CheckpointError(LidarSSLError):
    """A weights file is missing, of the wrong format, or does not match the model."""
