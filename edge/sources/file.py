"""Video files, played once or looped (for tests, demos and re-processing)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edge.sources.base import BaseSourceConfig


class FileSourceConfig(BaseSourceConfig):
    type: Literal["file"] = "file"
    path: Path = Field(..., description="Video file to read.")
    loop: bool = Field(False, description="Start again at the end instead of stopping.")
    realtime: bool = Field(True, description="Pace frames at the file's own frame rate.")
