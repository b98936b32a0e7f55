"""CenterFace (MIT) on OpenCV DNN: the default detector."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge.detectors.base import BaseDetectorConfig


class CenterFaceConfig(BaseDetectorConfig):
    type: Literal["centerface"] = "centerface"
    threshold: float = Field(0.2, ge=0.0, le=1.0, description="Minimum face confidence.")
