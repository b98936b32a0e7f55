"""An IoU tracker whose output is the union of the detector's boxes and coasting tracks.

It never removes or changes a detection: a face found for the first time is masked on that
very frame, and a face the detector misses keeps its mask for `hold_s` seconds. Boxes are
xyxy in source-image pixels; times are the frames' timestamps in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from edge.tracking.settings import TrackingConfig
from edge.types import Detections

# A coasting box grows on every side by this fraction of its size per second since its last
# detection, up to MAX_COAST_GROWTH: the longer we have not seen a face, the less we know
# where it is, so the mask widens rather than moves. A face seen only once has no velocity
# yet, so its mask widens faster (to the cap within a fifth of a second).
COAST_GROWTH_PER_S = 0.5
FIRST_SIGHTING_GROWTH_PER_S = 3.0
MAX_COAST_GROWTH = 0.5
# How fast a face can cross the view, in box sizes per second: a walker crossing it moves
# about 9 face widths a second whatever its distance (1.4 m/s, a face 0.16 m wide), so
# searches a third of a second apart see it three sizes further on. 10 allows a brisk walk.
# Measured on the 1080p walking clip searched every 8th frame (320 ms): 30 of 749 face-frames
# left visible with links limited to MAX_MATCH_JUMP, none with this.
FACE_SPEED_SIZES_PER_S = 10.0
# A face seen only once may be walking either way: its mask also spreads sideways (where
# walkers go; a face walking towards the camera barely moves in the picture) as far as it could
# walk, up to this many face widths on each side, ...
MAX_UNKNOWN_WALK_WIDTHS = 2.0
# ... until the next search could have found it again (1.5 search gaps), for at most this long:
# a box seen once and never again is more often a false detection than a face.
UNKNOWN_MOTION_S = 0.5
# Constant-velocity prediction may shift a box by at most this many box sizes per axis, so a
# noisy velocity can never carry the mask far away from where the face was last seen. (Letting
# it reach as far as a face can walk kept 0-4 more face-frames of 2,247 masked offline, for a
# masked area of 26-31 % of the frame instead of 23 % on the 1080p walking clip.)
MAX_COAST_SHIFT = 1.0
# Once the next search has missed a face (a walker leaving the picture, a face turning away
# mid-stride), the frames before that search are known to need more: there its mask also
# reaches as far as a face can walk, up to this many box sizes, along its velocity if it was
# being followed, and sideways either way (the velocity may be another face's). Only those
# frames of faces a search lost get it. On the looped 1080p walking clip searched at 1440 px
# 160-400 ms apart (bench/schedule_leaks.py's schedules), along the velocity: 2 face-frames of
# 2,247 left visible instead of 4, 0.1 % more of the frame masked; either way too: 14 instead
# of 24 over its ten schedule runs (those looked up: just after the loop's cut, where faces
# jump; those removed: the fastest walker on its way out at the right edge, its track holding
# another face's velocity); 0.1-0.4 % more masked (0.3-0.5 % on the stage clip).
MAX_LOST_SHIFT = 3.0
# A detection that overlaps no track may still be linked to the nearest one of similar size
# (half to twice as large) whose predicted centre is at most MAX_MATCH_JUMP box sizes away,
# or as far as FACE_SPEED_SIZES_PER_S allows since that track was last seen.
MAX_MATCH_JUMP = 1.5


def grow_box(box: np.ndarray, fraction: float | np.ndarray) -> np.ndarray:
    """xyxy (4,) or (n, 4) float64 grown on every side by `fraction` (a number, or one per
    box) of its width / height."""
    dx = (box[..., 2] - box[..., 0]) * fraction
    dy = (box[..., 3] - box[..., 1]) * fraction
    return box + np.stack([-dx, -dy, dx, dy], axis=-1)


def link_reach(seconds: np.ndarray | float) -> np.ndarray:
    """How far (box sizes) a face may have moved in `seconds` and still be linked to where it
    was: MAX_MATCH_JUMP, or FACE_SPEED_SIZES_PER_S x seconds when that is more."""
    return np.maximum(MAX_MATCH_JUMP, FACE_SPEED_SIZES_PER_S * np.asarray(seconds, np.float64))


def shifted_box(
    box: np.ndarray, velocity: np.ndarray, dt: float, max_shift: float = MAX_COAST_SHIFT
) -> np.ndarray:
    """xyxy (4,) moved by velocity (px/s, (2,)) over dt seconds, the shift clamped per axis to
    `max_shift` box sizes. dt may be negative (extrapolating backwards in time)."""
    size = np.array([box[2] - box[0], box[3] - box[1]])
    shift = np.clip(velocity * dt, -max_shift * size, max_shift * size)
    return box + np.concatenate([shift, shift])


def coast_box(
    box: np.ndarray,
    velocity: np.ndarray,
    dt: float,
    growth_per_s: float = COAST_GROWTH_PER_S,
    max_shift: float = MAX_COAST_SHIFT,
) -> np.ndarray:
    """Where a face last (or next) seen at `box` may be `dt` seconds away, conservatively.

    The union of "it stayed" (box) and "it kept moving" (box shifted by the velocity, at most
    `max_shift` sizes), grown by `growth_per_s` per second of |dt|, capped at
    MAX_COAST_GROWTH. box: xyxy (4,) float64; velocity: (2,) px/s of the box centre; dt:
    seconds (either sign).
    """
    moved = shifted_box(box, velocity, dt, max_shift)
    union = np.concatenate([np.minimum(box[:2], moved[:2]), np.maximum(box[2:], moved[2:])])
    return grow_box(union, min(MAX_COAST_GROWTH, growth_per_s * abs(dt)))


def _lost_reach(dt: float) -> float:
    """How many box sizes a face a later search missed may have walked in `dt` seconds: as far
    as a face can walk, up to MAX_LOST_SHIFT, never less than a coasting box's shift."""
    return min(MAX_LOST_SHIFT, max(MAX_COAST_SHIFT, FACE_SPEED_SIZES_PER_S * abs(dt)))


