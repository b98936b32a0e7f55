"""Live MJPEG preview of redacted frames for any number of HTTP clients.

Serve `frames()` as `multipart/x-mixed-replace; boundary=<MJPEG_BOUNDARY>`, each JPEG wrapped
by `mjpeg_chunk`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

from edge.sinks.base import Sink
from edge.sinks.snapshot import encode_jpeg
from edge.types import RedactedFrame

MJPEG_BOUNDARY = "edgeblur-frame"
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,./:=?-]{1,70}$")  # RFC 2046 bchars, no space


def mjpeg_chunk(jpeg: bytes, boundary: str = MJPEG_BOUNDARY) -> bytes:
    """One part of a multipart/x-mixed-replace stream holding one JPEG."""
    if not _BOUNDARY.match(boundary):
        raise ValueError(f"invalid multipart boundary {boundary!r}")
    header = (
        f"--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    ).encode("ascii")
    return header + jpeg + b"\r\n"


class PreviewSink(Sink):
    """Shares the newest redacted frame, as JPEG, with every subscribed client.

    The pipeline thread calls write(): while at least one client is subscribed it encodes at
    most `max_fps` frames per second (by `clock`, seconds), once per frame for all clients,
    and never waits for a client. Each client's `frames()` yields only frames newer than the
    last one it took: a slow client skips frames, nothing queues up behind it.
    """

    def __init__(
        self, max_fps: float = 10.0, quality: int = 75, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_fps <= 0:
            raise ValueError(f"max_fps must be > 0, got {max_fps}")
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be 1-100, got {quality}")
        self.max_fps = float(max_fps)
        self.quality = quality
        self._clock = clock
        self._changed = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0  # number of JPEGs published so far; _jpeg is number _seq
        self._subscribers = 0
        self._stopped = False
        self._next_due: float | None = None  # clock time from which the next encode may run
        self.frames_encoded = 0

    @property
    def subscribers(self) -> int:
        with self._changed:
            return self._subscribers

    def start(self) -> None:
        with self._changed:
            self._stopped = False

    def stop(self) -> None:
        """End every client's iteration."""
        with self._changed:
            self._stopped = True
            self._jpeg = None
            self._changed.notify_all()

    def _write(self, frame: RedactedFrame) -> None:
        with self._changed:
            if self._stopped or self._subscribers == 0:
                return
        now = self._clock()
        if self._next_due is not None and now < self._next_due:
            return
        # Advance by whole intervals so jitter in frame arrival does not halve the rate;
        # after a pause, restart from now rather than bursting to catch up.
        interval = 1.0 / self.max_fps
        if self._next_due is None or now - self._next_due >= interval:
            self._next_due = now + interval
        else:
            self._next_due += interval
        jpeg = encode_jpeg(frame.image, self.quality)  # outside the lock: clients keep reading
        with self._changed:
            self._jpeg = jpeg
            self._seq += 1
            self.frames_encoded += 1
            self._changed.notify_all()

    def frames(self, timeout: float) -> Iterator[bytes]:
        """JPEG bytes of each new frame published after iteration starts (the client counts
        as subscribed from its first next() until the iterator is closed). Ends when the sink
        stops or when no new frame arrives within `timeout` seconds (a stalled camera), so an
        HTTP worker thread is never held forever. Runs in the client's (HTTP) thread."""
        with self._changed:
            self._subscribers += 1
            seen = self._seq
        try:
            while True:
                with self._changed:
                    fresh = self._changed.wait_for(partial(self._has_news, seen), timeout)
                    if self._stopped or not fresh or self._jpeg is None:
                        return
                    seen, jpeg = self._seq, self._jpeg
                yield jpeg  # outside the lock: a slow client holds up no one
        finally:
            with self._changed:
                self._subscribers -= 1
                if self._subscribers == 0:
                    self._jpeg = None

    def _has_news(self, seen: int) -> bool:
        """Called with the condition's lock held."""
        return self._stopped or self._seq != seen
