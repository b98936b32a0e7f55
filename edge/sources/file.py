"""Video files, played once or looped (for tests, demos and re-processing)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import av
from pydantic import Field

from edge.errors import SourceError
from edge.media import upright_bgr
from edge.sources.base import BaseSourceConfig, Source
from edge.types import Frame


class FileSourceConfig(BaseSourceConfig):
    type: Literal["file"] = "file"
    path: Path = Field(..., description="Video file to read.")
    loop: bool = Field(False, description="Start again at the end instead of stopping.")
    realtime: bool = Field(True, description="Pace frames at the file's own frame rate.")


class FileSource(Source):
    """Decodes a video file's first video stream in the caller's thread (no reader thread:
    nothing is live, so nothing needs dropping; `dropped` stays 0).

    Frames are BGR uint8. index counts frames over all loops. timestamp is the frame's time in
    the file (seconds, from its pts) plus the length of the loops before it, so it keeps
    increasing when looping. With realtime=True read() waits until each frame is due on the
    monotonic clock; a consumer that falls behind is not made to catch up in a burst (the
    schedule restarts from the late frame).

    A missing, corrupt or truncated file raises SourceError naming the file, retryable=False;
    frames decoded before the damage have already been delivered.
    """

    def __init__(self, config: FileSourceConfig) -> None:
        self.config = config
        self.path = config.path
        self._container: av.container.InputContainer | None = None
        self._frames: Iterator[av.VideoFrame] | None = None
        self._index = 0
        self._loop_offset_s = 0.0  # length of the completed loops
        self._last_time_s = 0.0  # time of the last frame within the current loop
        self._frame_s = 0.0  # one frame's duration, from the stream's rate
        self._schedule: tuple[float, float] | None = None  # (monotonic, media time) anchor
        self._loop_frames = 0  # frames decoded in the current pass
        self._declared_frames = 0  # as the container declares them; 0 when unknown

    def open(self) -> None:
        if not self.path.is_file():
            reason = "is not a file" if self.path.exists() else "no such file"
            raise SourceError(f"{self.path}: {reason}", retryable=False)
        self._start_pass()

    def _start_pass(self) -> None:
        self._close_container()
        try:
            container = av.open(str(self.path))
        except av.FFmpegError as error:
            raise SourceError(
                f"{self.path}: not a readable video ({error.strerror})", retryable=False
            ) from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.path}: the file has no video stream", retryable=False)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        self.fps_hint = float(rate) if rate else None
        self._frame_s = 1.0 / self.fps_hint if self.fps_hint else 0.0
        self._declared_frames = int(stream.frames or 0)
        self._container = container
        self._frames = container.decode(stream)
        self._loop_frames = 0

    def read(self) -> Frame | None:
        if self._frames is None:
            raise SourceError(
                f"{self.path}: read() before open() or after close()", retryable=False
            )
        decoded = self._next_decoded()
        if decoded is None and self.config.loop:
            if self._loop_frames == 0:
                raise SourceError(f"{self.path}: no frame could be decoded", retryable=False)
            self._loop_offset_s += self._last_time_s + self._frame_s
            self._start_pass()
            decoded = self._next_decoded()
        if decoded is None:
            return None
        media_s = (
            float(decoded.time) if decoded.time is not None else self._loop_frames * self._frame_s
        )
        self._last_time_s = media_s
        self._loop_frames += 1
        timestamp = self._loop_offset_s + media_s
        if self.config.realtime:
            self._wait_until_due(timestamp)
        frame = Frame(upright_bgr(decoded), self._index, timestamp)
        self._index += 1
        return frame

    def _next_decoded(self) -> av.VideoFrame | None:
        assert self._frames is not None
        try:
            return next(self._frames)
        except StopIteration:
            if self._loop_frames < self._declared_frames:
                raise SourceError(
                    f"{self.path}: ends after {self._loop_frames} of its "
                    f"{self._declared_frames} frames; the file is truncated",
                    retryable=False,
                ) from None
            return None
        except av.FFmpegError as error:
            raise SourceError(
                f"{self.path}: cannot decode frame {self._loop_frames} ({error.strerror}); "
                "the file is corrupt or truncated",
                retryable=False,
            ) from None

    def _wait_until_due(self, media_s: float) -> None:
        now = time.monotonic()
        if self._schedule is None:
            self._schedule = (now, media_s)
            return
        due = self._schedule[0] + (media_s - self._schedule[1])
        if due > now:
            time.sleep(due - now)
        elif now - due > self._frame_s:
            self._schedule = (now, media_s)  # late: restart the schedule, no burst

    def _close_container(self) -> None:
        container, self._container = self._container, None
        self._frames = None
        if container is not None:
            container.close()

    def close(self) -> None:
        self._close_container()
