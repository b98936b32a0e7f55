"""Outputs that accept only RedactedFrame: segment recorder, snapshot, live preview."""
