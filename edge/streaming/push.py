"""Push: publish a camera's anonymised stream to an operator's RTSP server (MediaMTX, go2rtc,
Wowza) with ANNOUNCE/RECORD over TCP, through FFmpeg's RTSP muxer (PyAV). The packets are the
camera's one encode (edge.sinks.fanout); nothing is encoded again here.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable

from edge.errors import MediaError
from edge.media import EncodedPacket, H264PacketMuxer
from edge.urls import mask_credentials

log = logging.getLogger(__name__)

# Push targets take their secrets from the same variables as camera URLs, and only in the
# user:password part, so a URL can never send a secret to a host of its own choosing.
SECRET_ENV_PREFIX = "EDGEBLUR_CAM_"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URL = re.compile(r"^(?P<head>rtsps?://)(?:(?P<userinfo>[^/?#]*)@)?(?P<rest>[^@]*)$", re.I)


def check_push_url(url: str) -> str:
    """Refuse a push URL that is not rtsp(s)://, or whose ${VAR} placeholders stand anywhere
    but in the user:password part or name a variable outside EDGEBLUR_CAM_*. Returns url."""
    match = _URL.match(url)
    if match is None:
        raise ValueError(
            "must be rtsp://[user:password@]host[:port]/path (or rtsps://), with no '@' after "
            "the host"
        )
    if "${" in match["head"] + match["rest"]:
        raise ValueError("${VAR} placeholders may only stand in the user:password part")
    for name in _PLACEHOLDER.findall(match["userinfo"] or ""):
        if not name.startswith(SECRET_ENV_PREFIX):
            raise ValueError(
                f"${{{name}}}: secrets are read only from variables named {SECRET_ENV_PREFIX}*"
            )
    return url


def expand_push_url(template: str) -> str:
    """The URL with each ${VAR} of its user:password part read from the environment (at each
    connection, so a rotated password is picked up). MediaError naming an unset variable."""

    def value(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in os.environ:
            raise MediaError(f"push: environment variable {name} is not set")
        return os.environ[name].replace("@", "%40").replace("/", "%2F")

    check_push_url(template)
    head, _, rest = template.partition("://")
    if "@" not in rest:
        return template
    userinfo, _, host = rest.rpartition("@")
    return f"{head}://{_PLACEHOLDER.sub(value, userinfo)}@{host}"


def mask_url(url: str) -> str:
    """A URL, or a message quoting one, with the credentials masked."""
    return mask_credentials(url)


def check_answers(url: str, timeout_s: float, label: str) -> None:
    """Raise MediaError unless the RTSP server at `url` answers an OPTIONS request within
    timeout_s. FFmpeg's announce waits for its replies holding Python's lock, which stops
    every camera of the service meanwhile: a server that accepts connections but has stopped
    answering (hung) is found here first, without that lock. rtsps: the TCP connect only."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme.lower() == "rtsps"
    host, port = parts.hostname or "", parts.port or (322 if secure else 554)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            if secure:
                return
            netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            request = f"OPTIONS rtsp://{netloc}{parts.path or '/'} RTSP/1.0\r\nCSeq: 1\r\n\r\n"
            connection.sendall(request.encode())
            if not connection.recv(1):
                raise MediaError(f"{label}: the server closed the connection unanswered")
    except OSError as error:
        raise MediaError(f"{label}: no answer from the server: {error}") from None


