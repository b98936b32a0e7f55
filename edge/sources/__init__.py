"""Frame sources: one plugin per camera type."""
