"""Look-ahead temporal masking: hold frames back a little so a face seen LATER is also masked
in the frames before it, and frames the detector skipped or missed a face in are filled in.

Memory: a frame is held until `lookahead_frames` newer frames have arrived and a detector run
on it or on a later frame has come in, so the frames held are D or the detection gap, whichever
is larger (each H x W x 3 bytes, 6.2 MB a 1080p frame). The engine bounds the gap: a camera
frame not covered within its latency budget is released fail-closed. Raw frames stay in memory
only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edge.tracking.settings import TrackingConfig
from edge.tracking.tracker import (
    COAST_GROWTH_PER_S,
    MAX_COAST_GROWTH,
    FaceTracker,
    centre,
    coast_box,
    grow_box,
    iou_matrix,
    jump_matrix,
    link_reach,
    lost_box,
    lost_either_way_box,
    unknown_motion_box,
)
from edge.types import Detections, Frame


@dataclass(frozen=True)
class _Sighting:
    """One detection of one track: its frame's place in the stream, time and box."""

    seq: int
    timestamp: float
    box: np.ndarray  # float64 (4,) xyxy
    score: float
    velocity: np.ndarray | None  # the track's px/s after this sighting; None if seen once


@dataclass(frozen=True)
class _Pending:
    frame: Frame
    seq: int
    online: Detections  # the tracker's output when the frame arrived (detections + coasting)


