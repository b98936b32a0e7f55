"""BlazeFace (Apache-2.0) on mediapipe Tasks: for close-range cameras only."""

from __future__ import annotations

from typing import Literal

from edge.detectors.base import BaseDetectorConfig


class BlazeFaceConfig(BaseDetectorConfig):
    type: Literal["blazeface"] = "blazeface"
