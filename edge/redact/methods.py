"""Pixel fills. Each takes a BGR region (a view into the output image) and a boolean mask of
the same height and width, and overwrites the masked pixels in place."""

from __future__ import annotations

import cv2
import numpy as np

# Fresh OS entropy, never seeded: the noise must not be reproducible, or it could be subtracted.
_rng = np.random.default_rng()

NOISE_AMPLITUDE = 48
# The noise is laid over a dark grey for a light face and a light grey for a dark one: the
# patch then differs from the face even where H.264 smooths the noise away, and keeps no colour.
DARK_GREY, LIGHT_GREY = 64, 192


def fill_noise(region: np.ndarray, mask: np.ndarray) -> None:
    """Irreversible: strong per-pixel random noise over a grey chosen to contrast with the
    face.

    The only thing the fill depends on is one bit: whether the middle of the region (the
    face) is lighter or darker than mid-grey. Not its colour (that would keep skin tone, and
    a patch near the face's own colour passes for the face once encoding has smoothed the
    noise), so no deblurring or recognition model has anything to invert.
    """
    mask_u8 = mask.view(np.uint8)
    if not cv2.countNonZero(mask_u8):
        return
    # OpenCV's mean, saturating add and masked copy, and raw random bytes: several times
    # faster than numpy's masked gather/scatter and bounded integers, which matters with
    # dozens of faces per frame in video.
    # Judged on the middle of the region: the face, not the hair, collar or background that a
    # grown mask takes in around it.
    height, width = mask_u8.shape
    middle = (slice(height // 4, height - height // 4), slice(width // 4, width - width // 4))
    if not cv2.countNonZero(mask_u8[middle]):
        middle = (slice(None), slice(None))
    blue, green, red, _ = cv2.mean(region[middle], mask=mask_u8[middle])
    luma = 0.114 * blue + 0.587 * green + 0.299 * red  # ITU-R BT.601
    base = DARK_GREY if luma >= 128 else LIGHT_GREY
    # Random bytes scaled (rounded) to 0 .. 2 * AMPLITUDE, averaging AMPLITUDE to within 0.2,
    # so boxes filled over each other do not drift darker.
    random = np.frombuffer(_rng.bytes(region.size), np.uint8).reshape(region.shape)
    noise = ((random.astype(np.uint16) * (2 * NOISE_AMPLITUDE) + 128) >> 8).astype(np.uint8)
    lowest = base - NOISE_AMPLITUDE
    written = cv2.copyTo(cv2.add(noise, (lowest, lowest, lowest, 0)), mask_u8, region)
    if written.ctypes.data != region.ctypes.data:  # OpenCV reallocated instead of filling
        raise RuntimeError("noise fill did not write into the image")


def fill_solid(region: np.ndarray, mask: np.ndarray) -> None:
    """Irreversible: a flat mid-grey that carries nothing from the face at all."""
    region[mask] = (128, 128, 128)


# Floors that hold at any face size, whatever the config says: a mosaic cell is never smaller
# than this many pixels (64 cells across a 64-pixel face would be the face itself), a blur's
# sigma never smaller than this, and a result that changed the face by less than
# MIN_MEAN_CHANGE grey levels on average is replaced by the solid fill (fails closed).
MIN_PIXELATE_CELL_PX = 4
MIN_BLUR_SIGMA_PX = 2.0
MIN_MEAN_CHANGE = 6.0


def pixelate(region: np.ndarray, mask: np.ndarray, blocks: int = 8) -> None:
    """Weaker: a coarse mosaic. Learned attacks can partly reverse pixelation. At most `blocks`
    cells across the longer side, and never cells under MIN_PIXELATE_CELL_PX."""
    h, w = region.shape[:2]
    before = region.copy()
    cells = max(1, min(blocks, max(h, w) // MIN_PIXELATE_CELL_PX))
    longest = max(h, w)
    across = max(1, min(cells, w * cells // longest))
    down = max(1, min(cells, h * cells // longest))
    small = cv2.resize(region, (across, down), interpolation=cv2.INTER_AREA)
    mosaic = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    region[mask] = mosaic[mask]
    _fail_closed_if_unchanged(region, mask, before)


def blur(region: np.ndarray, mask: np.ndarray, strength: float = 0.5) -> None:
    """Weaker: a strong Gaussian blur. Learned deblurring can partly reverse it. Sigma grows
    with the mask and is never under MIN_BLUR_SIGMA_PX."""
    h, w = region.shape[:2]
    before = region.copy()
    sigma = max(MIN_BLUR_SIGMA_PX, strength * max(h, w) / 3.0)
    blurred = cv2.GaussianBlur(region, (0, 0), sigmaX=sigma, sigmaY=sigma)
    region[mask] = blurred[mask]
    _fail_closed_if_unchanged(region, mask, before)


def _fail_closed_if_unchanged(region: np.ndarray, mask: np.ndarray, before: np.ndarray) -> None:
    """A mosaic or blur of a small or flat region can leave it nearly as it was, yet the
    frame would count as redacted: such a region gets the solid fill instead."""
    if not mask.any():
        return
    change = np.abs(region[mask].astype(np.int16) - before[mask].astype(np.int16)).mean()
    if change < MIN_MEAN_CHANGE:
        fill_solid(region, mask)
