"""Value types that flow through the pipeline: source -> detector -> tracker -> redactor -> sink.

Pixel arrays are uint8 (H, W, 3) in BGR order (OpenCV's), owned by whoever holds the object.
A raw `Frame` lives in memory only; the only type a sink accepts is `RedactedFrame`, which only
`edge.redact` can create (see `RedactedFrame.__init__`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image must be uint8 (H, W, 3) BGR, got {image.dtype} {tuple(image.shape)}"
        )


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded, unredacted frame. Never written, streamed or logged.

    image: uint8 (H, W, 3) BGR. index: frame number within its source (0-based).
    timestamp: capture time in seconds (stream pts where known, else monotonic clock).
    """

    image: np.ndarray
    index: int
    timestamp: float

    def __post_init__(self) -> None:
        _check_image(self.image)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True, slots=True)
class Detections:
    """Face boxes in source-image pixels.

    xyxy: float32 (n, 4) as x1, y1, x2, y2 with x2 > x1, y2 > y1 (may extend past the image).
    score: float32 (n,) confidence in [0, 1]. There is no cap on n: a crowd of any size is kept.
    """

    xyxy: np.ndarray
    score: np.ndarray

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        if len(xyxy) != len(score):
            raise ValueError(
                f"Detections: xyxy has {len(xyxy)} rows but score has {len(score)} entries"
            )
        if not np.all(np.isfinite(xyxy)):
            raise ValueError("Detections: xyxy contains NaN or infinite coordinates")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "score", score)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    @classmethod
    def merge(cls, parts: list[Detections]) -> Detections:
        """Concatenate several Detections (no suppression; see `nms` for that)."""
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.xyxy for p in parts]), np.concatenate([p.score for p in parts])
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def select(self, keep: np.ndarray) -> Detections:
        """Subset by boolean mask or index array."""
        return Detections(self.xyxy[keep], self.score[keep])

    @property
    def widths(self) -> np.ndarray:
        return self.xyxy[:, 2] - self.xyxy[:, 0]

    @property
    def heights(self) -> np.ndarray:
        return self.xyxy[:, 3] - self.xyxy[:, 1]


# Only edge.redact holds a reference it passes back; anything else constructing a
# RedactedFrame fails loudly. Python cannot make this unforgeable, but it makes the
# one legitimate path explicit and every accidental one an error.
_REDACTION_KEY = object()


@dataclass(frozen=True, slots=True)
class RedactionRecord:
    """What was done to a frame, for metrics and logs (never pixels)."""

    regions: int  # face regions masked
    fully_masked: bool  # True when the whole frame was masked (fail-closed)
    reason: str = ""  # why it was fully masked, empty otherwise


@dataclass(frozen=True, slots=True, init=False)
class RedactedFrame:
    """A frame whose faces have been irreversibly masked: the only thing a sink accepts.

    image: uint8 (H, W, 3) BGR, read-only, not shared with the raw frame it came from.
    """

    image: np.ndarray
    index: int
    timestamp: float
    record: RedactionRecord = field(default_factory=lambda: RedactionRecord(0, False))

    def __init__(
        self,
        key: object,
        image: np.ndarray,
        index: int,
        timestamp: float,
        record: RedactionRecord,
    ) -> None:
        if key is not _REDACTION_KEY:
            raise TypeError("RedactedFrame can only be created by edge.redact")
        _check_image(image)
        image.flags.writeable = False
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "timestamp", timestamp)
        object.__setattr__(self, "record", record)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def require_redacted(frame: object) -> RedactedFrame:
    """Sinks call this on every input: anything but a RedactedFrame is refused."""
    if not isinstance(frame, RedactedFrame):
        raise TypeError(
            f"sinks accept only RedactedFrame, got {type(frame).__name__}: "
            "raw frames must never reach a sink"
        )
    return frame
