"""Motion privacy mode: mask every moving region, with no face model at all.

For overhead cameras or crowds where faces are too small to detect, every moving blob is
masked. Background subtraction (MOG2) runs on a downscaled copy of each frame; the boxes are
mapped back to source pixels, rounded outwards.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.types import Detections


class MotionConfig(BaseModel):
    """Motion privacy mode: mask every moving region, no model needed."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "only", "extra"] = Field(
        "off",
        description="off; only: motion masks replace face detection (overhead cameras, tiny "
        "faces); extra: motion masks are added to face masks.",
    )
    min_area_px: int = Field(
        64, ge=1, description="Ignore moving blobs smaller than this many pixels."
    )
    history: int = Field(200, ge=10, le=5000, description="Background model length in frames.")


# Isolated noise pixels are opened away (blobs under ~3 work pixels across, i.e. 3 x the
# downscale factor in source pixels: far too small to identify anyone). Moving parts of one
# person (head, arms) are then dilated into one blob, which also pads every box outwards.
_OPEN_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
_DILATE_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))


class MotionMasker:
    """Boxes around moving regions of a BGR uint8 (H, W, 3) image stream, in source pixels.

    Stateful (a background model learnt over `config.history` frames); not thread-safe: one
    instance belongs to one camera's pipeline thread. Until the model has seen a frame, and
    whenever the frame size changes, the whole frame counts as moving, so the first frame is
    masked entirely rather than passed unmasked.
    """

    def __init__(self, config: MotionConfig, work_width: int = 320) -> None:
        """work_width: frames wider than this many pixels are downscaled to it for speed."""
        if work_width < 16:
            raise ValueError(f"work_width must be at least 16 pixels, got {work_width}")
        self.config = config
        self.work_width = work_width
        self._subtractor: cv2.BackgroundSubtractorMOG2 | None = None
        self._shape: tuple[int, ...] = ()

    def boxes(self, image: np.ndarray) -> Detections:
        """Bounding boxes (xyxy float32, source pixels, score 1.0) of the moving regions whose
        box covers at least `min_area_px` source pixels. image: uint8 (H, W, 3) BGR, one
        camera's frames in order."""
        height, width = image.shape[:2]
        if self._subtractor is None or image.shape != self._shape:
            # history is the model's memory in frames; shadows would be marked grey and are
            # moving people too, so shadow detection is off and every change is foreground.
            self._subtractor = cv2.createBackgroundSubtractorMOG2(
                history=self.config.history, detectShadows=False
            )
            self._shape = image.shape
        if width > self.work_width:
            work_height = max(1, round(height * self.work_width / width))
            small = cv2.resize(image, (self.work_width, work_height), interpolation=cv2.INTER_AREA)
        else:
            small = image
        foreground = self._subtractor.apply(small)
        mask: np.ndarray = (foreground > 127).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _OPEN_KERNEL)
        mask = cv2.dilate(mask, _DILATE_KERNEL)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        sx = width / small.shape[1]
        sy = height / small.shape[0]
        boxes = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            box = (
                max(0, math.floor(x * sx)),
                max(0, math.floor(y * sy)),
                min(width, math.ceil((x + w) * sx)),
                min(height, math.ceil((y + h) * sy)),
            )
            if (box[2] - box[0]) * (box[3] - box[1]) >= self.config.min_area_px:
                boxes.append(box)
        if not boxes:
            return Detections.empty()
        # Sorted so the output is deterministic whatever order findContours returns.
        xyxy = np.array(sorted(boxes), np.float32)
        return Detections(xyxy, np.ones(len(xyxy), np.float32))
