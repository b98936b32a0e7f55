"""RTSP cameras through PyAV/FFmpeg over TCP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Literal

import av
import numpy as np
from pydantic import Field, field_validator

from edge.errors import SourceError
from edge.media import upright_bgr
from edge.sources.base import check_url_template, expand_env, mask_url
from edge.sources.live import Connection, LiveSource, LiveSourceConfig


class RtspSourceConfig(LiveSourceConfig):
    type: Literal["rtsp"] = "rtsp"
    url: str = Field(
        ...,
        description="rtsp://user:pass@host/path. ${EDGEBLUR_CAM_*} placeholders in user:pass "
        "(only there) are read from the environment when the camera connects, so "
        "credentials need not live in the file.",
    )

    @field_validator("url")
    @classmethod
    def _secrets_stay_with_their_host(cls, url: str) -> str:
        return check_url_template(url, ("rtsp", "rtsps"))


# A password that is refused will be refused again; retrying could lock the account.
_REFUSED = (av.HTTPUnauthorizedError, av.HTTPForbiddenError)


def _describe(error: av.FFmpegError, timeout_s: float) -> str:
    """FFmpeg's reason without the URL it carries (which may hold a password)."""
    if isinstance(error, av.ExitError):  # PyAV's timeout interrupted FFmpeg
        return f"no answer within {timeout_s:g} s"
    if isinstance(error, _REFUSED):
        return f"{error.strerror} (check the user and password)"
    return str(error.strerror or type(error).__name__)


class _RtspConnection(Connection[av.VideoFrame]):
    def __init__(self, container: av.container.InputContainer, label: str, timeout_s: float):
        self._container = container
        self._stream = container.streams.video[0]
        self._label = label
        self._timeout_s = timeout_s
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else None

    def payloads(self) -> Iterator[av.VideoFrame | None]:
        try:
            for packet in self._container.demux(self._stream):
                try:
                    frames = packet.decode()
                except av.InvalidDataError:
                    frames = []  # one damaged packet; the decoder recovers at the next keyframe
                if frames:
                    yield from frames
                else:
                    yield None
        except av.FFmpegError as error:
            raise SourceError(f"{self._label}: {_describe(error, self._timeout_s)}") from None

    def stream_time(self, payload: av.VideoFrame) -> float | None:
        return payload.time

    def close(self) -> None:
        self._container.close()


class RtspSource(LiveSource[av.VideoFrame]):
    """An RTSP camera, H.264/H.265/MJPEG as FFmpeg decodes them, over RTSP-over-TCP (no UDP
    loss). Credentials in the URL come from ${VAR} placeholders expanded at each connection
    and never appear in messages or logs. The PyAV timeouts (open_timeout_s while connecting,
    read_timeout_s per packet) interrupt FFmpeg's blocking reads, so a silent camera cannot
    hang the reader; a frozen connection is given up within about 2 x read_timeout_s (FFmpeg
    may hand over one partial packet at the first interrupt). Frames are BGR uint8; index
    counts arrivals; timestamp is the camera's frame time (pts) on time.monotonic()'s clock
    (CaptureClock, anchored afresh at each reconnect).
    Reconnection and newest-frame-only: see LiveSource.
    """

    def __init__(self, config: RtspSourceConfig) -> None:
        super().__init__(config, label=f"camera {mask_url(config.url)}")
        self.config = config

    def _connect(self) -> _RtspConnection:
        url = expand_env(self.config.url)
        started = time.monotonic()
        try:
            container = av.open(
                url,
                options={"rtsp_transport": "tcp"},
                timeout=(self.config.open_timeout_s, self.config.read_timeout_s),
            )
        except av.FFmpegError as error:
            # An interrupted handshake surfaces as whatever FFmpeg was parsing at the time.
            if time.monotonic() - started >= self.config.open_timeout_s:
                reason = f"no answer within {self.config.open_timeout_s:g} s"
            else:
                reason = _describe(error, self.config.open_timeout_s)
            raise SourceError(
                f"{self.label}: cannot connect: {reason}",
                retryable=not isinstance(error, _REFUSED),
            ) from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.label}: the stream has no video", retryable=False)
        return _RtspConnection(container, self.label, self.config.read_timeout_s)

    def _decode(self, payload: av.VideoFrame) -> np.ndarray:
        return upright_bgr(payload)
