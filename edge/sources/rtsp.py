"""RTSP cameras through PyAV/FFmpeg over TCP."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge.sources.base import BaseSourceConfig


class RtspSourceConfig(BaseSourceConfig):
    type: Literal["rtsp"] = "rtsp"
    url: str = Field(
        ...,
        description="rtsp://user:pass@host/path. ${VAR} placeholders are read from the "
        "environment when the camera connects, so credentials need not live in the file.",
    )
    open_timeout_s: float = Field(10.0, gt=0, le=120, description="Connect timeout.")
    read_timeout_s: float = Field(5.0, gt=0, le=120, description="A stream silent this long is reconnected.")
    reconnect_min_s: float = Field(0.5, gt=0, le=60, description="First reconnect delay.")
    reconnect_max_s: float = Field(30.0, gt=0, le=600, description="Longest reconnect delay (backoff cap).")
