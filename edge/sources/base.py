"""The source interface: each plugin yields raw Frames, newest first, never queued unbounded."""

from __future__ import annotations

from abc import ABC, abstractmethod

from pydantic import BaseModel, ConfigDict

from edge.types import Frame


class BaseSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(ABC):
    """A camera or file. Used from one thread (the camera's ingest thread).

    `open()` connects (raises SourceError); `read()` blocks until the next frame and returns it,
    raises SourceError on failure (retryable=True where reconnecting may help) and returns None
    at the end of a finite source. `close()` is idempotent. `dropped` counts frames the source
    discarded to stay live (newest-frame-only policy).
    """

    dropped: int = 0

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self) -> Frame | None: ...

    @abstractmethod
    def close(self) -> None: ...
