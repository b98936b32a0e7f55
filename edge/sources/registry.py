"""Source plugins by `type`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from edge.sources.demo import DemoSourceConfig
from edge.sources.file import FileSourceConfig
from edge.sources.mjpeg import MjpegSourceConfig
from edge.sources.rtsp import RtspSourceConfig
from edge.sources.usb import UsbSourceConfig

SourceConfig = Annotated[
    RtspSourceConfig | UsbSourceConfig | FileSourceConfig | MjpegSourceConfig | DemoSourceConfig,
    Field(discriminator="type"),
]
