"""Temporal masking: a tracker that only adds boxes, and a look-ahead buffer."""
