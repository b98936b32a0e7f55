"""The embedded demo camera: real face photos from installed packages over a moving background,
so the whole pipeline can be seen working on a machine with no camera."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge.sources.base import BaseSourceConfig


class DemoSourceConfig(BaseSourceConfig):
    type: Literal["demo"] = "demo"
    width: int = Field(1280, ge=160, le=3840, description="Frame width.")
    height: int = Field(720, ge=120, le=2160, description="Frame height.")
    fps: float = Field(15.0, gt=0, le=60, description="Frame rate.")
