"""The one engine behind `edgeblur video` and `edgeblur serve`: every frame, from a file or a
camera, takes the same corridor

    offer() -> [inbox] -> processing thread: detection schedule -> TemporalMasker (look-ahead)
        -> redactor / fail closed -> [one bounded queue and thread per output] -> sinks

with the detector shared by every stream of the process (edge.detectors.shared).

The rules live in `FrameProcessor`, pure logic with no threads or clocks of its own, tested
with a fake detector:
- Which frames are searched: for cameras by default (`tracking.detect_every: 0`, here
  `detect_every` None) the newest frame whenever the detector is free for this stream, so a
  camera keeps more frames than the detector can search; or every k-th (`detect_every`: files,
  whose k gives the same output every run, and cameras configured so).
- A frame is released once a detection on it or a later frame has come in (and
  `lookahead_frames` newer frames), so it lies between two detector runs; it is trusted only
  when both succeeded. A failed run fails closed every frame it covered and every frame after
  it until a run succeeds.
- The second look after masking (when on) runs on the frames the detector ran on.
- Cameras: a frame not released within the latency budget of its arrival fails closed
  (`over_budget`), and so do the frames after it until a new detection.
- End of stream: the last frame is searched, so the frames before it are covered; if that
  cannot happen, they fail closed (`end_of_stream`).

Drop or block is a property of the stream (`live`), not a second code path: a camera drops
frames at ingest only (`IngestGovernor`, counted), never one the engine has accepted; a file
blocks its reader until there is room, so every frame is kept.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from edge.detectors.base import Detector
from edge.detectors.shared import DetectionResult, DetectionSeat
from edge.motion import MotionMasker
from edge.redact import Redactor
from edge.sinks.base import Sink
from edge.tracking import TemporalMasker
from edge.tracking.settings import TrackingConfig
from edge.types import Detections, Frame, RedactedFrame

log = logging.getLogger(__name__)

FailPolicy = Literal["withhold", "mask"]


@dataclass(frozen=True)
class StreamSettings:
    """How one stream is scheduled.

    detect_every: search every k-th frame (and the last), or None: the newest frame each time
    the detector is free (the look-ahead's own delay is the tracking config's). budget_s: a frame
    not released this long after its arrival fails closed (None: no limit, for files).
    live: drop at ingest instead of blocking. second_look: run the redactor's second look on
    the frames the detector ran on. motion_only: no detector at all, motion masks only.
    detections_after: detector runs at or after a frame before it is released (2 would carry
    back a face first found one run late, for one more search's wait)."""

    detect_every: int | None = None
    budget_s: float | None = 1.0
    live: bool = True
    second_look: bool = False
    fail_policy: FailPolicy = "withhold"
    motion_only: bool = False
    detections_after: int = 1

    def __post_init__(self) -> None:
        if self.detect_every is not None and self.detect_every < 1:
            raise ValueError(
                f"detect_every must be None (the newest frame) or >= 1, got {self.detect_every}"
            )


@dataclass(frozen=True, slots=True)
class Released:
    """A frame leaving the engine: `redacted` is None when it was withheld. `reason` is a
    metrics FAIL_REASONS entry when it failed closed (withheld or fully masked), else ""."""

    index: int
    timestamp: float
    arrived: float
    redacted: RedactedFrame | None
    reason: str = ""


@dataclass(eq=False, slots=True)
class _Held:
    frame: Frame
    arrived: float  # monotonic time the engine accepted it
    count: int  # place in the stream (0-based), across the engine's life
    motion: Detections = field(default_factory=Detections.empty)
    fail: str = ""  # a FAIL_REASONS entry: must be withheld or fully masked
    detected: bool = False  # the detector ran on this frame itself
    scheduled: bool = False  # fixed schedule: this frame is to be searched


class FrameProcessor:
    """The schedule, look-ahead and fail-closed rules of one stream (see the module doc).

    Single-threaded: the caller feeds it frames (`add_frame`), detection results in the order
    it requested them (`add_result`), the clock (`expire`) and the end (`end_of_stream`,
    `finish`); each returns the frames now leaving, in order. `request` is how it asks for a
    frame to be searched (`DetectionSeat.request`); `look_again` runs the second look.
    """

    def __init__(
        self,
        settings: StreamSettings,
        tracking: TrackingConfig,
        redactor: Redactor,
        request: Callable[[Frame, float], None],
        look_again: Callable[[Frame, Detections], RedactedFrame] | None = None,
    ) -> None:
        self.settings = settings
        self._redactor = redactor
        self._request = request
        self._look_again = look_again
        if settings.detect_every is None:
            # Searching the newest frame, a frame is released once a search after it came in,
            # which is the look-ahead this schedule needs. `lookahead_frames` (for a fixed
            # schedule) would also hold it for that many newer frames: seconds, when the
            # governor has cut the rate after an outage, so frames fail closed over budget and
            # the rate stays cut.
            tracking = tracking.model_copy(update={"lookahead_frames": 0})
        self._masker = TemporalMasker(tracking, settings.detections_after)
        self._waiting: deque[_Held] = deque()  # accepted, not yet pushed into the masker
        self._held: deque[_Held] = deque()  # pushed into the masker, not yet released
        self._scheduled: deque[_Held] = deque()  # fixed schedule: to search, in order
        self._in_flight = 0  # requests made whose result has not come back
        self._trusted = True  # the last detection pushed succeeded and nothing broke since
        self._last_fail = ""
        self._last_detected_count = -1  # count of the newest frame pushed with detections
        self._count = 0
        self._ended = False
        self.last_error = ""

    # ---- inputs -------------------------------------------------------------------------

    def add_frame(
        self, frame: Frame, arrived: float, motion: Detections | None = None
    ) -> list[Released]:
        held = _Held(frame, arrived, self._count, motion if motion is not None else
                     Detections.empty())
        self._count += 1
        if self.settings.motion_only:
            return [self._redact(held, Detections.empty())]
        self._waiting.append(held)
        every = self.settings.detect_every
        if every is None:
            # The newest frame replaces a request not started yet, so the newest waiting frame
            # is always either being searched or next in line.
            self._request(frame, self._waiting[0].arrived)
        elif held.count % every == 0:
            held.scheduled = True
            self._scheduled.append(held)
            self._request_scheduled()
        return []

    def add_result(self, result: DetectionResult) -> list[Released]:
        """A detection came back (results arrive in request order). One for a frame no longer
        waiting (released fail-closed meanwhile) is ignored."""
        self._in_flight = max(0, self._in_flight - 1)
        target = next((h for h in self._waiting if h.frame is result.frame), None)
        out: list[Released] = []
        if target is not None:
            ok = result.detections is not None and not result.failure
            if not ok:
                self.last_error = result.error or result.failure
            while self._waiting:
                held = self._waiting.popleft()
                if held is target:
                    break
                # Between the detection before it and this one: trusted only if both succeeded.
                if not (self._trusted and ok):
                    held.fail = held.fail or (result.failure if not ok else self._last_fail)
                out += self._push(held, None)
            target.detected = True
            if ok:
                assert result.detections is not None
                self._trusted, self._last_fail = True, ""
                out += self._push(target, result.detections)
            else:
                target.fail = target.fail or result.failure
                self._trusted, self._last_fail = False, result.failure
                out += self._push(target, Detections.empty())
        if self._scheduled and self._scheduled[0].frame is result.frame:
            self._scheduled.popleft()
        self._request_scheduled()
        return out

    def expire(self, now: float) -> list[Released]:
        """Fail closed every frame not released within the budget of its arrival."""
        budget = self.settings.budget_s
        out: list[Released] = []
        if budget is None:
            return out
        while True:
            oldest = self._held[0] if self._held else (
                self._waiting[0] if self._waiting else None
            )
            if oldest is None or now - oldest.arrived <= budget:
                return out
            self.last_error = (
                f"a frame waited {now - oldest.arrived:.2f} s for its detection, over the "
                f"latency budget of {budget * 1000:.0f} ms"
            )
            if self._held:
                released = self._masker.release_oldest()
                assert released is not None
                held = self._held.popleft()
            else:
                held = self._waiting.popleft()
                # The frames after it can no longer lean on the detection before it.
                self._trusted, self._last_fail = False, "over_budget"
                # Not searched any more, unless its search has started.
                searching = self._in_flight and self._scheduled and self._scheduled[0] is held
                if held.scheduled and not searching and held in self._scheduled:
                    self._scheduled.remove(held)
            held.fail = held.fail or "over_budget"
            out.append(self._fail_closed(held))

    def end_of_stream(self) -> list[Released]:
        """No more frames: make sure the last one is searched, so the frames before it are
        covered; then `finish` once `settled`."""
        self._ended = True
        if self._waiting and self.settings.detect_every is not None:
            last = self._waiting[-1]
            if not last.scheduled:
                last.scheduled = True
                self._scheduled.append(last)
                self._request_scheduled()
        return []

    @property
    def settled(self) -> bool:
        """Nothing is waiting on a detection any more (after end_of_stream: finish now)."""
        return not self._waiting

    def finish(self) -> list[Released]:
        """Release everything still held: covered frames normally, the rest fail closed."""
        out: list[Released] = []
        for frame, boxes in self._masker.flush():
            held = self._pop_held(frame)
            if held.count > self._last_detected_count:
                held.fail = held.fail or "end_of_stream"
            out.append(self._release(held, boxes))
        while self._waiting:
            held = self._waiting.popleft()
            # After a failed detection the frames keep its reason: one episode, not two.
            held.fail = held.fail or (self._last_fail if not self._trusted else "end_of_stream")
            out.append(self._fail_closed(held))
        self._trusted = True
        return out

    @property
    def held_frames(self) -> int:
        return len(self._waiting) + len(self._held)

    @property
    def oldest_arrival(self) -> float | None:
        """When the oldest frame still held arrived (monotonic), None when none is held."""
        oldest = self._held[0] if self._held else (self._waiting[0] if self._waiting else None)
        return oldest.arrived if oldest is not None else None

    # ---- internals ----------------------------------------------------------------------

    def _request_scheduled(self) -> None:
        if self._in_flight == 0 and self._scheduled:
            self._in_flight = 1
            self._request(self._scheduled[0].frame, self._scheduled[0].arrived)

    def _push(self, held: _Held, detections: Detections | None) -> list[Released]:
        if detections is not None:
            self._last_detected_count = held.count
        self._held.append(held)
        return [self._release(self._pop_held(f), boxes)
                for f, boxes in self._masker.push(held.frame, detections)]

    def _pop_held(self, frame: Frame) -> _Held:
        held = self._held.popleft()
        if held.frame is not frame:  # a bookkeeping bug: trust nothing
            raise RuntimeError(f"look-ahead released frame {frame.index} out of order")
        return held

    def _release(self, held: _Held, boxes: Detections) -> Released:
        if held.fail:
            return self._fail_closed(held)
        return self._redact(held, boxes)

    def _redact(self, held: _Held, boxes: Detections) -> Released:
        masks = Detections.merge([boxes, held.motion])
        try:
            if held.detected and self._look_again is not None:
                redacted = self._look_again(held.frame, masks)
            else:
                redacted = self._redactor.redact(held.frame, masks)
        except Exception as error:  # the second look's detection failed: fail closed
            self.last_error = f"redaction failed: {error}"
            held.fail = "detector_error" if held.detected else "processing_error"
            return self._fail_closed(held)
        return Released(held.frame.index, held.frame.timestamp, held.arrived, redacted)

    def _fail_closed(self, held: _Held) -> Released:
        redacted = None
        if self.settings.fail_policy == "mask":
            redacted = self._redactor.mask_all(held.frame, held.fail)
        return Released(held.frame.index, held.frame.timestamp, held.arrived, redacted, held.fail)


class _SeatDetector(Detector):
    """The shared detector as the redactor's second look sees it: one call, ahead of turns."""

    name = "shared"

    def __init__(self, seat: DetectionSeat) -> None:
        self._seat = seat

    def detect(self, image: np.ndarray) -> Detections:
        return self._seat.detect_now(image)


def second_look(
    redactor: Redactor, seat: DetectionSeat
) -> Callable[[Frame, Detections], RedactedFrame]:
    """The redaction with its second look after masking run by the shared detector."""
    detector = _SeatDetector(seat)
    return lambda frame, boxes: redactor.redact(frame, boxes, look_again=detector)


# The longest a camera frame should wait for its searches: beyond it the governor takes fewer
# frames (the latency budget, where frames fail closed, may be longer). Searching the newest
# frame, a frame waits for up to two of its camera's searches, and cameras take turns: with
# four cameras on a small box that is over a second and a half.
TARGET_WAIT_S = 2.1
# Searching the newest frame, the time between a camera's searched frames: the longer it is,
# the further a face moves between the searches the frames between are masked from. Replayed
# offline on the shared clips (bench/schedule_leaks.py, docs/benchmarks.md): none of the walking
# crowd's face-frames was left visible at searches 160 ms apart, a few in a thousand 320-400 ms
# apart. Frames taken cost CPU the detector then lacks, so while searches are further apart
# than this the governor takes fewer frames, down to GAP_FLOOR_FPS: the low end of what UK
# guidance asks of a recording in a busy public area; below it, fewer frames would fail the
# recording more than longer gaps fail the masks.
SEARCH_GAP_TARGET_S = 0.4
GAP_FLOOR_FPS = 6.0


class IngestGovernor:
    """Which camera frames the engine accepts: the frame rate the box can keep for this camera.

    Decoding, masking and encoding every frame of every camera can leave too little CPU for
    detection. The governor lowers the accepted rate, each period, when frames waited too long
    for their searches (the slowest of the period over `high` x budget, at most
    TARGET_WAIT_S: else they would fail closed) or, down to GAP_FLOOR_FPS, when this camera's
    searches came further apart than SEARCH_GAP_TARGET_S (`observe_search`; the newest-frame
    schedule only); it raises the rate again when both are comfortably inside. Frames over the
    rate are dropped at ingest, counted. Pure logic: the caller passes the clock."""

    def __init__(
        self, budget_s: float, *, min_fps: float = 0.25, start_fps: float = 12.0,
        high: float = 0.7, low: float = 0.6, period_s: float = 1.0,
        gap_target_s: float | None = None,
    ) -> None:
        self.budget_s = min(budget_s, TARGET_WAIT_S / high)
        self.min_fps = min_fps
        self.fps: float | None = start_fps  # None: every frame
        self.gap_target_s = gap_target_s
        self._high, self._low, self._period = high, low, period_s
        self._worst = 0.0
        self._seen = False  # an observation came in this period
        self._gaps: list[float] = []  # search gaps seen this period
        self._next_update: float | None = None
        self._next_due: float | None = None  # capture time from which the next frame is taken
        self._last_admitted: float | None = None  # capture timestamp of the last frame taken

    def admit(self, timestamp: float) -> bool:
        """Take this frame (by its capture timestamp, seconds)? Frames are taken on a schedule
        of one per 1/fps seconds (a tenth early counts as due, for jittery clocks); a late
        frame or a clock that went backwards (a restarted source) starts the schedule afresh."""
        if self.fps is None:
            return True
        interval = 1.0 / self.fps
        due, last = self._next_due, self._last_admitted
        backwards = last is not None and timestamp < last
        if due is not None and not backwards and timestamp < due - 0.1 * interval:
            return False
        on_time = due is not None and not backwards and timestamp - due <= interval
        self._next_due = (due if on_time and due is not None else timestamp) + interval
        self._last_admitted = timestamp
        return True

    def observe(self, waited_s: float, now: float, source_fps: float | None) -> None:
        """A frame was released after waiting `waited_s` since it was accepted, or the oldest
        frame held has been waiting that long."""
        self._worst = max(self._worst, waited_s)
        self._seen = True
        self._update(now, source_fps)

    def observe_search(self, gap_s: float) -> None:
        """A search came back for a frame captured `gap_s` after the camera's previous
        searched frame."""
        self._gaps.append(gap_s)

    def _update(self, now: float, source_fps: float | None) -> None:
        if self._next_update is None:
            self._next_update = now + self._period
            return
        if now < self._next_update:
            return
        worst, self._worst = self._worst, 0.0
        seen, self._seen = self._seen, False
        gaps, self._gaps = self._gaps, []
        self._next_update = now + self._period
        if not seen:  # nothing released or held: no news either way
            return
        ceiling = source_fps or 30.0
        current = self.fps if self.fps is not None else ceiling
        gap = sorted(gaps)[len(gaps) // 2] if gaps else None  # the period's median
        target = self.gap_target_s
        far_apart = target is not None and gap is not None and gap > target
        near_enough = target is None or gap is None or gap < 0.85 * target
        if worst > self._high * self.budget_s:
            self.fps = max(self.min_fps, current * 0.8)
        elif far_apart and current > GAP_FLOOR_FPS:
            self.fps = max(GAP_FLOOR_FPS, current * 0.9)
        elif worst < self._low * self._high * self.budget_s and (
            near_enough or current < GAP_FLOOR_FPS
        ):
            raised = current * 1.1 + 0.5
            if not near_enough:  # back up to the floor only, while searches are far apart
                raised = min(raised, GAP_FLOOR_FPS)
            self.fps = None if raised >= ceiling else raised


class EngineEvents(Protocol):
    """What the engine reports as it goes (counters, status, logs); called from its threads."""

    def detection(self, result: DetectionResult) -> None: ...

    def released(self, item: Released) -> None: ...

    def output_failed(self, name: str, error: Exception) -> None: ...


class Output:
    """One sink behind its own bounded queue and thread, so a slow output delays only itself.

    `leaky`: when the queue is full the oldest waiting frame is dropped (counted in
    `dropped`): snapshots and previews want the newest frame. Otherwise `put` waits for room:
    a recording keeps every frame, and a stalled one holds back the corridor, which then
    drops at ingest."""

    def __init__(
        self, name: str, sink: Sink, *, depth: int = 4, leaky: bool = False,
        on_error: Callable[[str, Exception], None] | None = None,
    ) -> None:
        self.name = name
        self.sink = sink
        self.leaky = leaky
        self.dropped = 0
        self._queue: queue.Queue[RedactedFrame | None] = queue.Queue(maxsize=depth)
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name=f"out-{name}", daemon=True)
        self.error: BaseException | None = None  # set when the sink failed (non-leaky: raised)

    def start(self) -> None:
        self.sink.start()
        self._thread.start()

    def put(self, frame: RedactedFrame) -> None:
        if self.leaky:
            while True:
                try:
                    self._queue.put_nowait(frame)
                    return
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        self._queue.put(frame)

    def close(self) -> None:
        """Write what is queued, then stop the sink (flushes and closes files)."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        try:
            while (frame := self._queue.get()) is not None:
                try:
                    self.sink.write(frame)
                except Exception as error:  # SinkError by contract; reported, never fatal
                    self.error = error
                    if self._on_error is not None:
                        self._on_error(self.name, error)
        finally:
            self.sink.stop()


_END = object()
_POLL_S = 0.05


class FrameEngine:
    """One stream's processing thread around a FrameProcessor, fed by `offer`, searched by a
    DetectionSeat, delivering to its Outputs.

    `offer` is called by the stream's reader thread; results arrive on the detector's thread;
    everything else happens on the engine's own thread. `end()` finishes the stream (the last
    frames searched and delivered, the outputs closed); `stop()` finishes it without waiting
    for detections still to come (frames not covered fail closed).
    """

    def __init__(
        self,
        name: str,
        processor_factory: Callable[
            [Callable[[Frame, float], None], DetectionSeat | None], FrameProcessor
        ],
        seat_factory: Callable[[Callable[[DetectionResult], None]], DetectionSeat | None],
        outputs: Sequence[Output],
        events: EngineEvents,
        *,
        motion: MotionMasker | None = None,
        source_fps: Callable[[], float | None] = lambda: None,
        capacity: int = 4,
    ) -> None:
        self.name = name
        self._inbox: queue.Queue[object] = queue.Queue()
        # Live: frames offered and not yet taken by the engine's thread (the frames it holds
        # are bounded by the budget). Files: frames anywhere in the engine, so a fast reader
        # waits for a slow detector instead of filling memory.
        self._room = threading.Semaphore(capacity)
        self._seat = seat_factory(self._result_arrived)
        self._processor = processor_factory(self._request, self._seat)
        self.settings = self._processor.settings
        self._outputs = list(outputs)
        self._events = events
        self._motion = motion
        self._source_fps = source_fps
        budget = self.settings.budget_s
        self.governor = (
            IngestGovernor(
                budget,
                gap_target_s=SEARCH_GAP_TARGET_S if self.settings.detect_every is None else None,
            )
            if self.settings.live and budget
            else None
        )
        self._last_searched: float | None = None  # capture time of the last frame searched
        # Until the first detection comes back (model loading, first inference) a camera
        # holds one frame only: the others would wait past the budget.
        self._warm = self.settings.motion_only or not self.settings.live
        self._stop = threading.Event()
        self._ended = False
        self.dropped = 0  # frames refused at ingest
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)

    @property
    def seat(self) -> DetectionSeat | None:
        return self._seat

    def start(self) -> None:
        for output in self._outputs:
            output.start()
        self._thread.start()

    def offer(self, frame: Frame) -> bool:
        """Hand a frame over. Live: False (and counted) when it is dropped at ingest, by the
        governor or because the engine is behind. Otherwise waits for room; False only
        when the engine stopped."""
        if self.settings.live:
            if not self._warm and self._processor.held_frames > 0:
                self.dropped += 1
                return False
            if self.governor is not None and not self.governor.admit(frame.timestamp):
                self.dropped += 1
                return False
            if not self._room.acquire(blocking=False):
                self.dropped += 1
                return False
        else:
            while not self._room.acquire(timeout=_POLL_S):
                if self._stop.is_set() or not self._thread.is_alive():
                    return False
        self._inbox.put((frame, time.monotonic()))
        return True

    def end(self) -> None:
        """End of stream: the thread finishes the frames it holds and closes the outputs."""
        if not self._ended:
            self._ended = True
            self._inbox.put(_END)

    def stop(self) -> None:
        self._stop.set()
        self.end()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def held_frames(self) -> int:
        return self._processor.held_frames

    @property
    def last_error(self) -> str:
        """Why the stream's last frame failed closed (a detector or redaction error, a late
        search), empty when none has."""
        return self._processor.last_error

    # ---- callbacks ----------------------------------------------------------------------

    def _request(self, frame: Frame, waiting_since: float) -> None:
        if self._seat is None:  # a stream without a detector fails closed, never unchecked
            self._inbox.put(DetectionResult(frame, None, "model_unavailable", "no detector"))
        else:
            self._seat.request(frame, waiting_since)

    def _result_arrived(self, result: DetectionResult) -> None:
        self._inbox.put(result)

    # ---- the engine's thread ------------------------------------------------------------

    def _run(self) -> None:
        processor = self._processor
        ending = False
        deadline: float | None = None
        try:
            while True:
                try:
                    item = self._inbox.get(timeout=_POLL_S)
                except queue.Empty:
                    item = None
                now = time.monotonic()
                if item is _END:
                    ending = True
                    self._deliver(processor.end_of_stream())
                    budget = self.settings.budget_s
                    deadline = None if budget is None else now + 2 * budget
                elif isinstance(item, DetectionResult):
                    self._warm = True
                    self._events.detection(item)
                    self._searched(item.frame.timestamp)
                    self._deliver(processor.add_result(item))
                elif isinstance(item, tuple):
                    frame, arrived = item
                    if self.settings.live:
                        self._room.release()
                    motion = self._motion.boxes(frame.image) if self._motion else None
                    self._deliver(processor.add_frame(frame, arrived, motion))
                self._deliver(processor.expire(now))
                oldest = processor.oldest_arrival
                if self.governor is not None and oldest is not None:
                    # Frames stuck waiting count too, before any of them is released.
                    self.governor.observe(now - oldest, now, self._source_fps())
                if ending and (
                    processor.settled
                    or self._stop.is_set()
                    or (deadline is not None and now > deadline)
                ):
                    break
            self._deliver(processor.finish())
        except BaseException as error:
            self.error = error
            log.exception("%s: processing failed", self.name)
        finally:
            if self._seat is not None:
                self._seat.close()
            for output in self._outputs:
                output.close()

    def _searched(self, timestamp: float) -> None:
        last, self._last_searched = self._last_searched, timestamp
        if self.governor is not None and last is not None and timestamp > last:
            self.governor.observe_search(timestamp - last)

    def _deliver(self, released: list[Released]) -> None:
        for item in released:
            if not self.settings.live:
                self._room.release()
            if item.redacted is not None:
                for output in self._outputs:
                    output.put(item.redacted)
            self._events.released(item)
            if self.governor is not None and item.reason in ("", "over_budget"):
                now = time.monotonic()
                self.governor.observe(now - item.arrived, now, self._source_fps())
