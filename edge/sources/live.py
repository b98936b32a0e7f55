"""What every camera source shares: a reader thread that owns the connection, reconnects with
backoff, and hands the consumer only the newest frame through a one-slot mailbox."""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import numpy as np
from pydantic import Field, model_validator

from edge.errors import SourceError
from edge.sources.base import BaseSourceConfig, Source
from edge.types import Frame

log = logging.getLogger(__name__)

Payload = TypeVar("Payload")
LiveState = Literal["idle", "streaming", "reconnecting", "failed", "closed"]


class LiveSourceConfig(BaseSourceConfig):
    """Timeouts and reconnection shared by every camera type (see `LiveSource`)."""

    open_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Give up connecting after this many seconds."
    )
    read_timeout_s: float = Field(
        5.0,
        gt=0,
        le=120,
        description="A camera that delivers no frame for this many seconds is reconnected. "
        "Keep it above the camera's keyframe interval.",
    )
    reconnect_min_s: float = Field(
        0.5, gt=0, le=60, description="Delay before the first reconnect attempt."
    )
    reconnect_max_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Longest delay between attempts (the delay doubles after each failure).",
    )

    @model_validator(mode="after")
    def _backoff_range(self) -> LiveSourceConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s:g}) must be at least "
                f"reconnect_min_s ({self.reconnect_min_s:g})"
            )
        return self


class Connection(Generic[Payload]):
    """One connection to a camera, created and used only by the reader thread.

    `payloads()` yields each frame's undecoded payload (an av.VideoFrame, JPEG bytes, an
    image) as it arrives, or None as a heartbeat when data arrived without completing a frame
    (so the watchdog can run); it returns at the end of the stream and raises SourceError
    when the connection fails. `close()` releases it and is called exactly once.
    """

    fps: float | None = None

    @abstractmethod
    def payloads(self) -> Iterator[Payload | None]: ...

    def stream_time(self, payload: Payload) -> float | None:
        """When the camera says it captured this frame, in seconds on its own clock (RTP
        timestamps), or None when the stream does not say."""
        return None

    @abstractmethod
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Arrival(Generic[Payload]):
    payload: Payload
    index: int  # arrival order over the source's life, across reconnects
    timestamp: float  # capture time on time.monotonic()'s clock (CaptureClock)


# Beyond this much lag behind its least delayed frame, a camera's own clock is no longer
# trusted (it jumped, or drifts): its frame times are re-anchored to the arrival time.
MAX_CAPTURE_LAG_S = 1.0


class CaptureClock:
    """Frame timestamps from the camera's own frame times, on time.monotonic()'s clock.

    A frame's arrival time carries the jitter of the network and of a busy box (frames decoded
    in bursts while the detector has the CPU); the masks between two searches are laid out
    in time and the tracker measures speed in it, so a walker would be masked where it would
    be a burst earlier. The camera's frame times are exact, but on its own clock: each is
    mapped onto ours by the offset of the least delayed frame so far (arrival minus camera
    time), re-anchored when a frame lags that by more than MAX_CAPTURE_LAG_S. Without camera
    times the arrival time is used. One clock per connection."""

    def __init__(self) -> None:
        self._offset: float | None = None

    def timestamp(self, stream_time: float | None, arrival: float) -> float:
        if stream_time is None:
            return arrival
        offset = arrival - stream_time
        if self._offset is None or offset < self._offset or (
            offset - self._offset > MAX_CAPTURE_LAG_S
        ):
            self._offset = offset
        return stream_time + self._offset


