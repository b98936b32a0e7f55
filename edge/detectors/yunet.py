"""YuNet (MIT) on cv2.FaceDetectorYN."""

from __future__ import annotations

from typing import Literal

from edge.detectors.base import BaseDetectorConfig


class YuNetConfig(BaseDetectorConfig):
    type: Literal["yunet"] = "yunet"
