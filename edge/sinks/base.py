"""The sink interface. A sink accepts RedactedFrame and nothing else, checked on every write."""

from __future__ import annotations

from abc import ABC, abstractmethod

from edge.types import RedactedFrame, require_redacted


class Sink(ABC):
    """Lifecycle: start() once, write() per frame from one thread, stop() once (idempotent;
    flushes and closes files). write() raises SinkError when it cannot write; the pipeline
    reports it and keeps the camera running."""

    def start(self) -> None:  # noqa: B027 - optional hook
        """Open resources."""

    def write(self, frame: RedactedFrame) -> None:
        self._write(require_redacted(frame))

    @abstractmethod
    def _write(self, frame: RedactedFrame) -> None: ...

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Flush and close."""