class NewestFrameSlot(Generic[Payload]):
    """A one-slot mailbox: the producer overwrites, the consumer takes. Never holds more than
    one frame, so a slow consumer costs dropped frames, not memory or latency.

    `put` is called by the reader thread, `take` by the consumer.
    A posted outage (`post_outage`) makes the next `take` that finds no frame raise it, so the
    consumer learns of a lost connection at once instead of after a read timeout.
    """

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._item: _Arrival[Payload] | None = None
        self._outage: SourceError | None = None
        self._closed = False

    def put(self, item: _Arrival[Payload]) -> bool:
        """Store `item`; True when it overwrote a frame nobody took (a dropped frame)."""
        with self._ready:
            overwrote = self._item is not None
            self._item = item
            self._outage = None
            self._ready.notify_all()
            return overwrote

    def post_outage(self, error: SourceError) -> None:
        with self._ready:
            self._outage = error
            self._ready.notify_all()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._item = None
            self._ready.notify_all()

    def take(self, timeout_s: float) -> _Arrival[Payload] | None:
        """The newest frame not taken yet; None after `timeout_s` without one or once closed.
        Raises a posted outage (once) when no frame is waiting."""
        with self._ready:
            self._ready.wait_for(
                lambda: self._item is not None or self._outage is not None or self._closed,
                timeout_s,
            )
            item, self._item = self._item, None
            if item is None and self._outage is not None:
                outage, self._outage = self._outage, None
                raise outage
            return item