class TemporalMasker:
    """Turns a stream of (frame, detections or None) into (frame, boxes to mask), in order.

    With lookahead_frames D = 0 each frame comes straight back with the tracker's output.
    With D > 0 a frame is released once D newer frames have arrived; its boxes are the
    tracker's output for it plus, for every face detected within the window but not in it:
    - a box linearly interpolated between the face's detections before and after it
      (missed detections and frames the detector skipped), grown slightly with distance.
      Both detections must belong to one track, i.e. be at most hold_s (plus one detector
      run) apart; longer gaps are covered from each side by the two rules around this one;
    - if the face has no detection before it (it was first seen later), or the one before
      does not overlap the one after (iou_match: the tracker may have linked two faces by
      proximity), its next box extended backwards in time (`coast_box` over a negative
      time gap, along the velocity from that detection and the one after it when both are
      in the window, else held and grown), so a face entering at frame t is also masked in
      frames t-D .. t-1;
    - a box on every path a face could have walked between the searches just before and just
      after the frame (`_possible_paths`), whichever track the tracker linked it to;
    - (already in the tracker's output) the box of a face only seen before, held for hold_s;
      if the first search after its last sighting (and after the frame) missed it, also a box
      as far as a face can walk either way sideways (`lost_either_way_box`) and, if it was
      being followed, its `lost_box` along its velocity: a walker leaving the picture.
    The output for a frame always contains the detector's own boxes for it: boxes are only
    ever added. `detections=None` means the detector did not run on the frame. A frame is
    released once D newer frames have arrived AND `detections_after` detections on it or later
    frames have come in ("covered"), so every released frame lies between two detector runs
    whatever the detection schedule; `flush` and `release_oldest` release frames without that
    guarantee, for the caller to treat as unchecked.

    Not thread-safe: one instance belongs to one camera's pipeline thread.
    """

    def __init__(self, config: TrackingConfig, detections_after: int = 1) -> None:
        if detections_after < 1:
            raise ValueError(f"detections_after must be >= 1, got {detections_after}")
        self.config = config
        # How many detector runs at or after a frame must have come in before it is released:
        # 2 lets a face first found one run late still be carried back over this frame.
        self.detections_after = detections_after
        self._reset()

    def _reset(self) -> None:
        self._tracker = FaceTracker(self.config)
        self._pending: deque[_Pending] = deque()
        self._sightings: dict[int, list[_Sighting]] = {}  # per track id, oldest first
        self._seq = 0
        # Every search still needed: (seq, timestamp, boxes float64 (n, 4)), oldest first: the
        # newest one at or before the oldest frame held, and every one after it.
        self._searches: deque[tuple[int, float, np.ndarray]] = deque()

    @property
    def delay_frames(self) -> int:
        """How many frames output lags input (lookahead_frames)."""
        return self.config.lookahead_frames

    @property
    def buffered(self) -> int:
        """Frames held now."""
        return len(self._pending)

    def push(self, frame: Frame, detections: Detections | None) -> list[tuple[Frame, Detections]]:
        """Add the next frame; return the frames now ready to redact, oldest first: those with
        delay_frames newer frames behind them and a detection at or after them."""
        if detections is None:
            online = self._tracker.coasting(frame.timestamp)
        else:
            self._searches.append(
                (self._seq, frame.timestamp, detections.xyxy.astype(np.float64).reshape(-1, 4))
            )
            online, ids = self._tracker.update_with_ids(detections, frame.timestamp)
            for track_id, box, score in zip(ids, detections.xyxy, detections.score, strict=True):
                self._sightings.setdefault(track_id, []).append(_Sighting(
                    self._seq, frame.timestamp, box.astype(np.float64), float(score),
                    self._tracker.velocity_of(track_id),
                ))
        self._pending.append(_Pending(frame, self._seq, online))
        self._seq += 1
        released = []
        while len(self._pending) > self.delay_frames and self._covered(self._pending[0].seq):
            released.append(self._release())
        return released

    def _covered(self, seq: int) -> bool:
        """detections_after detector runs at or after `seq` have come in."""
        return sum(search[0] >= seq for search in self._searches) >= self.detections_after

    def release_oldest(self) -> tuple[Frame, Detections] | None:
        """Release the oldest held frame now, covered or not (None when nothing is held): for
        a frame whose time is up. The caller must not trust it as checked."""
        return self._release() if self._pending else None

    def flush(self) -> list[tuple[Frame, Detections]]:
        """End of stream: release every held frame, resolved with what is known, and start
        afresh (a later push begins a new stream with no tracks)."""
        released = [self._release() for _ in range(len(self._pending))]
        self._reset()
        return released

    def _release(self) -> tuple[Frame, Detections]:
        entry = self._pending.popleft()
        boxes = Detections.merge([entry.online, self._filled_in(entry)])
        self._forget_before(entry.seq)
        return entry.frame, boxes

    def _filled_in(self, entry: _Pending) -> Detections:
        """Boxes for faces detected around this frame but not in it."""
        t = entry.frame.timestamp
        boxes: list[np.ndarray] = []
        scores: list[float] = []
        for sightings in self._sightings.values():
            before = after = following = None
            for i, s in enumerate(sightings):
                if s.seq < entry.seq:
                    before = s
                    continue
                if s.seq > entry.seq:
                    after = s
                    following = sightings[i + 1] if i + 1 < len(sightings) else None
                break
            else:
                # Only seen before: the tracker's coasting box covers this frame, and where the
                # next search missed the face, so do the boxes of where it may have walked.
                if (
                    before is not None
                    and t - before.timestamp <= self.config.hold_s
                    and self._missed_after(before.seq, entry.seq)
                ):
                    dt = t - before.timestamp
                    boxes.append(lost_either_way_box(before.box, dt))
                    scores.append(before.score)
                    if before.velocity is not None:
                        boxes.append(lost_box(before.box, before.velocity, dt))
                        scores.append(before.score)
                continue
            if after is None:
                continue  # detected in this very frame: the detector's box is there already
            if before is not None:
                boxes.append(_interpolate(before, after, entry.seq, t))
                scores.append(min(before.score, after.score))
            # Two sightings that do not overlap may be two faces the tracker linked by
            # proximity (a face appearing beside where another box was): the later one is
            # then also masked as a face first seen at its sighting.
            if before is None or _overlap(before.box, after.box) < self.config.iou_match:
                boxes.append(_extended_back(after, following, t))
                scores.append(after.score)
        paths = self._possible_paths(entry)
        boxes.extend(paths)
        scores.extend([0.0] * len(paths))
        if not boxes:
            return Detections.empty()
        return Detections(np.stack(boxes), np.array(scores))

    def _missed_after(self, seen: int, seq: int) -> bool:
        """Whether frame `seq` lies before the first search after a sighting at `seen` (and
        that search has come in): where a face that search missed may have walked off."""
        for search in self._searches:
            if search[0] > seen:
                return search[0] > seq
        return False

    def _possible_paths(self, entry: _Pending) -> np.ndarray:
        """Boxes on every path a face may have taken between the searches on either side of
        this frame: from each box of the search before to each box of similar size of the
        search after that a face could have walked to in the time between (the reach of the
        tracker's links). The tracker links each face to one track, and in a crowd it can
        pick the wrong one (a face that vanished, one not seen for a while); whichever face
        went where, its way between the two searches is masked. float64 (k, 4)."""
        before = after = None
        for search in self._searches:
            if search[0] < entry.seq:
                before = search
            elif search[0] > entry.seq:
                after = search
                break
            else:
                return np.zeros((0, 4))  # searched itself
        if before is None or after is None or not len(before[2]) or not len(after[2]):
            return np.zeros((0, 4))
        (_, t0, a), (_, t1, b) = before, after
        gap = t1 - t0
        rows, cols = np.nonzero(jump_matrix(a, b) <= link_reach(gap))
        if not len(rows):
            return np.zeros((0, 4))
        f = 0.5 if gap <= 0 else min(1.0, max(0.0, (entry.frame.timestamp - t0) / gap))
        path = (1.0 - f) * a[rows] + f * b[cols]
        # Grown as a coasting box would be from the nearer search, as _interpolate does.
        nearer = min(f, 1.0 - f) * max(gap, 0.0)
        return grow_box(path, min(MAX_COAST_GROWTH, COAST_GROWTH_PER_S * nearer))

    def _forget_before(self, seq: int) -> None:
        """Drop history no later frame can need: per track, everything before its newest
        sighting at or before `seq`; whole tracks the tracker dropped and that have no
        sighting after `seq`; searches before the newest one at or before `seq`."""
        while len(self._searches) > 1 and self._searches[1][0] <= seq:
            self._searches.popleft()
        live = self._tracker.live_track_ids()
        for track_id in list(self._sightings):
            sightings = self._sightings[track_id]
            keep_from = 0
            for i, s in enumerate(sightings):
                if s.seq <= seq:
                    keep_from = i
            del sightings[:keep_from]
            if track_id not in live and sightings[-1].seq <= seq:
                del self._sightings[track_id]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(iou_matrix(a[None], b[None])[0, 0])


