"""The engine's rules as pure logic (edge.engine.FrameProcessor, IngestGovernor) and the shared
detector's turns (edge.detectors.shared), with a fake detector: which frames get a detector
run, how a failure spreads to the frames it covered, what the second look covers, what happens
when time runs out and at end of stream."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge.detectors.base import Detector
from edge.detectors.shared import DetectionResult, SharedDetector
from edge.engine import (
    GAP_FLOOR_FPS,
    SEARCH_GAP_TARGET_S,
    FrameProcessor,
    IngestGovernor,
    Released,
    StreamSettings,
)
from edge.redact import RedactionConfig, Redactor
from edge.tracking.settings import TrackingConfig
from edge.types import Detections, Frame, RedactedFrame

FPS = 25.0
FACE = (40.0, 30.0, 80.0, 80.0)


def frame(i: int) -> Frame:
    return Frame(np.full((120, 160, 3), 200, np.uint8), i, i / FPS)


def found(*boxes: tuple[float, float, float, float]) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), 0.9))


class Stream:
    """A FrameProcessor with its requests recorded, fed frame by frame by the test."""

    def __init__(self, settings: StreamSettings, tracking: TrackingConfig | None = None,
                 look_again: bool = False) -> None:
        self.requested: list[Frame] = []
        self.second_looks: list[int] = []
        redactor = Redactor(RedactionConfig(second_look_threshold=None))

        def second(frame: Frame, boxes: Detections) -> RedactedFrame:
            self.second_looks.append(frame.index)
            return redactor.redact(frame, boxes)

        self.processor = FrameProcessor(
            settings, tracking or TrackingConfig(), redactor,
            lambda f, since: self.requested.append(f), second if look_again else None,
        )
        self.out: list[Released] = []
        self.frames: dict[int, Frame] = {}

    def add(self, i: int, arrived: float | None = None) -> None:
        self.frames[i] = frame(i)
        self.out += self.processor.add_frame(self.frames[i], i / FPS if arrived is None
                                             else arrived)

    def answer(self, failure: str = "") -> int:
        """Answer the oldest open request; returns its frame index."""
        target = self.requested.pop(0)
        if failure:
            result = DetectionResult(target, None, failure, "injected")
        else:
            result = DetectionResult(target, found(FACE))
        self.out += self.processor.add_result(result)
        return target.index

    def end(self) -> None:
        self.out += self.processor.end_of_stream()

    def finish(self) -> None:
        self.out += self.processor.finish()

    def reasons(self) -> dict[int, str]:
        return {r.index: r.reason for r in self.out}


FILE = StreamSettings(detect_every=3, budget_s=None, live=False, fail_policy="mask")
LOOKAHEAD_2 = TrackingConfig(lookahead_frames=2)
CAMERA = StreamSettings(detect_every=None, budget_s=0.5)


def test_file_schedule_searches_every_kth_frame_and_the_last_in_order() -> None:
    stream = Stream(FILE)
    searched = []
    for i in range(8):
        stream.add(i)
        while stream.requested:
            searched.append(stream.answer())
    stream.end()
    while stream.requested:
        searched.append(stream.answer())
    assert stream.processor.settled
    stream.finish()
    assert searched == [0, 3, 6, 7]
    assert [r.index for r in stream.out] == list(range(8))
    assert all(r.reason == "" and r.redacted is not None for r in stream.out)


def test_a_file_frame_waits_for_the_detection_after_it() -> None:
    stream = Stream(FILE, LOOKAHEAD_2)
    for i in range(3):
        stream.add(i)
    stream.answer()  # frame 0
    assert stream.out == []  # 0 waits for its look-ahead, 1 and 2 for the run on 3
    stream.add(3)
    stream.answer()  # frame 3
    assert [r.index for r in stream.out] == [0, 1]  # 2 needs two newer frames


def test_a_failed_run_fails_the_frames_it_covered_and_those_after_it_until_a_success() -> None:
    stream = Stream(FILE)
    failures = {3}
    for i in range(10):
        stream.add(i)
        while stream.requested:
            index = stream.requested[0].index
            stream.answer("detector_error" if index in failures else "")
    stream.end()
    while stream.requested:
        stream.answer()
    stream.finish()
    failed = {i for i, reason in stream.reasons().items() if reason}
    # Runs on 0, 3 (fails), 6, 9: frames 1-2 lean on it, 4-5 follow it, 6 succeeds.
    assert failed == {1, 2, 3, 4, 5}
    assert all(stream.reasons()[i] == "detector_error" for i in failed)
    assert all(r.redacted is not None for r in stream.out)  # fail_policy mask: fully masked
    assert all(r.redacted.record.fully_masked for r in stream.out if r.reason)


def test_camera_searches_the_newest_frame_whenever_the_detector_is_free() -> None:
    stream = Stream(CAMERA)
    stream.add(0)
    assert [f.index for f in stream.requested] == [0]
    for i in (1, 2, 3):
        stream.add(i)  # each new frame replaces a request not yet started
    assert [f.index for f in stream.requested][-1] == 3
    stream.requested = [stream.frames[0], stream.frames[3]]  # 0 ran, then 3 was taken
    stream.answer()
    assert [r.index for r in stream.out] == [0]
    stream.answer()
    assert [r.index for r in stream.out] == [0, 1, 2, 3]
    assert set(stream.reasons().values()) == {""}


def test_a_camera_searching_the_newest_frame_releases_frames_without_lookahead_frames() -> None:
    """A config with `lookahead_frames` (set for a fixed schedule) does not make a camera's
    frames also wait for that many newer frames: a camera taking few frames (its governor cut
    the rate after an outage) would wait seconds for them, fail closed over budget, and so
    keep the rate cut (a camera restarted under bench/rtsp_walking.py took 55 s to recover)."""
    stream = Stream(CAMERA, TrackingConfig(lookahead_frames=5))
    stream.add(0)
    stream.add(1)
    stream.requested = [stream.frames[0], stream.frames[1]]
    stream.answer()
    stream.answer()
    assert [r.index for r in stream.out] == [0, 1]
    assert set(stream.reasons().values()) == {""}


def test_camera_frames_not_checked_within_the_budget_fail_closed_until_a_new_detection(
) -> None:
    stream = Stream(CAMERA)
    stream.add(0, arrived=0.0)
    stream.answer()
    for i in range(1, 5):
        stream.add(i, arrived=i * 0.1)
    stream.out += stream.processor.expire(now=0.75)  # frames 1-2 waited over 0.5 s
    assert stream.reasons() == {0: "", 1: "over_budget", 2: "over_budget"}
    # The detection of frame 4 comes in: frame 3 cannot lean on the run before frame 1.
    stream.requested = [stream.frames[4]]
    stream.answer()
    assert stream.reasons() == {0: "", 1: "over_budget", 2: "over_budget",
                                3: "over_budget", 4: ""}
    assert all(r.redacted is None for r in stream.out if r.reason)  # withheld by default


def test_a_camera_searching_every_frame_skips_the_frames_whose_time_is_up() -> None:
    stream = Stream(StreamSettings(detect_every=1, budget_s=0.5))
    for i in range(4):
        stream.add(i, arrived=i * 0.1)
    assert [f.index for f in stream.requested] == [0]  # one search at a time, in order
    stream.out += stream.processor.expire(now=0.65)  # frames 0 and 1 waited too long
    assert stream.answer() == 0  # its search had started: the result is ignored
    assert [f.index for f in stream.requested] == [2]  # frame 1 is not searched
    stream.answer()
    stream.answer()
    assert stream.reasons() == {0: "over_budget", 1: "over_budget", 2: "", 3: ""}


def test_a_late_result_for_a_frame_already_failed_is_ignored() -> None:
    stream = Stream(CAMERA)
    stream.add(0, arrived=0.0)
    stream.add(1, arrived=0.0)
    stream.out += stream.processor.expire(now=1.0)
    assert stream.reasons() == {0: "over_budget", 1: "over_budget"}
    stream.requested = [stream.frames[0]]
    stream.answer()
    assert len(stream.out) == 2


def test_end_of_stream_searches_the_last_frame_or_fails_the_rest_closed() -> None:
    stream = Stream(FILE)
    for i in range(5):
        stream.add(i)
    stream.answer()  # frame 0; frame 3 is requested next
    stream.end()
    assert not stream.processor.settled
    stream.answer()  # frame 3
    assert [f.index for f in stream.requested] == [4]  # the last frame
    stream.finish()  # no answer for it: the frames it would have covered fail closed
    assert stream.reasons() == {0: "", 1: "", 2: "", 3: "", 4: "end_of_stream"}


def test_the_second_look_runs_on_the_searched_frames_only() -> None:
    stream = Stream(FILE, look_again=True)
    for i in range(7):
        stream.add(i)
        while stream.requested:
            stream.answer()
    stream.end()
    stream.finish()
    assert stream.second_looks == [0, 3, 6]


def test_motion_only_releases_each_frame_at_once() -> None:
    stream = Stream(StreamSettings(motion_only=True))
    stream.add(0)
    assert [r.index for r in stream.out] == [0] and stream.requested == []


def test_every_frame_comes_out_once_in_order_whatever_fails() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        stream = Stream(StreamSettings(detect_every=None, budget_s=0.3))
        now = 0.0
        for i in range(60):
            now += 0.04
            stream.add(i, arrived=now)
            if stream.requested and rng.random() < 0.4:
                stream.requested = stream.requested[-1:]
                stream.answer("detector_error" if rng.random() < 0.2 else "")
            stream.out += stream.processor.expire(now)
        stream.end()
        if stream.requested:
            stream.requested = stream.requested[-1:]
            stream.answer()
        stream.finish()
        assert [r.index for r in stream.out] == list(range(60))


def test_governor_lowers_the_rate_when_frames_wait_too_long_and_raises_it_again() -> None:
    governor = IngestGovernor(1.0, start_fps=20.0)
    now = 0.0
    for _ in range(3):
        for _ in range(10):
            now += 0.11
            governor.observe(0.9, now, 25.0)  # over 0.7 x budget
    assert governor.fps is not None and governor.fps < 20.0 * 0.8
    low = governor.fps
    for _ in range(40):
        for _ in range(10):
            now += 0.11
            governor.observe(0.1, now, 25.0)
    assert governor.fps is None or governor.fps > low  # back up to every frame
    assert governor.fps is None


def feed_governor(
    governor: IngestGovernor, now: float, seconds: int, waited: float, gap: float | None
) -> float:
    """`seconds` periods of ten released frames that each waited `waited`, and (unless None)
    searches `gap` apart; returns the clock."""
    for _ in range(seconds):
        for _ in range(10):
            now += 0.11
            if gap is not None:
                governor.observe_search(gap)
            governor.observe(waited, now, 25.0)
    return now


def test_governor_takes_fewer_frames_while_searches_come_far_apart_down_to_the_floor() -> None:
    governor = IngestGovernor(3.0, start_fps=20.0, gap_target_s=SEARCH_GAP_TARGET_S)
    now = feed_governor(governor, 0.0, 3, 0.5, SEARCH_GAP_TARGET_S * 1.5)
    assert governor.fps is not None and governor.fps < 20.0 * 0.9
    now = feed_governor(governor, now, 40, 0.5, SEARCH_GAP_TARGET_S * 1.5)
    assert governor.fps == GAP_FLOOR_FPS  # fewer frames would fail the recording
    # Searches close together again: the rate goes back up.
    feed_governor(governor, now, 40, 0.3, SEARCH_GAP_TARGET_S * 0.5)
    assert governor.fps is None


def test_governor_goes_below_the_floor_only_to_keep_frames_within_the_budget() -> None:
    governor = IngestGovernor(3.0, start_fps=8.0, gap_target_s=SEARCH_GAP_TARGET_S)
    feed_governor(governor, 0.0, 20, 2.9, SEARCH_GAP_TARGET_S * 0.5)
    assert governor.fps is not None and governor.fps < GAP_FLOOR_FPS


def test_governor_below_the_floor_comes_back_to_it_once_frames_wait_less() -> None:
    governor = IngestGovernor(3.0, start_fps=2.0, gap_target_s=SEARCH_GAP_TARGET_S)
    feed_governor(governor, 0.0, 30, 0.5, SEARCH_GAP_TARGET_S * 2)  # far apart, short waits
    assert governor.fps == GAP_FLOOR_FPS


def test_governor_without_a_gap_target_ignores_search_gaps() -> None:
    """A fixed every-k schedule: searches come further apart with fewer frames, so the gap
    must not lower the rate."""
    governor = IngestGovernor(3.0, start_fps=8.0)
    feed_governor(governor, 0.0, 10, 0.3, 5.0)
    assert governor.fps is None or governor.fps > 8.0


def test_governor_admits_frames_at_its_rate() -> None:
    governor = IngestGovernor(1.0, start_fps=10.0)
    admitted = sum(governor.admit(i / 25.0) for i in range(250))  # 10 s at 25 fps
    assert 95 <= admitted <= 130
    governor.fps = None
    assert all(governor.admit(10 + i / 25.0) for i in range(25))


class CountingDetector(Detector):
    name = "counting"

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.seen: list[int] = []

    def detect(self, image: np.ndarray) -> Detections:
        if self.gate is not None:
            self.gate.wait(5)
        self.seen.append(int(image[0, 0, 0]))
        return found(FACE)


class Settings:
    type = "counting"

    def __init__(self, key: str = "a") -> None:
        self.key = key

    def model_dump_json(self) -> str:
        return self.key


def tagged(tag: int) -> Frame:
    return Frame(np.full((8, 8, 3), tag, np.uint8), tag, tag / FPS)


def test_shared_detector_takes_turns_by_waiting_time_with_one_model() -> None:
    gate = threading.Event()
    detector = CountingDetector(gate)
    built = []

    def factory(settings, store):  # type: ignore[no-untyped-def]
        built.append(settings.key)
        return detector

    shared = SharedDetector(factory, None)
    results: dict[str, list[DetectionResult]] = {"a": [], "b": []}
    done = threading.Semaphore(0)

    def on(name: str):  # type: ignore[no-untyped-def]
        def record(result: DetectionResult) -> None:
            results[name].append(result)
            done.release()
        return record

    first = shared.seat("a", Settings(), on("a"))
    second = shared.seat("b", Settings(), on("b"))
    first.request(tagged(1), waiting_since=0.0)  # taken at once, held at the gate
    time.sleep(0.2)
    second.request(tagged(2), waiting_since=5.0)
    first.request(tagged(3), waiting_since=1.0)  # waited longer than b's: goes first
    first.request(tagged(4), waiting_since=1.0)  # replaces 3, which never started
    gate.set()
    for _ in range(3):
        assert done.acquire(timeout=10)
    assert detector.seen == [1, 4, 2]
    assert built == ["a"], "one model for both seats of one config"
    assert [r.frame.index for r in results["a"]] == [1, 4]
    first.close()
    second.close()
    shared.close()


def test_shared_detector_loads_a_seats_model_before_any_request() -> None:
    built: list[str] = []

    def factory(settings, store):  # type: ignore[no-untyped-def]
        built.append(settings.key)
        if settings.key == "missing":
            raise FileNotFoundError("model file missing")
        return CountingDetector()

    shared = SharedDetector(factory, None)
    seats = [shared.seat(key, Settings(key), lambda result: None) for key in ("a", "missing")]
    assert all(seat.wait_for_model(10) for seat in seats)
    assert sorted(built) == ["a", "missing"]
    assert [seat.status() for seat in seats] == [(True, ""), (False, "model file missing")]
    for seat in seats:
        seat.close()
    shared.close()


def test_shared_detector_reports_a_missing_model_and_a_failing_detector() -> None:
    class Broken(Detector):
        name = "broken"

        def detect(self, image: np.ndarray) -> Detections:
            raise RuntimeError("inference failed")

    def factory(settings, store):  # type: ignore[no-untyped-def]
        if settings.key == "missing":
            raise FileNotFoundError("model file missing: run edgeblur models fetch")
        return Broken()

    shared = SharedDetector(factory, None)
    got: list[DetectionResult] = []
    done = threading.Semaphore(0)

    def record(result: DetectionResult) -> None:
        got.append(result)
        done.release()

    missing = shared.seat("m", Settings("missing"), record)
    broken = shared.seat("b", Settings("broken"), record)
    missing.request(tagged(1))
    assert done.acquire(timeout=10)
    broken.request(tagged(2))
    assert done.acquire(timeout=10)
    assert [(r.failure, r.detections) for r in got] == [
        ("model_unavailable", None), ("detector_error", None)
    ]
    assert "models fetch" in got[0].error and "inference failed" in got[1].error
    assert missing.status() == (False, got[0].error)
    with pytest.raises(RuntimeError, match="inference failed"):
        broken.detect_now(tagged(3).image)
    for seat in (missing, broken):
        seat.close()
    shared.close()
