"""A second look after masking: the detector searches around each mask of the redacted image,
and whatever still scores as a face there is masked too.

Masks change what a detector sees. In our crowd recordings CenterFace scored the hair of a
head looking down, above the mask on its face, at up to 0.6: the audit (`edgeblur verify`)
then reported a face where none was visible. A face half out of its mask (a tracked mask a
step behind a fast walker) looks the same to the audit and is a real leak. Looking again
near the masks, at a score below the audit's, masks both before anything is written.
"""

from __future__ import annotations

import numpy as np

from edge.detectors.base import Detector
from edge.types import Detections

Bounds = tuple[int, int, int, int]  # x1, y1, x2, y2, half-open, in image pixels

# How far around a mask (in its own widths and heights) the detector looks again: the hair
# above a head looking down reaches about half a mask height over it; the detector needs a
# little context around a face to score it as on the whole image.
AROUND_SIDES = 0.5
AROUND_ABOVE = 1.0
AROUND_BELOW = 0.5


def faces_near_masks(
    detector: Detector, threshold: float, raw: np.ndarray, redacted: np.ndarray,
    masks: list[Bounds],
) -> Detections:
    """Faces that `detector` finds scoring at least `threshold` in `redacted` near `masks`,
    whose eyes are not masked (edge.verify's rule), in image pixels. `raw` is the image
    before masking: a pixel is masked where the two differ."""
    from edge.verify import split_by_mask  # verify is the audit whose rule this applies

    found = []
    for x1, y1, x2, y2 in _merged(_around(masks, redacted.shape[1], redacted.shape[0])):
        crop = np.ascontiguousarray(redacted[y1:y2, x1:x2])
        detections = detector.detect(crop)
        detections = detections.select(detections.score >= threshold)
        visible, _ = split_by_mask(np.any(crop != raw[y1:y2, x1:x2], axis=2), detections)
        found.append(Detections(visible.xyxy + np.float32([x1, y1, x1, y1]), visible.score))
    return Detections.merge(found)


def _around(masks: list[Bounds], width: int, height: int) -> list[Bounds]:
    regions = []
    for x1, y1, x2, y2 in masks:
        w, h = x2 - x1, y2 - y1
        regions.append((
            max(0, int(x1 - AROUND_SIDES * w)),
            max(0, int(y1 - AROUND_ABOVE * h)),
            min(width, int(x2 + AROUND_SIDES * w)),
            min(height, int(y2 + AROUND_BELOW * h)),
        ))
    return regions


def _merged(regions: list[Bounds]) -> list[Bounds]:
    """Overlapping regions joined into their bounding rectangles, until none overlap: a face
    on the seam of two regions is searched whole, and a crowd's pixels once."""
    merged = list(regions)
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a, b = merged[i], merged[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    merged[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]),
                                 max(a[3], b[3]))
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return merged
