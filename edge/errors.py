"""Errors with messages a technician can act on: each names what failed and, where known,
the fix."""

from __future__ import annotations


class EdgeblurError(Exception):
    """Base class for every error edgeblur raises on purpose."""


class ConfigError(EdgeblurError):
    """A configuration file or value is invalid."""


class ModelError(EdgeblurError):
    """A model file is missing, corrupt or cannot be fetched."""


class DetectorError(EdgeblurError):
    """A detector failed on a frame or could not be built. The frame must not pass raw."""


class RedactionError(EdgeblurError):
    """Redaction could not be applied."""


class SourceError(EdgeblurError):
    """A frame source failed. `retryable` says whether reconnecting may help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class SinkError(EdgeblurError):
    """A sink could not write (disk full, permission denied, encoder failure)."""


class MediaError(EdgeblurError):
    """An input file could not be read or an output could not be written."""