class LiveSource(Source, Generic[Payload]):
    """Base for cameras (RTSP, USB, MJPEG): reconnection lives inside the source.

    Threads: `open()` makes the first connection in the caller's thread, so a wrong address
    or password is reported there, then starts a daemon reader thread (`source-<label>`) that
    owns every Connection from then on. It reads continuously and puts each payload in a
    `NewestFrameSlot`; the consumer's `read()` takes the newest one and decodes it (`_decode`
    runs in the consumer thread, so frames that are overwritten are never converted).

    Reconnection: when the connection ends, fails, or delivers no frame for `read_timeout_s`
    (the stall watchdog), the reader closes it and reconnects after `reconnect_min_s`,
    doubling the delay per failed attempt up to `reconnect_max_s`; the delay resets once
    frames flow again. Meanwhile `read()` raises SourceError(retryable=True): at once when
    the connection is lost, then once per `read_timeout_s` while it stays down. The caller
    keeps calling `read()`; frames return by themselves after recovery and `reconnects` goes
    up by one per re-established connection. A non-retryable error during reconnection (a
    refused password) stops the reader: `state` becomes "failed" and `read()` raises that
    error with retryable=False from then on.

    `state` and `last_error` (credential-free text) are for status reports.
    """

    def __init__(self, config: LiveSourceConfig, label: str) -> None:
        self.label = label  # shown in messages and thread names; must hold no credentials
        self.open_timeout_s = config.open_timeout_s
        self.read_timeout_s = config.read_timeout_s
        self.reconnect_min_s = config.reconnect_min_s
        self.reconnect_max_s = config.reconnect_max_s
        self.dropped = 0  # written by the reader thread only
        self.reconnects = 0
        self.state: LiveState = "idle"
        self.last_error = ""
        self._slot: NewestFrameSlot[Payload] = NewestFrameSlot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fatal: SourceError | None = None
        self._arrivals = 0
        self._failed_attempts = 0

    # --- hooks for each camera type -----------------------------------------------------

    @abstractmethod
    def _connect(self) -> Connection[Payload]:
        """Open a new connection. Raises SourceError with a credential-free message."""

    @abstractmethod
    def _decode(self, payload: Payload) -> np.ndarray:
        """Payload -> BGR uint8 (H, W, 3), in the consumer thread. Raises SourceError."""

    # --- Source ---------------------------------------------------------------------------

    def open(self) -> None:
        """Connect (in the caller's thread) and start the reader. May be called again after
        it raised; a closed source stays closed (build a new one to start again)."""
        if self._thread is not None or self._stop.is_set():
            raise SourceError(f"{self.label}: already open or closed", retryable=False)
        connection = self._connect()
        self.fps_hint = connection.fps
        self.state = "streaming"
        self._thread = threading.Thread(
            target=self._run, args=(connection,), name=f"source-{self.label}", daemon=True
        )
        self._thread.start()

    def read(self) -> Frame | None:
        if self._fatal is not None:
            raise self._fatal
        if self._thread is None:
            raise SourceError(
                f"{self.label}: read() before open() or after close()", retryable=False
            )
        arrival = self._slot.take(self.read_timeout_s)
        if arrival is not None:
            return Frame(self._decode(arrival.payload), arrival.index, arrival.timestamp)
        if self._fatal is not None:
            raise self._fatal
        if self._stop.is_set():
            raise SourceError(f"{self.label}: closed", retryable=False)
        raise SourceError(
            f"{self.label}: no frame for {self.read_timeout_s:g} s ({self.state}"
            + (f": {self.last_error})" if self.last_error else ")"),
            retryable=True,
        )

    def close(self) -> None:
        self._stop.set()
        self._slot.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            # Bounded: every blocking call in the reader has one of these timeouts.
            thread.join(max(self.open_timeout_s, self.read_timeout_s) + 1.0)
            if thread.is_alive():
                # Blocked in a native call with its own timeout; it closes its connection as
                # soon as that call returns. Nothing the consumer holds depends on it.
                log.warning("%s: reader thread still busy after close; it will exit itself",
                            self.label)
        if self.state != "failed":
            self.state = "closed"

    # --- reader thread --------------------------------------------------------------------

    def _run(self, connection: Connection[Payload] | None) -> None:
        try:
            while not self._stop.is_set():
                if connection is None:
                    connection = self._reconnect()
                    if connection is None:
                        return
                try:
                    self._pump(connection)
                    reason = "stream ended"
                except SourceError as error:
                    reason = str(error)
                finally:
                    _close(connection, self.label)
                    connection = None
                if self._stop.is_set():
                    return
                self.state = "reconnecting"
                self.last_error = reason
                log.warning("%s: connection lost (%s); reconnecting", self.label, reason)
                self._slot.post_outage(
                    SourceError(f"{self.label}: connection lost ({reason}); reconnecting")
                )
        except Exception as error:  # a bug, not an outage: report it instead of dying silently
            log.exception("%s: reader thread crashed", self.label)
            self._fail(SourceError(f"{self.label}: reader crashed: {error!r}", retryable=False))
        finally:
            if connection is not None:
                _close(connection, self.label)

    def _reconnect(self) -> Connection[Payload] | None:
        """Retry with exponential backoff until connected (returns it), stopped or failed
        for good (returns None)."""
        while True:
            delay = min(self.reconnect_max_s, self.reconnect_min_s * 2**self._failed_attempts)
            if self._stop.wait(delay):
                return None
            try:
                connection = self._connect()
            except SourceError as error:
                self.last_error = str(error)
                if not error.retryable:
                    self._fail(error)
                    return None
                self._failed_attempts += 1
                log.info("%s: reconnect attempt %d failed: %s", self.label,
                         self._failed_attempts, error)
                continue
            if self._stop.is_set():
                _close(connection, self.label)
                return None
            self.reconnects += 1
            self.state = "streaming"
            log.info("%s: reconnected", self.label)
            return connection

    def _pump(self, connection: Connection[Payload]) -> None:
        """Move payloads into the slot until the stream ends, fails, stalls or we stop."""
        last_frame = time.monotonic()
        clock = CaptureClock()
        for payload in connection.payloads():
            now = time.monotonic()
            if self._stop.is_set():
                return
            if payload is None:
                if now - last_frame > self.read_timeout_s:
                    raise SourceError(
                        f"{self.label}: stalled, no frame for {self.read_timeout_s:g} s"
                    )
                continue
            last_frame = now
            self._failed_attempts = 0
            timestamp = clock.timestamp(connection.stream_time(payload), now)
            if self._slot.put(_Arrival(payload, self._arrivals, timestamp)):
                self.dropped += 1
            self._arrivals += 1

    def _fail(self, error: SourceError) -> None:
        error.retryable = False
        self._fatal = error
        self.last_error = str(error)
        self.state = "failed"
        log.error("%s: giving up: %s", self.label, error)
        self._slot.post_outage(error)


def _close(connection: Connection[Any], label: str) -> None:
    """Close a connection that is being given up anyway: a failure to close it cleanly (a
    socket already reset) is logged, and must not stop the reader from reconnecting."""
    try:
        connection.close()
    except Exception:
        log.warning("%s: closing the old connection failed", label, exc_info=True)
