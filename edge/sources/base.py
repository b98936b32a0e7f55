"""The source interface: each plugin yields raw Frames, newest first, never queued unbounded."""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from types import TracebackType

from pydantic import BaseModel, ConfigDict

from edge.errors import SourceError
from edge.types import Frame
from edge.urls import mask_credentials


class BaseSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(ABC):
    """A camera or file. Its public methods are called from one thread (the camera's ingest
    thread); live sources run a reader thread of their own behind them (see `LiveSource`).

    `open()` connects and raises SourceError if it cannot (retryable=False when only a config
    change can help: a missing file, an unset ${VAR}, a refused password).
    `read()` blocks until the next frame and returns it as a Frame (BGR uint8 (H, W, 3));
    returns None at the end of a finite source; raises SourceError on failure, retryable=True
    where calling read() again may succeed (a camera that is reconnecting).
    `close()` is idempotent and also ends a source that failed to open.

    Counters, read from any thread: `dropped` counts frames the source discarded to stay live
    (newest-frame-only policy), `reconnects` counts connections re-established after a loss.
    `fps_hint` is the nominal frame rate when the source knows it (after open()), else None.
    """

    dropped: int = 0
    reconnects: int = 0
    fps_hint: float | None = None

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self) -> Frame | None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def mask_url(url: str) -> str:
    """rtsp://user:secret@host/x -> rtsp://***@host/x (edge.urls.mask_credentials)."""
    return mask_credentials(url)


_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(template: str) -> str:
    """Replace each ${VAR} in `template` with the environment variable's value.

    Called when a source connects (not when config is parsed), so secrets stay out of config
    files and a rotated password is picked up on the next connection. An unset variable is a
    SourceError (retryable=False) naming the variable; messages only ever show the template,
    masked, never a value.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = os.environ.get(name)
        if found is None:
            raise SourceError(
                f"{mask_url(template)}: environment variable {name} is not set "
                f"(set it in the service's environment, e.g. `export {name}=...`)",
                retryable=False,
            )
        return found

    return _PLACEHOLDER.sub(value, template)
