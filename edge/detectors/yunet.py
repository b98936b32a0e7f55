"""YuNet (MIT) on cv2.FaceDetectorYN, with a dynamic input size.

Optional: its model ships in no PyPI wheel, so `edgeblur models fetch yunet` needs GitHub, or
`model_path` may point at a copy of yunet_n_dynamic.onnx (verified against the pinned SHA-256).
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
    small_face_threshold_field,
    threshold_field,
)
from edge.detectors.multiscale import run_passes
from edge.errors import DetectorError
from edge.types import Detections

if TYPE_CHECKING:
    from edge.models import ModelStore

# FaceDetectorYN keeps only its top_k candidates before NMS; this is far above any crowd a
# frame can hold, so no face is dropped for being one too many.
_TOP_K = 1_000_000


class YuNetConfig(BaseDetectorConfig):
    type: Literal["yunet"] = Field(
        "yunet", description="YuNet (MIT, cv2.FaceDetectorYN); its model is only on GitHub."
    )
    # Measured with bench/recall.py on WIDER FACE validation images: see docs/benchmarks.md.
    threshold: float = threshold_field(0.4)
    small_face_threshold: float | None = small_face_threshold_field(0.2)
    model_path: Path | None = Field(
        None,
        description="A local copy of yunet_n_dynamic.onnx to use instead of the model cache "
        "(its SHA-256 is checked on every start).",
    )


class YuNetDetector(Detector):
    """YuNet on cv2.FaceDetectorYN. Not thread-safe: one thread at a time."""

    name = "yunet"

    def __init__(self, config: YuNetConfig, model_path: Path) -> None:
        self.config = config
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(model_path), "", (320, 320), config.score_floor, config.nms_iou, _TOP_K
            )
        except cv2.error as exc:
            raise DetectorError(f"yunet: cannot load {model_path}: {exc}") from exc
        self._input_size = (320, 320)

    @classmethod
    def create(cls, config: YuNetConfig, store: ModelStore) -> YuNetDetector:
        if config.model_path is not None:
            fix = (
                "point detector.model_path at yunet_n_dynamic.onnx from "
                "github.com/ShiqiYu/libfacedetection.train (commit 0047ac2), or remove "
                "model_path and run `edgeblur models fetch yunet`"
            )
            return cls(config, store.verify_file("yunet", config.model_path, fix=fix))
        return cls(config, store.path("yunet"))

    def detect(self, image: np.ndarray) -> Detections:
        return run_passes(image, self.config, self._infer, self.name)

    def _infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = (image.shape[1], image.shape[0])
        if size != self._input_size:
            self._net.setInputSize(size)
            self._input_size = size
        _, faces = self._net.detect(image)
        if faces is None:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        # Rows: x, y, w, h, five landmarks (x, y), score.
        x, y, w, h = faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 3]
        return np.stack([x, y, x + w, y + h], axis=1), faces[:, 14]
