"""Temporal masking: a tracker that only adds boxes, and a look-ahead buffer."""

from edge.tracking.lookahead import TemporalMasker
from edge.tracking.tracker import FaceTracker

__all__ = ["FaceTracker", "TemporalMasker"]