def lost_box(box: np.ndarray, velocity: np.ndarray, dt: float) -> np.ndarray:
    """Where a followed face that a later search missed may be `dt` seconds after it was last
    seen at `box`: a coasting box whose shift reaches `_lost_reach(dt)` sizes."""
    return coast_box(box, velocity, dt, max_shift=_lost_reach(dt))


def lost_either_way_box(box: np.ndarray, dt: float) -> np.ndarray:
    """Where a face that a later search missed may be `dt` seconds after it was last seen at
    `box`, whichever way it walked: spread sideways (where walkers go) as far as it could walk
    in dt (`_lost_reach`, in widths) each side. In a crowd its velocity may be another face's,
    taken at a wrong link, and lost_box would follow that face instead."""
    walk = _lost_reach(dt)
    width = box[2] - box[0]
    return box.astype(np.float64) + np.array([-walk * width, 0.0, walk * width, 0.0])


def unknown_motion_box(box: np.ndarray, dt: float) -> np.ndarray:
    """Where a face seen only once at `box` may be `dt` seconds away (either sign), its motion
    unknown: grown at FIRST_SIGHTING_GROWTH_PER_S and spread sideways by as far as it could
    walk (FACE_SPEED_SIZES_PER_S), at most MAX_UNKNOWN_WALK_WIDTHS widths each side."""
    grown = coast_box(box, np.zeros(2), dt, FIRST_SIGHTING_GROWTH_PER_S)
    walk = min(MAX_UNKNOWN_WALK_WIDTHS, FACE_SPEED_SIZES_PER_S * abs(dt)) * (box[2] - box[0])
    return grown + np.array([-walk, 0.0, walk, 0.0])


def centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (m, 4) with every box in b (n, 4), as float64 (m, n)."""
    a = a.astype(np.float64)[:, None, :]
    b = b.astype(np.float64)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def jump_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Centre distance of every box in b (n, 4) from every box in a (m, 4), in units of the
    a box's size (geometric mean of width and height), as float64 (m, n); inf where the sizes
    differ by more than a factor of two."""
    a = a.astype(np.float64)[:, None, :]
    b = b.astype(np.float64)[None, :, :]
    size_a = np.sqrt(np.clip((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]), 0, None))
    size_b = np.sqrt(np.clip((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]), 0, None))
    dx = (a[..., 0] + a[..., 2] - b[..., 0] - b[..., 2]) / 2
    dy = (a[..., 1] + a[..., 3] - b[..., 1] - b[..., 3]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        jump = np.hypot(dx, dy) / size_a
    similar = (size_b >= size_a / 2) & (size_b <= size_a * 2) & (size_a > 0)
    return np.where(similar, jump, np.inf)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs with IoU >= threshold, best pairs first.

    Ties are broken by row then column, so the result is deterministic.
    """
    rows, cols = np.nonzero(iou >= threshold)
    # lexsort: last key is primary -> highest IoU first, then lowest row, then lowest column.
    order = np.lexsort((cols, rows, -iou[rows, cols]))
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    pairs = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return pairs


@dataclass
class _Track:
    id: int
    box: np.ndarray  # float64 (4,): the last detected xyxy
    score: float  # score of the last detection
    last_seen: float  # timestamp of the last detection, seconds
    velocity: np.ndarray  # float64 (2,): centre velocity in px/s, 0 until seen twice
    hits: int = 1  # detections matched to this track so far

    def predicted(self, timestamp: float) -> np.ndarray:
        """Where the face is expected at `timestamp`, to link detections to: its velocity
        followed as far as a face can walk in the time (a mask's coasting box follows it only
        MAX_COAST_SHIFT; held back like that, a walker's prediction falls behind it and a
        nearer face is linked to its track instead)."""
        dt = max(0.0, timestamp - self.last_seen)
        return shifted_box(
            self.box, self.velocity, dt, max(MAX_COAST_SHIFT, FACE_SPEED_SIZES_PER_S * dt)
        )

    def coasting(self, timestamp: float, unknown_motion_s: float = UNKNOWN_MOTION_S) -> np.ndarray:
        dt = max(0.0, timestamp - self.last_seen)
        if self.hits == 1 and dt <= unknown_motion_s:  # then held and grown like any other
            return unknown_motion_box(self.box, dt)
        return coast_box(self.box, self.velocity, dt)


class FaceTracker:
    """Greedy IoU tracker that only ever ADDS boxes to the detector's output.

    `update` returns every input detection unchanged (first, in input order) followed by a
    box for every track not detected in this frame whose last detection is at most `hold_s`
    seconds old. There is no cap on the number of tracks. Deterministic: no randomness, and
    ties are broken by track age and detection order.

    Not thread-safe: one instance belongs to one camera's pipeline thread.
    """

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._last_update: float | None = None  # timestamp of the last search
        self._search_gap: float | None = None  # time between the last two searches

    @property
    def _unknown_motion_s(self) -> float:
        """How long a face seen once is masked as of unknown motion: until the next search or
        so could have found it again, at most UNKNOWN_MOTION_S."""
        if self._search_gap is None:
            return UNKNOWN_MOTION_S
        return min(UNKNOWN_MOTION_S, 1.5 * self._search_gap)

    def update(self, detections: Detections, timestamp: float) -> Detections:
        """Boxes to mask in the frame at `timestamp` (seconds) given its detections."""
        return self.update_with_ids(detections, timestamp)[0]

    def update_with_ids(
        self, detections: Detections, timestamp: float
    ) -> tuple[Detections, list[int]]:
        """Like `update`, also returning the track id given to each detection row."""
        if self._last_update is not None and timestamp > self._last_update:
            self._search_gap = timestamp - self._last_update
        self._last_update = timestamp
        ids = self._associate(detections, timestamp)
        return Detections.merge([detections, self.coasting(timestamp, exclude=set(ids))]), ids

    def coasting(self, timestamp: float, exclude: set[int] | None = None) -> Detections:
        """Boxes of the tracks still held at `timestamp` (those not in `exclude`), without
        updating anything: used for frames the detector did not run on."""
        held = [
            t
            for t in self._tracks
            if (exclude is None or t.id not in exclude)
            and timestamp - t.last_seen <= self.config.hold_s
        ]
        if not held:
            return Detections.empty()
        return Detections(
            np.stack([t.coasting(timestamp, self._unknown_motion_s) for t in held]),
            np.array([t.score for t in held]),
        )

    def velocity_of(self, track_id: int) -> np.ndarray | None:
        """The velocity (px/s) of a live track seen at least twice; None for a track seen once
        (its motion unknown) or gone."""
        for track in self._tracks:
            if track.id == track_id:
                return track.velocity.copy() if track.hits > 1 else None
        return None

    def live_track_ids(self) -> set[int]:
        """Ids of tracks that a later detection may still be matched to."""
        return {t.id for t in self._tracks}

    def _associate(self, detections: Detections, timestamp: float) -> list[int]:
        boxes = detections.xyxy.astype(np.float64)
        ids = [-1] * len(detections)
        if self._tracks and len(detections):
            predicted = np.stack([t.predicted(timestamp) for t in self._tracks])
            for r, c in greedy_match(iou_matrix(predicted, boxes), self.config.iou_match):
                self._follow(self._tracks[r], boxes[c], float(detections.score[c]), timestamp)
                ids[c] = self._tracks[r].id
            # Second pass over what IoU left: a face that moved about its own size between
            # detector runs (a walker crossing the view, detect_every > 1) no longer overlaps
            # its track, but is linked to it so the frames between can be interpolated.
            matched = set(ids)
            rows = [r for r, t in enumerate(self._tracks) if t.id not in matched]
            cols = [c for c, i in enumerate(ids) if i < 0]
            if rows and cols:
                # Each track reaches as far as a face can have moved since it was last seen;
                # the nearest pairs are linked first (ranking by the share of each reach used
                # would hand a far, long-unseen track the face its own recent track follows).
                since = np.array([timestamp - self._tracks[r].last_seen for r in rows])
                reach = link_reach(since)
                jump = jump_matrix(predicted[rows], boxes[cols])
                closeness = np.where(jump <= reach[:, None], -jump, -np.inf)
                for r, c in greedy_match(closeness, -np.finfo(np.float64).max):
                    track = self._tracks[rows[r]]
                    # The track follows the face, but a ghost keeps holding the old place:
                    # if the link was wrong, a face the detector just missed stays masked.
                    self._tracks.append(
                        replace(track, id=self._new_id(), velocity=track.velocity.copy())
                    )
                    self._follow(track, boxes[cols[c]], float(detections.score[cols[c]]), timestamp)
                    ids[cols[c]] = track.id
        for c, track_id in enumerate(ids):
            if track_id < 0:
                track = _Track(
                    self._new_id(),
                    boxes[c].copy(),
                    float(detections.score[c]),
                    timestamp,
                    np.zeros(2),
                )
                self._tracks.append(track)
                ids[c] = track.id
        # Expire after matching, not before: a track alive at the previous detector run can
        # still be matched at this one however long the gap (so interpolation across skipped
        # frames works even with hold_s = 0); it is dropped only once it has missed a run and
        # its hold has run out.
        self._tracks = [t for t in self._tracks if timestamp - t.last_seen <= self.config.hold_s]
        return ids

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    @staticmethod
    def _follow(track: _Track, box: np.ndarray, score: float, timestamp: float) -> None:
        """Move a track to its new detection, updating its velocity estimate."""
        dt = timestamp - track.last_seen
        if dt > 0:
            velocity = (centre(box) - centre(track.box)) / dt
            # Averaged with the previous estimate: one jittery box should not fling the
            # prediction.
            track.velocity = (track.velocity + velocity) / 2 if track.hits > 1 else velocity
        track.hits += 1
        track.box = box.copy()
        track.score = score
        track.last_seen = timestamp
