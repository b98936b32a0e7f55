"""The embedded demo camera: real face photos from installed packages over a moving background,
so the whole pipeline can be seen working on a machine with no camera."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from edge.errors import SourceError
from edge.sources.base import BaseSourceConfig, Source
from edge.types import Frame


class DemoSourceConfig(BaseSourceConfig):
    type: Literal["demo"] = "demo"
    width: int = Field(1280, ge=160, le=3840, description="Frame width.")
    height: int = Field(720, ge=120, le=2160, description="Frame height.")
    fps: float = Field(15.0, gt=0, le=60, description="Frame rate.")
    realtime: bool = Field(
        True,
        description="Pace frames at `fps` like a camera (a late reader skips frames, counted "
        "as dropped); false delivers them as fast as they are read (tests, benchmarks).",
    )


@dataclass(frozen=True)
class _Portrait:
    """A head-and-shoulders crop around one frontal face in a bundled photo."""

    photo: Literal["astronaut", "grace_hopper"]
    crop: tuple[int, int, int, int]  # x1, y1, x2, y2 in the photo
    face_height_px: int  # height of the face inside `crop`, in photo pixels


# Face boxes measured once with YuNet: astronaut (178, 65)-(269, 176), Grace Hopper
# (177, 123)-(355, 335). Crops keep about one face-width of context each side, which face
# detectors need to see a head rather than a skin-coloured patch. Next to a mask, two things in
# the photos read as faces to `edgeblur verify` (0.5-0.64: false alarms of the audit, not faces)
# and failed most half-minute demo recordings: Grace Hopper's cap badge, so her crop starts
# below it, and the folds of the astronaut's suit collar, so hers ends above most of them (4-7
# findings of 0.3 or more there per recording before, none in 4 after).
_PORTRAITS = {
    "astronaut": _Portrait("astronaut", (133, 10, 315, 205), 111),
    "grace_hopper": _Portrait("grace_hopper", (88, 90, 444, 441), 212),
}


@dataclass(frozen=True)
class _Actor:
    portrait: str
    mirrored: bool
    face_height: float  # face height as a fraction of the frame height
    period_s: float  # one lap of its path
    phase: float  # radians


# Four faces of different sizes (about 79-216 px tall at 720p), each in its own column so
# they never hide one another; mirroring makes the two photos into four distinct views. Grace
# Hopper is the largest: with the astronaut largest, `edgeblur verify` scored her hair beside
# the mask up to 0.51 and Grace Hopper's neck between two masks up to 0.55 (1 of 6 live
# recordings of 22 s failed, and a 40 s offline run); swapped, 6 of 6 and the offline run
# were clean, the highest finding 0.42.
_ACTORS = (
    _Actor("grace_hopper", False, 0.30, 13.0, 0.0),
    _Actor("astronaut", False, 0.21, 11.0, 1.7),
    _Actor("grace_hopper", True, 0.15, 9.0, 3.1),
    _Actor("astronaut", True, 0.11, 7.0, 4.4),
)
_GAP = 0.02  # space between columns, as a fraction of the frame width


def _load_photo(name: str) -> np.ndarray:
    """A bundled photo as BGR uint8. scikit-image and matplotlib ship them, so the demo needs
    no download and no file of ours."""
    try:
        if name == "astronaut":
            from skimage import data

            return np.ascontiguousarray(data.astronaut()[:, :, ::-1])
        from matplotlib import cbook

        image = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    except ImportError as error:
        raise SourceError(
            f"demo camera: needs scikit-image and matplotlib for its photos ({error}); "
            "install them with `pip install edgeblur[demo]`",
            retryable=False,
        ) from None
    if image is None:
        raise SourceError("demo camera: matplotlib's grace_hopper.jpg is unreadable",
                          retryable=False)
    return image


class DemoSource(Source):
    """Synthetic camera: frame i is a pure function of i (scrolling colour gradient, moving
    shapes, four real frontal faces on Lissajous paths), so runs are reproducible.

    Frames are BGR uint8 (height, width, 3). timestamp = open time (time.monotonic()) + i/fps.
    With realtime=True read() sleeps until frame i is due; a reader that is late gets the
    newest due frame and the skipped ones count as `dropped`, as with a live camera.
    Faces scale with the frame height; below about 480 rows the smallest get too small for
    most detectors.
    """

    def __init__(self, config: DemoSourceConfig) -> None:
        self.config = config
        self.fps_hint = config.fps
        self.dropped = 0
        self._next = 0
        self._started: float | None = None
        self._patches: list[np.ndarray] = []
        self._columns: list[tuple[int, int]] = []  # (left x, width available) per actor
        self._background: np.ndarray | None = None

    def open(self) -> None:
        width, height = self.config.width, self.config.height
        photos = {name: _load_photo(name) for name in _PORTRAITS}
        patches = []
        for actor in _ACTORS:
            portrait = _PORTRAITS[actor.portrait]
            x1, y1, x2, y2 = portrait.crop
            crop = photos[actor.portrait][y1:y2, x1:x2]
            if actor.mirrored:
                crop = crop[:, ::-1]
            scale = actor.face_height * height / portrait.face_height_px
            patches.append((crop, scale))
        # Shrink everything if the columns do not fit side by side (narrow frames).
        total = sum(crop.shape[1] * scale for crop, scale in patches) + _GAP * width * 5
        fit = min(1.0, width / total)
        self._patches = [
            cv2.resize(
                np.ascontiguousarray(crop),
                (max(1, round(crop.shape[1] * scale * fit)),
                 max(1, round(crop.shape[0] * scale * fit))),
                interpolation=cv2.INTER_AREA,
            )
            for crop, scale in patches
        ]
        slack = (width - sum(p.shape[1] for p in self._patches)) / len(self._patches)
        left = 0.0
        self._columns = []
        for patch in self._patches:
            self._columns.append((round(left), max(0, round(slack))))
            left += patch.shape[1] + slack
        self._background = self._make_background(width, height)
        self._next = 0
        self._started = time.monotonic()

    @staticmethod
    def _make_background(width: int, height: int) -> np.ndarray:
        """Twice the frame width of a horizontally periodic colour gradient, to scroll over."""
        x = np.arange(2 * width, dtype=np.float32)
        y = np.arange(height, dtype=np.float32)[:, None]
        hue = (x / width * 180.0) % 180.0
        hsv = np.empty((height, 2 * width, 3), np.uint8)
        hsv[:, :, 0] = hue.astype(np.uint8)
        hsv[:, :, 1] = 90
        hsv[:, :, 2] = (110 + 90 * y / max(1, height - 1)).astype(np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    def render(self, index: int) -> np.ndarray:
        """Frame `index` as BGR uint8 (height, width, 3); depends on nothing but the index."""
        if self._background is None:
            raise SourceError("demo camera: render() before open()", retryable=False)
        width, height = self.config.width, self.config.height
        t = index / self.config.fps
        shift = int(t * width / 20.0) % width  # the gradient scrolls one width per 20 s
        image = self._background[:, shift : shift + width].copy()
        for k in range(5):  # shapes drifting behind the faces, for motion and clutter
            cx = int((0.5 + 0.45 * math.sin(0.3 * t + 1.3 * k)) * width)
            cy = int((0.5 + 0.4 * math.cos(0.23 * t * (1 + 0.2 * k) + k)) * height)
            size = int(height * (0.04 + 0.015 * k))
            colour = ((53 * k) % 256, (97 * k + 80) % 256, (151 * k + 40) % 256)
            if k % 2:
                cv2.circle(image, (cx, cy), size, colour, -1, cv2.LINE_AA)
            else:
                cv2.rectangle(image, (cx - size, cy - size), (cx + size, cy + size), colour, -1)
        for actor, patch, (left, room) in zip(_ACTORS, self._patches, self._columns, strict=True):
            ph, pw = patch.shape[:2]
            angle = 2 * math.pi * t / actor.period_s + actor.phase
            x = left + int(room * (0.5 + 0.5 * math.sin(angle)))
            y = int(max(0, height - ph) * (0.5 + 0.5 * math.sin(2 * angle + actor.phase)))
            h, w = min(ph, height - y), min(pw, width - x)
            image[y : y + h, x : x + w] = patch[:h, :w]
        return image

    def read(self) -> Frame:
        if self._started is None:
            raise SourceError("demo camera: read() before open()", retryable=False)
        if self.config.realtime:
            due = int((time.monotonic() - self._started) * self.config.fps)
            if due > self._next:
                self.dropped += due - self._next
                self._next = due
            wait = self._started + self._next / self.config.fps - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        index = self._next
        self._next += 1
        return Frame(self.render(index), index, self._started + index / self.config.fps)

    def close(self) -> None:
        self._started = None
        self._background = None
        self._patches = []