class _GuardedMuxer:
    """A connection, opened and written on a thread of its own so that a write stuck on a
    target that stopped reading with its connection open can be given up on.

    FFmpeg's RTSP muxer writes with no time limit, and its socket timeout (set on the muxer)
    does not cover writes: such a target keeps a write waiting until TCP gives up, about 15
    minutes for a host that vanished and never for a process that froze. After `timeout_s`
    the connection is abandoned: its thread is left to finish or fail that write, then closes
    the muxer and ends; nothing else touches the muxer again. (The announce when opening
    holds Python's lock, so no thread could give up on it: check_answers before it and the
    muxer's socket timeout cover that.)
    """

    def __init__(
        self, open_muxer: Callable[[], H264PacketMuxer], timeout_s: float, label: str
    ) -> None:
        """Opens the connection; raises MediaError when that fails or takes over timeout_s."""
        self.timeout_s = timeout_s
        self.label = label
        self.packets_written = 0
        self._requests: queue.Queue[EncodedPacket | None] = queue.Queue(maxsize=1)
        self._results: queue.Queue[MediaError | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(
            target=self._run, args=(open_muxer,), name="push-writer", daemon=True
        )
        self._thread.start()
        self._wait("did not answer", 2 * timeout_s)  # the TCP connect, then the announce

    def write(self, packet: EncodedPacket) -> None:
        """Raises MediaError when the write failed or took over timeout_s (then this
        connection is done: close() it)."""
        self._requests.put(packet)
        self._wait("stopped reading", timeout_s=self.timeout_s)
        self.packets_written += 1

    def _wait(self, what: str, timeout_s: float) -> None:
        try:
            error = self._results.get(timeout=timeout_s)
        except queue.Empty:
            self.close()
            raise MediaError(
                f"{self.label}: the server {what} for {timeout_s:g} s; connection given up"
            ) from None
        if error is not None:
            raise error

    def close(self) -> None:
        """Close the muxer on its thread, once its write in progress (if any) is over.
        Never blocks."""
        try:
            self._requests.put_nowait(None)
        except queue.Full:
            pass  # a close is queued already

    def _run(self, open_muxer: Callable[[], H264PacketMuxer]) -> None:
        try:
            self._muxer = open_muxer()  # after check_answers: see there
        except MediaError as error:
            self._results.put_nowait(error)
            return
        self._results.put_nowait(None)
        while (packet := self._requests.get()) is not None:
            try:
                self._muxer.write(packet)
                result: MediaError | None = None
            except MediaError as error:
                result = error
            try:
                self._results.put_nowait(result)
            except queue.Full:
                break  # write() gave up on a result before: the connection is abandoned
        try:
            self._muxer.close()
        except MediaError as error:
            log.info("push %s: closing: %s", self.label, error)


class RtspPushConsumer:
    """Publishes packets to `url` (a template: ${VAR} in its userinfo). A PacketConsumer for
    edge.sinks.fanout.PacketOutput, so it runs on its own thread behind its own queue.

    A connection opens at a keyframe. When it cannot be opened or a write fails (the server
    went away), the packets are dropped (counted) until the back-off has passed, then it
    reconnects at the next keyframe; the back-off doubles from `min_backoff_s` to
    `max_backoff_s` and starts again after a connection that worked.

    state: "idle" | "connected" | "waiting" (for the back-off) | "stopped"; `last_error` says
    why it is not connected, credentials masked.
    """

    def __init__(
        self,
        url: str,
        transport: str = "tcp",
        timeout_s: float = 5.0,
        min_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = check_push_url(url)
        self.transport = transport
        self.timeout_s = timeout_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self._clock = clock
        self.state = "idle"
        self.last_error = ""
        self.connects = 0
        self.failures = 0
        self.packets_dropped = 0  # while disconnected or waiting for a keyframe
        self._muxer: _GuardedMuxer | None = None
        self._backoff_s = min_backoff_s
        self._retry_at = 0.0

    @property
    def label(self) -> str:
        return mask_url(self.url)

    def open(self) -> None:
        self.state = "idle"

    def consume(self, packet: EncodedPacket) -> None:
        if self._muxer is None and not self._connect(packet):
            self.packets_dropped += 1
            return
        assert self._muxer is not None
        try:
            self._muxer.write(packet)
        except MediaError as error:
            self._lost(error)
            self.packets_dropped += 1
            return
        if self._muxer.packets_written >= 2:
            self._backoff_s = self.min_backoff_s  # it works: the next fault retries soon

    def close(self) -> None:
        muxer, self._muxer = self._muxer, None
        self.state = "stopped"
        if muxer is not None:
            muxer.close()

    def _connect(self, packet: EncodedPacket) -> bool:
        if not packet.keyframe or self._clock() < self._retry_at:
            return False
        url = expand_push_url(self.url)
        try:
            check_answers(url, self.timeout_s, self.label)
            self._muxer = _GuardedMuxer(
                lambda: H264PacketMuxer(
                    url,
                    packet,
                    format="rtsp",
                    # Socket reads time out (µs): the announce, done holding Python's
                    # lock, would otherwise wait forever on a server that stopped answering,
                    # and every camera of the service with it.
                    options={
                        "rtsp_transport": self.transport,
                        "timeout": str(int(self.timeout_s * 1_000_000)),
                    },
                    timeout_s=self.timeout_s,
                    label=self.label,
                ),
                self.timeout_s,
                self.label,
            )
        except MediaError as error:
            self._lost(error)
            return False
        self.connects += 1
        self.state = "connected"
        self.last_error = ""
        log.info("push %s: connected", self.label)
        return True

    def _lost(self, error: MediaError) -> None:
        muxer, self._muxer = self._muxer, None
        if muxer is not None:
            muxer.close()  # on its thread, once its stuck write (if any) is over
        self.failures += 1
        self.state = "waiting"
        self.last_error = mask_url(str(error))
        self._retry_at = self._clock() + self._backoff_s
        log.warning("push %s: %s; retrying in %g s", self.label, self.last_error, self._backoff_s)
        self._backoff_s = min(self._backoff_s * 2, self.max_backoff_s)
