"""BlazeFace (Apache-2.0) on mediapipe Tasks: for close-range cameras only.

The network squeezes its whole input into 192x192 (full range) or 128x128 (short range), so a
face needs a good share of the image to be found: use `tiles` for wider views. mediapipe is an
optional dependency (`pip install edgeblur[blazeface]`), imported only when this backend is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from edge.detectors.base import BaseDetectorConfig, Detector, scales_field
from edge.detectors.multiscale import run_passes
from edge.errors import DetectorError
from edge.types import Detections

if TYPE_CHECKING:
    from edge.models import ModelStore


class BlazeFaceConfig(BaseDetectorConfig):
    type: Literal["blazeface"] = Field(
        "blazeface", description="BlazeFace (Apache-2.0, mediapipe): close-range cameras."
    )
    range: Literal["full", "short"] = Field(
        "full",
        description="full: faces up to about 5 m from the camera (full-range sparse model); "
        "short: faces within about 2 m (smaller, faster).",
    )
    scales: list[float] = scales_field(
        [1.0],
        "BlazeFace squeezes any input to 128 or 192 px square, so use tiles, not scales, for "
        "small faces.",
    )


class BlazeFaceDetector(Detector):
    """BlazeFace on a mediapipe Tasks FaceDetector (IMAGE mode). One thread at a time."""

    name = "blazeface"

    def __init__(self, config: BlazeFaceConfig, model_path: Path) -> None:
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as exc:
            raise DetectorError(
                "the blazeface detector needs mediapipe, which is not installed: "
                "run `pip install edgeblur[blazeface]` or choose detector type centerface"
            ) from exc
        self.config = config
        self._mp = mp
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=config.score_floor,
            min_suppression_threshold=config.nms_iou,
        )
        try:
            self._detector: Any = vision.FaceDetector.create_from_options(options)
        except (RuntimeError, ValueError) as exc:
            raise DetectorError(f"blazeface: cannot load {model_path}: {exc}") from exc

    @classmethod
    def create(cls, config: BlazeFaceConfig, store: ModelStore) -> BlazeFaceDetector:
        return cls(config, store.path(f"blazeface-{config.range}"))

    def detect(self, image: np.ndarray) -> Detections:
        return run_passes(image, self.config, self._infer, self.name)

    def _infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        result = self._detector.detect(
            self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        )
        boxes, scores = [], []
        for detection in result.detections:
            box = detection.bounding_box  # pixels of `image`: origin_x, origin_y, width, height
            boxes.append(
                [box.origin_x, box.origin_y, box.origin_x + box.width, box.origin_y + box.height]
            )
            scores.append(max((c.score for c in detection.categories), default=0.0))
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32)

    def close(self) -> None:
        self._detector.close()
