"""The privacy floor of API changes: what a change may not go below, and what it weakens.

Every setting that decides whether a face is found or how it is masked is compared between the
config in force and the one a client sent. A setting the change moves past the file's
`privacy_floor` is a violation (the change is refused with 422); a setting moved the weaker way
inside the floor is a weakening (allowed, logged as a warning and counted in /metrics).
A setting the change leaves as it is never counts, even if the config file itself put it past
the floor: the file belongs to the box's owner, the floor binds the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edge.config import CameraConfig, EdgeblurConfig, PrivacyFloorConfig
from edge.detectors.registry import DetectorConfig

# Methods from strongest to weakest: moving right weakens privacy.
_METHOD_STRENGTH = {"noise": 0, "solid": 0, "pixelate": 1, "blur": 2}
_MOTION_COVERAGE = {"extra": 0, "only": 1, "off": 2}  # what motion adds to face masking


@dataclass(frozen=True)
class Setting:
    """One privacy-relevant setting of a change: where it is, its old and new value (old is
    None for a new camera), whether the new value lies past the floor (`floor` then says
    which limit) and whether it is weaker than the old one."""

    path: str
    old: Any
    new: Any
    past_floor: str | None
    weaker: bool

    @property
    def changed(self) -> bool:
        return self.old != self.new

    @property
    def violation(self) -> bool:
        return self.changed and self.past_floor is not None

    @property
    def weakening(self) -> bool:
        return self.changed and self.weaker and self.past_floor is None


def privacy_settings(old: EdgeblurConfig, new: EdgeblurConfig) -> list[Setting]:
    """Every privacy-relevant setting of `new`, paired with `old`'s."""
    floor = old.privacy_floor  # the floor in force, never the one the client sent
    settings = list(_detector_settings("detector", old.detector, new.detector, floor))
    old_cameras = {camera.id: camera for camera in old.cameras}
    for camera in new.cameras:
        before = old_cameras.get(camera.id)
        old_detector = old.detector_for(before) if before is not None else None
        settings += _detector_settings(
            f"cameras[{camera.id}].detector", old_detector, new.detector_for(camera), floor
        )
        settings += _motion_settings(camera, before, floor)
    settings += _redaction_settings(old, new, floor)
    return settings


def _detector_settings(
    where: str, old: DetectorConfig | None, new: DetectorConfig, floor: PrivacyFloorConfig
) -> Iterator[Setting]:
    def get(name: str) -> Any:
        return None if old is None else getattr(old, name)

    threshold_max = floor.detector_threshold_max
    yield Setting(
        f"{where}.threshold",
        get("threshold"),
        new.threshold,
        f"detector_threshold_max={threshold_max}" if new.threshold > threshold_max else None,
        old is not None and new.threshold > old.threshold,
    )
    small, old_small = new.small_face_threshold, get("small_face_threshold")
    yield Setting(
        f"{where}.small_face_threshold",
        old_small,
        small,
        f"detector_threshold_max={threshold_max}"
        if small is not None and small > threshold_max
        else None,
        old is not None and _effective(small, new.threshold) > _effective(old_small, old.threshold),
    )
    yield Setting(
        f"{where}.min_face_px",
        get("min_face_px"),
        new.min_face_px,
        f"min_face_px_max={floor.min_face_px_max}"
        if new.min_face_px > floor.min_face_px_max
        else None,
        old is not None and new.min_face_px > old.min_face_px,
    )
    yield Setting(
        f"{where}.max_face_px",
        get("max_face_px"),
        new.max_face_px,
        f"max_face_px_min={floor.max_face_px_min}"
        if new.max_face_px is not None and new.max_face_px < floor.max_face_px_min
        else None,
        old is not None and _limit(new.max_face_px) < _limit(old.max_face_px),
    )
    # Sizes the detector scales frames down to: smaller means small faces are missed.
    for name in ("input_long_side", "max_long_side"):
        size = getattr(new, name)
        yield Setting(
            f"{where}.{name}",
            get(name),
            size,
            f"input_long_side_min={floor.input_long_side_min}"
            if size is not None and size < floor.input_long_side_min
            else None,
            old is not None and _limit(size) < _limit(getattr(old, name)),
        )
    largest = max(new.scales)
    yield Setting(
        f"{where}.scales",
        None if old is None else max(old.scales),
        largest,
        f"largest_scale_min={floor.largest_scale_min}"
        if largest < floor.largest_scale_min
        else None,
        old is not None and largest < max(old.scales),
    )
    yield Setting(
        f"{where}.type",
        get("type"),
        new.type,
        None,
        old is not None and new.type != old.type,
    )


