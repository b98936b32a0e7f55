"""Source plugins by `type`: the config union pydantic validates, and the factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from edge.sources.base import Source
from edge.sources.demo import DemoSource, DemoSourceConfig
from edge.sources.file import FileSource, FileSourceConfig
from edge.sources.mjpeg import MjpegSource, MjpegSourceConfig
from edge.sources.rtsp import RtspSource, RtspSourceConfig
from edge.sources.usb import UsbSource, UsbSourceConfig

SourceConfig = Annotated[
    RtspSourceConfig | UsbSourceConfig | FileSourceConfig | MjpegSourceConfig | DemoSourceConfig,
    Field(discriminator="type"),
]

_SOURCES: dict[type, Callable[[Any], Source]] = {
    RtspSourceConfig: RtspSource,
    UsbSourceConfig: UsbSource,
    FileSourceConfig: FileSource,
    MjpegSourceConfig: MjpegSource,
    DemoSourceConfig: DemoSource,
}


def build_source(config: SourceConfig) -> Source:
    """A new, unopened source for `config`. Nothing connects until `open()`."""
    try:
        factory = _SOURCES[type(config)]
    except KeyError:
        raise TypeError(f"no source plugin for {type(config).__name__}") from None
    return factory(config)
