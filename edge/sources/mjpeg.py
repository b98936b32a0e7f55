"""MJPEG over HTTP (multipart/x-mixed-replace), as many cheap IP cameras serve."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge.sources.base import BaseSourceConfig


class MjpegSourceConfig(BaseSourceConfig):
    type: Literal["mjpeg"] = "mjpeg"
    url: str = Field(..., description="http(s) URL of the MJPEG stream; ${VAR} from environment.")
    read_timeout_s: float = Field(5.0, gt=0, le=120, description="Reconnect after this silence.")
    reconnect_min_s: float = Field(0.5, gt=0, le=60, description="First reconnect delay.")
    reconnect_max_s: float = Field(30.0, gt=0, le=600, description="Longest reconnect delay.")