def _motion_settings(
    camera: CameraConfig, before: CameraConfig | None, floor: PrivacyFloorConfig
) -> Iterator[Setting]:
    motion, old_motion = camera.motion, None if before is None else before.motion
    yield Setting(
        f"cameras[{camera.id}].motion.mode",
        None if old_motion is None else old_motion.mode,
        motion.mode,
        "motion_only=false" if motion.mode == "only" and not floor.motion_only else None,
        old_motion is not None
        and _MOTION_COVERAGE[motion.mode] > _MOTION_COVERAGE[old_motion.mode],
    )
    # The area limit matters only while motion masks are made; it is checked with the mode,
    # so switching motion on with an old, huge limit counts as setting that limit.
    area = (motion.mode, motion.min_area_px) if motion.mode != "off" else ("off", None)
    old_area = None
    if old_motion is not None:
        old_area = (
            (old_motion.mode, old_motion.min_area_px) if old_motion.mode != "off" else ("off", None)
        )
    yield Setting(
        f"cameras[{camera.id}].motion.min_area_px",
        old_area,
        area,
        f"motion_min_area_px_max={floor.motion_min_area_px_max}"
        if motion.mode != "off" and motion.min_area_px > floor.motion_min_area_px_max
        else None,
        old_motion is not None
        and motion.mode != "off"
        and old_motion.mode != "off"
        and motion.min_area_px > old_motion.min_area_px,
    )


def _redaction_settings(
    old: EdgeblurConfig, new: EdgeblurConfig, floor: PrivacyFloorConfig
) -> Iterator[Setting]:
    was, now = old.redaction, new.redaction
    yield Setting(
        "redaction.method",
        was.method,
        now.method,
        f"methods={floor.methods}" if now.method not in floor.methods else None,
        _METHOD_STRENGTH[now.method] > _METHOD_STRENGTH[was.method],
    )
    yield Setting(
        "redaction.mask_scale",
        was.mask_scale,
        now.mask_scale,
        f"mask_scale_min={floor.mask_scale_min}" if now.mask_scale < floor.mask_scale_min else None,
        now.mask_scale < was.mask_scale,
    )
    yield Setting(
        "redaction.mask_lift", was.mask_lift, now.mask_lift, None, now.mask_lift < was.mask_lift
    )
    # Strength settings count with their method: switching to pixelate with an old setting of
    # 64 cells is setting 64 cells.
    blocks = (now.method, now.pixelate_blocks) if now.method == "pixelate" else None
    old_blocks = (was.method, was.pixelate_blocks) if was.method == "pixelate" else None
    yield Setting(
        "redaction.pixelate_blocks",
        old_blocks,
        blocks,
        f"pixelate_blocks_max={floor.pixelate_blocks_max}"
        if blocks is not None and now.pixelate_blocks > floor.pixelate_blocks_max
        else None,
        blocks is not None and old_blocks is not None and now.pixelate_blocks > was.pixelate_blocks,
    )
    strength = (now.method, now.blur_strength) if now.method == "blur" else None
    old_strength = (was.method, was.blur_strength) if was.method == "blur" else None
    yield Setting(
        "redaction.blur_strength",
        old_strength,
        strength,
        f"blur_strength_min={floor.blur_strength_min}"
        if strength is not None and now.blur_strength < floor.blur_strength_min
        else None,
        strength is not None and old_strength is not None and now.blur_strength < was.blur_strength,
    )
    yield Setting(
        "redaction.second_look_threshold",
        was.second_look_threshold,
        now.second_look_threshold,
        None,
        _effective(now.second_look_threshold, 1.01) > _effective(was.second_look_threshold, 1.01),
    )
    yield Setting(
        "tracking.hold_s",
        old.tracking.hold_s,
        new.tracking.hold_s,
        None,
        new.tracking.hold_s < old.tracking.hold_s,
    )
    yield Setting(
        "tracking.lookahead_frames",
        old.tracking.lookahead_frames,
        new.tracking.lookahead_frames,
        None,
        new.tracking.lookahead_frames < old.tracking.lookahead_frames,
    )


def _effective(value: float | None, otherwise: float) -> float:
    return otherwise if value is None else value


def _limit(value: float | None) -> float:
    """A size limit where None means none: larger than any number."""
    return float("inf") if value is None else value
