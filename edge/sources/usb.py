"""USB (V4L2) cameras."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge.sources.base import BaseSourceConfig


class UsbSourceConfig(BaseSourceConfig):
    type: Literal["usb"] = "usb"
    device: str = Field("/dev/video0", description="V4L2 device path.")
    width: int | None = Field(None, gt=0, le=7680, description="Requested width.")
    height: int | None = Field(None, gt=0, le=4320, description="Requested height.")
    fps: float | None = Field(None, gt=0, le=240, description="Requested frame rate.")
