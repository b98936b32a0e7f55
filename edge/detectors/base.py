"""The detector interface every backend implements, and the settings they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.types import Detections

# Face heights (in the pixels the network is given) between which the confidence threshold
# moves, on a log scale, from `small_face_threshold` to `threshold`.
SMALL_FACE_NET_PX = 16.0
LARGE_FACE_NET_PX = 64.0
# Bands narrower than this (e.g. 256 x 256) would be mostly overlap.
MIN_INPUT_PIXELS = 65_536


def threshold_field(default: float) -> Any:
    """`threshold`, for backends to give their own default (same bounds and meaning)."""
    return Field(
        default,
        ge=0.0,
        le=1.0,
        description="Minimum confidence for a box to count as a face (for faces the network "
        f"sees at least {LARGE_FACE_NET_PX:.0f} px tall; see small_face_threshold).",
    )


def small_face_threshold_field(default: float | None) -> Any:
    """`small_face_threshold`, for backends to give their own default."""
    return Field(
        default,
        ge=0.0,
        le=1.0,
        description=f"Minimum confidence for faces the network sees at most "
        f"{SMALL_FACE_NET_PX:.0f} px tall; between that and {LARGE_FACE_NET_PX:.0f} px the "
        "threshold moves on a log scale to `threshold`. Small faces score lower, and a false "
        "box there masks few pixels. None = `threshold` for every size.",
    )


def nms_iou_field(default: float) -> Any:
    """`nms_iou`, for backends to give their own default."""
    return Field(
        default, gt=0.0, le=1.0, description="Boxes overlapping more than this IoU are merged."
    )


def scales_field(default: list[float], advice: str) -> Any:
    """`scales`, for backends to give their own default and advice."""
    return Field(
        default_factory=lambda: list(default),
        min_length=1,
        max_length=6,
        description="Run the network once per entry, at this multiple of the input size, and "
        "merge the boxes. Passes other than the largest keep only faces they see at least "
        f"32 px tall. Each pass costs about scale^2 times a pass at 1. {advice}",
    )


class BaseDetectorConfig(BaseModel):
    """Settings common to every detector backend. Each backend subclasses this with
    `type: Literal["name"]` so the registry can build a discriminated union, and may give
    other defaults through the *_field helpers above."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = threshold_field(0.5)
    small_face_threshold: float | None = small_face_threshold_field(None)
    nms_iou: float = nms_iou_field(0.4)
    min_face_px: float = Field(
        0.0, ge=0.0, description="Ignore boxes shorter than this (source pixels)."
    )
    max_face_px: float | None = Field(
        None, gt=0.0, description="Ignore boxes taller than this (source pixels); none = no limit."
    )
    input_long_side: int | None = Field(
        None,
        ge=32,
        le=8192,
        description="Resize each image so its long side is this many pixels before inference "
        "(larger values upscale). Smaller is faster but loses small faces; none = native size.",
    )
    max_long_side: int | None = Field(
        None,
        ge=32,
        le=8192,
        description="Scale images whose long side is longer down to this many pixels before "
        "inference, never up (input_long_side, when set, applies instead). Each camera sets "
        "it from its detect_long_side; none = native size.",
    )
    scales: list[float] = scales_field(
        [1.0, 0.5],
        "0.5 finds faces too large for the network at full size (close-ups); values above 1 "
        "find tiny faces.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Threads one detector run may use (onnxruntime backends); none = every CPU "
        "the process may use. Fewer leave cores to decoding and encoding on a busy box.",
    )
    tiles: int = Field(
        1,
        ge=1,
        le=8,
        description="Split each pass into tiles x tiles overlapping tiles (for networks with a "
        "small fixed input, e.g. BlazeFace, so small faces keep enough pixels). 1 = whole image.",
    )
    tile_overlap: float = Field(
        0.25,
        ge=0.0,
        le=0.5,
        description="Overlap of neighbouring tiles, as a fraction of the tile size; a face "
        "smaller than the overlap lies wholly inside at least one tile.",
    )
    max_input_pixels: int | None = Field(
        None,
        ge=MIN_INPUT_PIXELS,
        description="Largest network input, in pixels. A larger pass is cut into horizontal "
        "bands overlapping by twice the smallest face the next coarser pass in `scales` "
        "keeps, so each face lies whole in a band or is large enough for that pass; the "
        "coarsest pass is never cut. Bounds the detector's working memory, which grows with "
        "its input, but each band sees less around its faces, which moves scores near the "
        "threshold (docs/hardware.md, Memory). None = whole passes.",
    )

    @field_validator("scales")
    @classmethod
    def _scales_in_range(cls, scales: list[float]) -> list[float]:
        for scale in scales:
            if not 0.05 <= scale <= 4.0:
                raise ValueError(f"each scale must be between 0.05 and 4, got {scale}")
        if len(set(scales)) != len(scales):
            raise ValueError(f"scales are repeated: {scales}")
        return scales

    @model_validator(mode="after")
    def _sizes_ordered(self) -> BaseDetectorConfig:
        if self.max_face_px is not None and self.max_face_px <= self.min_face_px:
            raise ValueError(
                f"max_face_px ({self.max_face_px}) must be larger than min_face_px "
                f"({self.min_face_px})"
            )
        return self

    @property
    def score_floor(self) -> float:
        """The lowest confidence any box can be kept at; backends may drop boxes below it."""
        if self.small_face_threshold is None:
            return self.threshold
        return min(self.threshold, self.small_face_threshold)

    def thresholds_for(self, net_heights: np.ndarray) -> np.ndarray:
        """Confidence threshold per box, from its height in the pixels the network was given.

        net_heights: float (n,). Returns float32 (n,).
        """
        if self.small_face_threshold is None:
            return np.full(len(net_heights), self.threshold, np.float32)
        position = np.log(np.maximum(net_heights, 1e-3) / SMALL_FACE_NET_PX) / np.log(
            LARGE_FACE_NET_PX / SMALL_FACE_NET_PX
        )
        position = np.clip(position, 0.0, 1.0)
        small, large = self.small_face_threshold, self.threshold
        return (small + (large - small) * position).astype(np.float32)


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
