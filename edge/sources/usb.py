"""USB (V4L2) cameras."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from edge.errors import SourceError
from edge.sources.live import Connection, LiveSource, LiveSourceConfig


class UsbSourceConfig(LiveSourceConfig):
    type: Literal["usb"] = "usb"
    device: str = Field(
        "/dev/video0", pattern=r"^/dev/", description="V4L2 device path, e.g. /dev/video0."
    )
    width: int | None = Field(None, gt=0, le=7680, description="Requested width.")
    height: int | None = Field(None, gt=0, le=4320, description="Requested height.")
    fps: float | None = Field(None, gt=0, le=240, description="Requested frame rate.")


class _UsbConnection(Connection[np.ndarray]):
    def __init__(self, capture: cv2.VideoCapture, label: str) -> None:
        self._capture = capture
        self._label = label
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps > 0 else None

    def payloads(self) -> Iterator[np.ndarray | None]:
        while True:
            ok, image = self._capture.read()
            if not ok or image is None:
                raise SourceError(f"{self._label}: no frame from the device (unplugged?)")
            yield image

    def close(self) -> None:
        self._capture.release()


class UsbSource(LiveSource[np.ndarray]):
    """A V4L2 camera through OpenCV's V4L2 backend (PyAV's wheels lack the v4l2 demuxer).

    The reader thread grabs continuously with a one-buffer driver queue; frames arrive as BGR
    uint8. index counts arrivals; timestamp is time.monotonic() at arrival. A missing device
    is a retryable SourceError (it may be plugged in later); a path that is not a camera or
    lacks permission is not. Unplugging mid-stream is an outage: the source reconnects when
    the device comes back (see LiveSource).
    """

    def __init__(self, config: UsbSourceConfig) -> None:
        super().__init__(config, label=f"camera {config.device}")
        self.config = config

    def _connect(self) -> _UsbConnection:
        device = self.config.device
        try:
            mode = os.stat(device).st_mode
        except FileNotFoundError:
            raise SourceError(
                f"{self.label}: no such device; is the camera plugged in? "
                "(`ls /dev/video*` lists the cameras present)"
            ) from None
        # OpenCV's V4L2 backend opens by index only; /dev/v4l/by-id/... links resolve to one.
        number = re.fullmatch(r"/dev/video(\d+)", os.path.realpath(device))
        if not stat.S_ISCHR(mode) or number is None:
            raise SourceError(
                f"{self.label}: not a V4L2 video device (/dev/videoN)", retryable=False
            )
        if not os.access(device, os.R_OK | os.W_OK):
            raise SourceError(
                f"{self.label}: permission denied; add the service's user to the 'video' group",
                retryable=False,
            )
        milliseconds = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.config.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.config.read_timeout_s * 1000),
        ]
        capture = cv2.VideoCapture(int(number.group(1)), cv2.CAP_V4L2, milliseconds)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{self.label}: cannot open (in use by another program?)")
        # Only the newest frame matters; the driver's default queue of 4 adds latency.
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.config.width:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
        if self.config.height:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
        if self.config.fps:
            capture.set(cv2.CAP_PROP_FPS, self.config.fps)
        return _UsbConnection(capture, self.label)

    def _decode(self, payload: np.ndarray) -> np.ndarray:
        return payload  # OpenCV already delivers BGR
