"""What every backend shares around its network: input scaling, optional tiling, bands that
bound the network's input size, the size-dependent threshold, suppression of duplicate boxes
and the face-size limits.

A backend supplies `infer(image) -> (xyxy, score)` for one network input; `run_passes` calls it
once per scale, tile and band, maps the boxes back to source pixels and merges them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from edge.detectors.base import BaseDetectorConfig
from edge.errors import DetectorError
from edge.types import Detections

# One network run: BGR uint8 (h, w, 3) in, boxes float32 (n, 4) x1 y1 x2 y2 in that image's
# pixels and scores float32 (n,) out. It may drop boxes below config.score_floor.
Infer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

# In every pass but the finest, boxes the network sees shorter than this are dropped: the
# finest pass sees the same face larger and judges it better, while a coarse pass adds only
# false boxes at that size. Coarse passes are there for faces too large for the finest one.
COARSE_PASS_MIN_NET_PX = 32.0

# A pass cut into bands (max_input_pixels) overlaps them by this many times the smallest face
# the next coarser pass keeps: a face either lies whole in one band or is found by that pass,
# which is not cut. The margin keeps faces near that size, where the coarser pass is weakest,
# whole in a band too.
BAND_OVERLAP_FACES = 2.0


def nms(xyxy: np.ndarray, score: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression with no cap on the number kept.

    xyxy: float (n, 4); score: float (n,). Returns int64 indices of the kept boxes, highest
    score first. A box is dropped when its IoU with a higher-scoring kept box exceeds
    `iou_threshold`.
    """
    order = np.argsort(-score, kind="stable")
    x1, y1, x2, y2 = (xyxy[:, i].astype(np.float64) for i in range(4))
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        inter = np.maximum(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0)
        inter *= np.maximum(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0)
        union = area[best] + area[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def _spread(length: int, size: int, count: int) -> list[int]:
    """Starts of `count` windows of `size` pixels spread evenly from 0 to `length` - `size`."""
    if count == 1:
        return [0]
    last = length - size
    return sorted({round(i * last / (count - 1)) for i in range(count)})


def tile_origins(length: int, tiles: int, overlap: float) -> tuple[int, list[int]]:
    """Split `length` pixels into `tiles` windows overlapping by `overlap` of a window.

    Returns (window length, start of each window); the windows cover [0, length) exactly.
    """
    if tiles == 1:
        return length, [0]
    size = min(length, math.ceil(length / (tiles - (tiles - 1) * overlap)))
    return size, _spread(length, size, tiles)


def band_origins(height: int, width: int, max_pixels: int, overlap: int) -> tuple[int, list[int]]:
    """Split `height` rows of a `width`-wide input into horizontal bands of at most
    `max_pixels` pixels (of at most 2 x `overlap` rows where that limit allows fewer), each
    overlapping the next by at least `overlap` rows (overlap >= 1).

    Returns (band height, start row of each band); the bands cover [0, height) exactly.
    """
    rows = max(max_pixels // width, 2 * overlap)
    if rows >= height:
        return height, [0]
    count = math.ceil((height - overlap) / (rows - overlap))
    # count * size >= height + (count - 1) * overlap: evenly spread starts, rounded, are then
    # at most size - overlap apart.
    size = math.ceil((height + (count - 1) * overlap) / count)
    return size, _spread(height, size, count)


def run_passes(
    image: np.ndarray, config: BaseDetectorConfig, infer: Infer, name: str
) -> Detections:
    """Detect faces in a BGR uint8 (H, W, 3) image with every scale and tile of `config`.

    Returns boxes in source pixels after the threshold, suppression and size limits. Any
    failure, including a malformed image, raises DetectorError naming the backend.
    """
    if not (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and image.shape[0] > 0
        and image.shape[1] > 0
    ):
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image)
        raise DetectorError(f"{name}: expected a BGR uint8 (H, W, 3) image, got {got}")
    try:
        return _run_passes(image, config, infer)
    except DetectorError:
        raise
    except Exception as exc:  # cv2.error, mediapipe's RuntimeError, MemoryError, ...
        raise DetectorError(f"{name} inference failed: {type(exc).__name__}: {exc}") from exc


def _run_passes(image: np.ndarray, config: BaseDetectorConfig, infer: Infer) -> Detections:
    height, width = image.shape[:2]
    long_side = max(height, width)
    if config.input_long_side is not None:
        base = config.input_long_side / long_side
    elif config.max_long_side is not None and long_side > config.max_long_side:
        base = config.max_long_side / long_side
    else:
        base = 1.0
    parts: list[Detections] = []
    finest = max(config.scales)
    for scale in config.scales:
        next_coarser = max((other for other in config.scales if other < scale), default=None)
        net_w = max(1, round(width * base * scale))
        net_h = max(1, round(height * base * scale))
        if (net_w, net_h) == (width, height):
            resized = image
        else:
            shrink = net_w < width
            resized = cv2.resize(
                image,
                (net_w, net_h),
                interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
            )
        # Per-axis factors: rounding makes them differ slightly from base * scale.
        to_source = np.array([width / net_w, height / net_h] * 2, np.float32)
        tile_w, xs = tile_origins(net_w, config.tiles, config.tile_overlap)
        tile_h, ys = tile_origins(net_h, config.tiles, config.tile_overlap)
        if next_coarser is not None and config.max_input_pixels is not None:
            smallest_coarse_face = COARSE_PASS_MIN_NET_PX * scale / next_coarser
            band_h, band_ys = band_origins(
                tile_h,
                tile_w,
                config.max_input_pixels,
                math.ceil(BAND_OVERLAP_FACES * smallest_coarse_face),
            )
        else:
            band_h, band_ys = tile_h, [0]
        for y0 in [tile_y + band_y for tile_y in ys for band_y in band_ys]:
            for x0 in xs:
                tile = resized[y0 : y0 + band_h, x0 : x0 + tile_w]
                xyxy, score = infer(np.ascontiguousarray(tile))
                xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
                score = np.asarray(score, np.float32).reshape(-1)
                net_heights = xyxy[:, 3] - xyxy[:, 1]
                keep = score >= config.thresholds_for(net_heights)
                if scale != finest:
                    keep &= net_heights >= COARSE_PASS_MIN_NET_PX
                offset = np.array([x0, y0, x0, y0], np.float32)
                parts.append(Detections((xyxy[keep] + offset) * to_source, score[keep]))
    found = Detections.merge(parts)
    heights = found.heights
    fits = (heights >= config.min_face_px) & (found.widths > 0) & (heights > 0)
    if config.max_face_px is not None:
        fits &= heights <= config.max_face_px
    found = found.select(fits)
    return found.select(nms(found.xyxy, found.score, config.nms_iou))
