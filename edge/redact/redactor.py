"""Turns a raw Frame plus face boxes into a RedactedFrame, the only thing a sink accepts."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.detectors.base import Detector
from edge.redact import methods
from edge.redact.second_look import faces_after_masking
from edge.types import _REDACTION_KEY, Detections, Frame, RedactedFrame, RedactionRecord

Method = Literal["noise", "solid", "pixelate", "blur"]


class RedactionConfig(BaseModel):
    """How faces are masked. The default is irreversible; pixelate and blur are weaker options."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(
        "noise",
        description=(
            "noise: random noise over a contrasting grey (irreversible, default); solid: flat grey "
            "(irreversible); pixelate / blur: weaker, known to be partly reversible by learned "
            "attacks."
        ),
    )
    shape: Literal["box", "ellipse"] = Field("box", description="Shape of each mask.")
    mask_scale: float = Field(
        1.3, ge=1.0, le=4.0, description="Each face box is grown by this factor about its centre."
    )
    mask_lift: float = Field(
        0.1,
        ge=0.0,
        le=0.5,
        description="Extend each mask upwards by a further share of the face's height: a face "
        "looking down shows forehead and hair above a box centred on the detection.",
    )
    second_look_threshold: float | None = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="After masking, the detector searches the masked picture again, and "
        "anything scoring this or more (and at least the detector's own threshold) whose eyes "
        "are not masked is masked too: hair above a face looking down, which `edgeblur verify` "
        "(at 0.5) would report, or a face half out of its mask. Costs one more detector run per "
        "frame with masks; null turns it off.",
    )
    pixelate_blocks: int = Field(8, ge=2, le=64, description="Mosaic cells across a face.")
    blur_strength: float = Field(0.5, gt=0.0, le=2.0, description="Blur sigma per face size.")


def mask_bounds(
    xyxy: np.ndarray, scale: float, width: int, height: int, lift: float = 0.0
) -> list[tuple[int, int, int, int]]:
    """Grow each box by `scale` about its centre, extend its top by a further `lift` x its
    height, and round outwards to whole pixels, clipped to the image as half-open ranges
    [x1, x2) x [y1, y2), so the last row and column are reachable."""
    bounds = []
    for x1, y1, x2, y2 in xyxy.astype(np.float64):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        hw, hh = (x2 - x1) * scale / 2, (y2 - y1) * scale / 2
        bx1 = max(0, math.floor(cx - hw))
        by1 = max(0, math.floor(cy - hh - lift * (y2 - y1)))
        bx2 = min(width, math.ceil(cx + hw))
        by2 = min(height, math.ceil(cy + hh))
        if bx2 > bx1 and by2 > by1:
            bounds.append((bx1, by1, bx2, by2))
    return bounds


def _uncontained(bounds: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """`bounds` without those lying wholly inside another (of two equal ones, one is kept)."""
    if len(bounds) < 2:
        return bounds
    b = np.asarray(bounds)
    inside = (
        (b[:, None, 0] >= b[None, :, 0])
        & (b[:, None, 1] >= b[None, :, 1])
        & (b[:, None, 2] <= b[None, :, 2])
        & (b[:, None, 3] <= b[None, :, 3])
    )  # inside[i, j]: box i lies within box j
    np.fill_diagonal(inside, False)
    # Of identical boxes, only the later one counts as inside the earlier.
    inside &= ~(inside.T & np.tri(len(b), k=-1, dtype=bool).T)
    return [bounds[i] for i in np.flatnonzero(~inside.any(axis=1))]


def _ellipse_mask(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    # Drawn at 4x sub-pixel precision so small masks stay elliptical and touch every edge.
    shift = 2
    unit = 1 << shift
    centre = (round((width - 1) / 2 * unit), round((height - 1) / 2 * unit))
    axes = (round(width / 2 * unit), round(height / 2 * unit))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, thickness=-1, shift=shift)
    return mask.astype(bool)


class Redactor:
    """Masks faces. Stateless apart from its settings; safe to share between threads."""

    def __init__(self, config: RedactionConfig | None = None) -> None:
        self.config = config or RedactionConfig()
        fills: dict[str, Callable[[np.ndarray, np.ndarray], None]] = {
            "noise": methods.fill_noise,
            "solid": methods.fill_solid,
            "pixelate": lambda r, m: methods.pixelate(r, m, self.config.pixelate_blocks),
            "blur": lambda r, m: methods.blur(r, m, self.config.blur_strength),
        }
        self._fill = fills[self.config.method]

    def redact(
        self, frame: Frame, boxes: Detections, look_again: Detector | None = None
    ) -> RedactedFrame:
        """Return a new image with every box masked. With `look_again`, and the config's
        second_look_threshold set, that detector then searches the masked image again, and
        every face it still finds there is masked too (edge.redact.second_look); it raises
        what the detector raises. The raw frame is left untouched."""
        image, bounds = self._masked(frame, boxes)
        threshold = self.config.second_look_threshold
        if look_again is not None and threshold is not None and bounds:
            found = faces_after_masking(look_again, threshold, frame.image, image, bounds)
            if len(found):
                image, bounds = self._masked(frame, Detections.merge([boxes, found]))
        return RedactedFrame(
            _REDACTION_KEY, image, frame.index, frame.timestamp, RedactionRecord(len(bounds), False)
        )

    def _masked(
        self, frame: Frame, boxes: Detections
    ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
        """A copy of the frame's image with every box masked, and the masks' bounds."""
        image = frame.image.copy()
        bounds = mask_bounds(
            boxes.xyxy, self.config.mask_scale, frame.width, frame.height, self.config.mask_lift
        )
        if self.config.shape == "box":
            # Tracking and look-ahead stack several boxes on one face; a rectangle inside
            # another is masked by it already (an ellipse inside another may not be).
            bounds = _uncontained(bounds)
        for x1, y1, x2, y2 in bounds:
            region = image[y1:y2, x1:x2]
            if self.config.shape == "ellipse":
                mask = _ellipse_mask(y2 - y1, x2 - x1)
            else:
                mask = np.ones((y2 - y1, x2 - x1), bool)
            self._fill(region, mask)
        return image, bounds

    def mask_all(self, frame: Frame, reason: str) -> RedactedFrame:
        """Fail closed: a frame we could not check is replaced entirely by flat grey."""
        image = np.full_like(frame.image, 128)
        return RedactedFrame(
            _REDACTION_KEY, image, frame.index, frame.timestamp, RedactionRecord(0, True, reason)
        )