def _extended_back(after: _Sighting, following: _Sighting | None, timestamp: float) -> np.ndarray:
    """The box of a face first seen at `after`, extended back to `timestamp` (earlier):
    along its velocity from `after` to `following` where there is one, else as a face of
    unknown motion (grown and spread sideways as far as it could have walked)."""
    if following is None or following.timestamp <= after.timestamp:
        return unknown_motion_box(after.box, timestamp - after.timestamp)
    velocity = (centre(following.box) - centre(after.box)) / (
        following.timestamp - after.timestamp
    )
    # A negative time gap: the box is extrapolated backwards along its velocity.
    return coast_box(after.box, velocity, timestamp - after.timestamp)


def _interpolate(before: _Sighting, after: _Sighting, seq: int, timestamp: float) -> np.ndarray:
    """Box between two sightings of one face, linear in time (in frame count where the
    timestamps do not increase), grown as a coasting box would be from the nearer one."""
    if after.timestamp > before.timestamp:
        f = (timestamp - before.timestamp) / (after.timestamp - before.timestamp)
    else:
        f = (seq - before.seq) / (after.seq - before.seq)
    f = min(1.0, max(0.0, f))
    box = (1.0 - f) * before.box + f * after.box
    gap = min(abs(timestamp - before.timestamp), abs(after.timestamp - timestamp))
    return grow_box(box, min(MAX_COAST_GROWTH, COAST_GROWTH_PER_S * gap))
