"""The detector interface every backend implements, and the settings they share."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.types import Detections


class BaseDetectorConfig(BaseModel):
    """Settings common to every detector backend. Each backend subclasses this with
    `type: Literal["name"]` so the registry can build a discriminated union."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Minimum confidence for a box to count as a face."
    )
    nms_iou: float = Field(
        0.4, gt=0.0, le=1.0, description="Boxes overlapping more than this IoU are merged."
    )
    min_face_px: float = Field(
        0.0, ge=0.0, description="Ignore boxes shorter than this (source pixels)."
    )
    max_face_px: float | None = Field(
        None, gt=0.0, description="Ignore boxes taller than this (source pixels); none = no limit."
    )


class Detector(ABC):
    """Finds faces in one BGR uint8 (H, W, 3) image.

    A detector is used from one thread at a time. `detect` returns boxes in the input image's
    pixels and raises DetectorError (never returns a partial result) when inference fails.
    """

    name: str

    @abstractmethod
    def detect(self, image: np.ndarray) -> Detections: ...

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to free
        """Release native resources."""
