"""The tracking section of the config, here so that tracking needs nothing above it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_lookahead(detect_every: int, lookahead_frames: int, prefix: str) -> None:
    """Every skipped frame must sit between two detections inside the look-ahead window."""
    if lookahead_frames < detect_every - 1:
        raise ValueError(
            f"{prefix}detect_every={detect_every} needs {prefix}lookahead_frames >= "
            f"{detect_every - 1}, else faces appearing between detections go unmasked"
        )


class TrackingConfig(_Strict):
    """Temporal masking. The tracker only ever adds boxes to what the detector found."""

    hold_s: float = Field(
        1.0, ge=0.0, le=30.0, description="Keep masking a face this long after its last detection."
    )
    lookahead_frames: int = Field(
        0,
        ge=0,
        le=100,
        description="With detect_every >= 1: hold each frame at least this many frames so a "
        "face found later is also masked in the frames before it (0 = none; adds latency). "
        "Frames are held anyway until a detection on a later frame has come in.",
    )
    detect_every: int = Field(
        0,
        ge=0,
        le=30,
        description="Cameras: 0 (default) searches the newest frame each time the detector is "
        "free and masks the frames between from the searches on both sides, so a camera "
        "keeps more frames than the detector can search. k >= 1 searches every k-th frame "
        "the camera keeps (1: every one, and the camera keeps only as many as the detector "
        "can search); it needs lookahead_frames >= k-1 so every frame sits between two "
        "searches. `edgeblur video` uses video.detect_every.",
    )
    iou_match: float = Field(
        0.2, gt=0.0, le=1.0, description="Minimum IoU to treat a detection as a track's face."
    )

    @model_validator(mode="after")
    def _skipping_needs_lookahead(self) -> TrackingConfig:
        check_lookahead(self.detect_every, self.lookahead_frames, "")
        return self
