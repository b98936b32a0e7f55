"""Pixel fills. Each takes a BGR region (a view into the output image) and a boolean mask of
the same height and width, and overwrites the masked pixels in place."""

from __future__ import annotations

import cv2
import numpy as np

# Fresh OS entropy, never seeded: the noise must not be reproducible, or it could be subtracted.
_rng = np.random.default_rng()

NOISE_AMPLITUDE = 48


def fill_noise(region: np.ndarray, mask: np.ndarray) -> None:
    """Irreversible: the region's mean colour plus strong per-pixel random noise.

    The only thing kept from the face is three numbers (its mean B, G, R), so no
    deblurring or recognition model has anything to invert. The noise makes the patch
    differ from almost every original pixel, including those close to the mean.
    """
    count = int(mask.sum())
    if count == 0:
        return
    mean = region[mask].reshape(-1, 3).mean(axis=0)
    noise = _rng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, size=(count, 3), dtype=np.int16)
    region[mask] = np.clip(mean.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def fill_solid(region: np.ndarray, mask: np.ndarray) -> None:
    """Irreversible: a flat mid-grey that carries nothing from the face at all."""
    region[mask] = (128, 128, 128)


def pixelate(region: np.ndarray, mask: np.ndarray, blocks: int = 8) -> None:
    """Weaker: a coarse mosaic. Learned attacks can partly reverse pixelation."""
    h, w = region.shape[:2]
    small = cv2.resize(region, (min(blocks, w), min(blocks, h)), interpolation=cv2.INTER_AREA)
    mosaic = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    region[mask] = mosaic[mask]


def blur(region: np.ndarray, mask: np.ndarray, strength: float = 0.5) -> None:
    """Weaker: a strong Gaussian blur. Learned deblurring can partly reverse it."""
    h, w = region.shape[:2]
    sigma = max(1.0, strength * max(h, w) / 3.0)
    blurred = cv2.GaussianBlur(region, (0, 0), sigmaX=sigma, sigmaY=sigma)
    region[mask] = blurred[mask]
