"""Redaction: the only producer of RedactedFrame."""

from edge.redact.redactor import RedactionConfig, Redactor

__all__ = ["RedactionConfig", "Redactor"]
