"""What counts as a masked face: the rule `edgeblur verify` audits recordings with, and the
second look after masking applies before anything is written (edge.redact.second_look). Here,
at the bottom of the layers, so that redaction need not import the audit tool.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge.types import Detections

# Masked-pixel test on luma in 9x9 windows: the noise fill keeps a standard deviation near 18
# through H.264 (crf 23) and JPEG, with neighbouring pixels uncorrelated (|r| < 0.45); camera
# images rarely have both. The solid fill and fail-closed frames are flat.
MASK_WINDOW_PX = 9
NOISE_MIN_STD = 8.0
NOISE_MAX_CORRELATION = 0.5
FLAT_MAX_STD = 1.0
# Share of masked pixels in a box's upper half at or above which it is a masked face. Measured
# with CenterFace at 0.12 on the 348 WIDER FACE images of the module docstring (JPEG q85):
# boxes on unmasked faces 0.03 or less for 9 in 10, 18 of 4273 at 1/3 or more (dark or grainy
# faces); boxes on faces the service masked 0.68 or more for 9 in 10, 762 of 768 at 1/3 or
# more. Earlier: real faces (walking crowd, astronaut and Grace Hopper up to 3x, H.264 crf
# 23-45) at most 0.15.
MASKED_EYES_SHARE = 1 / 3
# Or: share of masked pixels in the band where the eyes are (rows EYE_ROWS of the box's height;
# CenterFace's own eye landmarks lie there for 9 in 10 of its boxes at 0.5 on WIDER FACE,
# median 0.39). It catches a head looking down, whose box the detector centres on the hair
# above the mask: its upper half is mostly hair, its eyes' band mostly mask. 0.6 of the band
# means the mask reaches from below to 0.37 of the box, above the median eye line.
EYE_ROWS = (0.25, 0.55)
MASKED_EYE_ROWS_SHARE = 0.6

def masked_pixels(image: np.ndarray) -> np.ndarray:
    """bool (H, W): True where a BGR uint8 (H, W, 3) image looks masked (noise or flat fill),
    judged on the luma of the MASK_WINDOW_PX window around each pixel."""
    luma = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    if luma.shape[1] < 2:
        return np.zeros(luma.shape, bool)
    window = (MASK_WINDOW_PX, MASK_WINDOW_PX)
    left, right = luma[:, :-1], luma[:, 1:]  # horizontal neighbours

    def mean(values: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(values, -1, window, borderType=cv2.BORDER_REFLECT)

    mean_l, mean_r = mean(left), mean(right)
    var_l = np.maximum(mean(left * left) - mean_l * mean_l, 0.0)
    var_r = np.maximum(mean(right * right) - mean_r * mean_r, 0.0)
    covariance = mean(left * right) - mean_l * mean_r
    correlation = covariance / np.sqrt(np.maximum(var_l * var_r, 1e-6))
    std = np.sqrt(var_l)
    masked = ((std > NOISE_MIN_STD) & (correlation < NOISE_MAX_CORRELATION)) | (std < FLAT_MAX_STD)
    return np.concatenate([masked, masked[:, -1:]], axis=1)


def split_masked(image: np.ndarray, found: Detections) -> tuple[Detections, Detections]:
    """(visible, masked): a box is masked when its eyes look masked: at least
    MASKED_EYES_SHARE of its upper half, or MASKED_EYE_ROWS_SHARE of its EYE_ROWS band (both
    over the middle 80 % of its width)."""
    if not len(found):
        return found, found
    return split_by_mask(masked_pixels(image), found)


def split_by_mask(
    masked_map: np.ndarray,
    found: Detections,
    eyes_share: float = MASKED_EYES_SHARE,
    eye_rows_share: float = MASKED_EYE_ROWS_SHARE,
) -> tuple[Detections, Detections]:
    """split_masked with the masked pixels given (bool (H, W), True where masked) and, if
    asked, stricter shares."""
    height, width = masked_map.shape

    def share(box: list[float], top: float, bottom: float) -> float:
        x1, y1, x2, y2 = box
        box_w, box_h = x2 - x1, y2 - y1
        left = min(max(math.floor(x1 + 0.1 * box_w), 0), width)
        right = min(max(math.ceil(x2 - 0.1 * box_w), 0), width)
        upper = min(max(math.floor(y1 + top * box_h), 0), height)
        lower = min(max(math.ceil(y1 + bottom * box_h), 0), height)
        if right <= left or lower <= upper:
            return 0.0
        return float(masked_map[upper:lower, left:right].mean())

    is_masked = np.array(
        [
            share(box, 0.0, 0.5) >= eyes_share or share(box, *EYE_ROWS) >= eye_rows_share
            for box in found.xyxy.tolist()
        ],
        bool,
    )
    return found.select(~is_masked), found.select(is_masked)
