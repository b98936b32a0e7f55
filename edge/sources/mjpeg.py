"""MJPEG over HTTP (multipart/x-mixed-replace), as many cheap IP cameras serve."""

from __future__ import annotations

import base64
import http.client
import socket
import time
from collections.abc import Iterator
from typing import Literal
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np
from pydantic import Field, field_validator

from edge.errors import SourceError
from edge.sources.base import check_url_template, expand_env, mask_url
from edge.sources.live import Connection, LiveSource, LiveSourceConfig

# Statuses that another attempt will not change; anything else (503 while a camera boots) is
# retried. 404 included: unlike RTSP relays, an MJPEG camera's path is fixed.
_PERMANENT_STATUS = {401: "check the user and password", 403: "access denied", 404: "wrong path"}
_MAX_HEADER_LINE = 8192
_READ_CHUNK = 64 * 1024


class MjpegSourceConfig(LiveSourceConfig):
    type: Literal["mjpeg"] = "mjpeg"
    url: str = Field(
        ...,
        description="http(s)://[user:pass@]host/path of the MJPEG stream; ${EDGEBLUR_CAM_*} "
        "placeholders in user:pass (only there) are read from the environment when the "
        "camera connects.",
    )
    max_frame_bytes: int = Field(
        16 * 1024**2,
        ge=1024,
        le=256 * 1024**2,
        description="A JPEG part larger than this is refused (guards memory against a broken "
        "or hostile stream).",
    )

    @field_validator("url")
    @classmethod
    def _secrets_stay_with_their_host(cls, url: str) -> str:
        return check_url_template(url, ("http", "https"))


class _MjpegConnection(Connection[bytes]):
    """One HTTP response body, split into its JPEG parts (undecoded)."""

    def __init__(self, http: http.client.HTTPConnection, response: http.client.HTTPResponse,
                 boundary: bytes, label: str, max_bytes: int, frame_timeout_s: float) -> None:
        self._http = http
        self._response = response
        self._token = boundary
        self._label = label
        self._max_bytes = max_bytes
        # The socket timeout only sees silence; a sender trickling bytes without ever
        # finishing a frame is caught by this deadline on whole frames.
        self._frame_timeout_s = frame_timeout_s
        self._frame_deadline = time.monotonic() + frame_timeout_s

    def payloads(self) -> Iterator[bytes | None]:
        try:
            yield from self._parts()
        except (OSError, http.client.HTTPException) as error:
            reason = "no data in time" if isinstance(error, socket.timeout) else str(error)
            raise SourceError(f"{self._label}: {reason}") from None

    def _parts(self) -> Iterator[bytes | None]:
        line = self._line()
        while line:
            if not self._is_boundary(line):
                line = self._line()  # preamble or padding between parts
                continue
            if line.rstrip().endswith(self._token + b"--"):
                return  # the server closed the multipart body
            length = None
            while (line := self._line()).strip():  # part headers up to the blank line
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = self._content_length(value)
            if length is not None:
                body = self._read(length)
                if len(body) < length:
                    raise SourceError(f"{self._label}: stream ended inside a frame")
                self._frame_arrived()
                yield body
                line = self._line()
            else:  # no Content-Length: the part runs up to the next boundary line
                chunks: list[bytes] = []
                size = 0
                while (line := self._line()) and not self._is_boundary(line):
                    chunks.append(line)
                    size += len(line)
                    if size > self._max_bytes:
                        raise SourceError(f"{self._label}: a part exceeds max_frame_bytes "
                                          f"({self._max_bytes})")
                if not line:
                    return  # ended inside a part: drop it, it may be incomplete
                self._frame_arrived()
                yield b"".join(chunks).removesuffix(b"\n").removesuffix(b"\r")

    def _is_boundary(self, line: bytes) -> bool:
        # "--" + boundary per RFC 2046; cameras vary in how many dashes they put before it.
        return line.startswith(b"--") and line.lstrip(b"-").startswith(self._token)

    def _content_length(self, value: str) -> int:
        """A part's declared length: digits only (int() would take "-1", "+5" or "1_0"), and
        within max_frame_bytes. A bad one is a retryable error: the connection is dropped
        and made again, as for any damaged stream."""
        text = value.strip()
        if not text.isascii() or not text.isdigit():
            raise SourceError(f"{self._label}: invalid Content-Length {text[:20]!r}")
        length = int(text)
        if length > self._max_bytes:
            raise SourceError(f"{self._label}: a {length}-byte part exceeds "
                              f"max_frame_bytes ({self._max_bytes})")
        return length

    def _read(self, length: int) -> bytes:
        """`length` bytes (fewer at the end of the stream), checking the frame deadline
        between chunks."""
        chunks: list[bytes] = []
        left = length
        while left > 0:
            if time.monotonic() > self._frame_deadline:
                raise SourceError(f"{self._label}: no whole frame in {self._frame_timeout_s:g} s")
            chunk = self._response.read(min(left, _READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _frame_arrived(self) -> None:
        self._frame_deadline = time.monotonic() + self._frame_timeout_s

    def _line(self) -> bytes:
        if time.monotonic() > self._frame_deadline:
            raise SourceError(f"{self._label}: no whole frame in {self._frame_timeout_s:g} s")
        return self._response.readline(self._max_bytes + 2)

    def close(self) -> None:
        self._response.close()
        self._http.close()


class MjpegSource(LiveSource[bytes]):
    """An HTTP MJPEG camera. The reader thread splits the multipart body into JPEG parts; only
    the newest part is decoded (cv2.imdecode, in the consumer thread) into BGR uint8.
    user:pass in the URL (after ${VAR} expansion) is sent as HTTP Basic auth and never shown.
    The socket's read timeout is the stall watchdog. Frames: index counts arrivals, timestamp
    is time.monotonic() at arrival. A part that is not a decodable JPEG makes read() raise a
    retryable SourceError; the next read() continues with the next part. Reconnection and
    newest-frame-only: see LiveSource. Redirects are not followed.
    """

    def __init__(self, config: MjpegSourceConfig) -> None:
        super().__init__(config, label=f"camera {mask_url(config.url)}")
        self.config = config

    def _connect(self) -> _MjpegConnection:
        parts = urlsplit(expand_env(self.config.url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceError(f"{self.label}: not an http(s) URL", retryable=False)
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(
            parts.hostname, parts.port, timeout=self.config.open_timeout_s
        )
        headers = {"Accept": "multipart/x-mixed-replace, image/jpeg"}
        if parts.username is not None:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            reason = (
                f"no answer within {self.config.open_timeout_s:g} s"
                if isinstance(error, socket.timeout) else str(error)
            )
            raise SourceError(f"{self.label}: cannot connect: {reason}") from None
        content_type = response.getheader("Content-Type", "")
        boundary = _boundary(content_type)
        if response.status != 200 or boundary is None:
            connection.close()
            if response.status != 200:
                hint = _PERMANENT_STATUS.get(response.status)
                raise SourceError(
                    f"{self.label}: HTTP {response.status} {response.reason}"
                    + (f" ({hint})" if hint else ""),
                    retryable=hint is None,
                )
            raise SourceError(
                f"{self.label}: not an MJPEG stream (Content-Type {content_type!r})",
                retryable=False,
            )
        if connection.sock is not None:
            connection.sock.settimeout(self.config.read_timeout_s)
        return _MjpegConnection(
            connection, response, boundary, self.label, self.config.max_frame_bytes,
            self.config.read_timeout_s,
        )

    def _decode(self, payload: bytes) -> np.ndarray:
        image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"{self.label}: a {len(payload)}-byte part is not a valid JPEG")
        return image


def _boundary(content_type: str) -> bytes | None:
    """The boundary of a multipart/x-mixed-replace Content-Type without its leading dashes
    (cameras disagree on them; lines are matched the same way), or None for another type."""
    kind, _, parameters = content_type.partition(";")
    if kind.strip().lower() != "multipart/x-mixed-replace":
        return None
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').lstrip("-").encode("latin-1")
    return None
