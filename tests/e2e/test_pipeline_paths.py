"""The pipeline's other paths, end to end: a camera opens once its model has loaded; frames
beside a failed detection fail closed and an unpaced source loses no frame; a file that ends
stops its camera and a missing one fails it without touching the others; motion privacy mode
needs no model; a full disk stops recording, not the camera."""

from __future__ import annotations

import time

import numpy as np
from e2e_support import (
    camera_config,
    demo_camera,
    sample,
    status_of,
    stored_files,
    wait_until,
)

from edge.detectors.base import Detector
from edge.errors import DetectorError
from edge.media import probe, read_frames
from edge.pipeline import Pipeline
from edge.types import Detections


class FailsOnCall(Detector):
    """A real detector, except that its `bad_call`-th call raises (a fault no real model can
    be made to produce on demand)."""

    name = "fails-on-call"

    def __init__(self, real: Detector, bad_call: int) -> None:
        self.real = real
        self.bad_call = bad_call
        self.calls = 0

    def detect(self, image: np.ndarray) -> Detections:
        self.calls += 1
        if self.calls == self.bad_call:
            raise DetectorError(f"injected fault on call {self.calls}")
        return self.real.detect(image)


def test_a_camera_opens_once_its_model_has_loaded(tmp_path, running) -> None:
    """The model takes 2 s to load (slowed here: a real load's length cannot be chosen).
    Opened first, the camera held its first frame for the whole load, dropped every frame
    after it meanwhile, and recorded a 2 s gap after its first frame."""
    from edge.detectors.registry import build_detector

    load_s = 2.0

    def slow_to_load(settings, store):  # type: ignore[no-untyped-def]
        time.sleep(load_s)
        return build_detector(settings, store)

    config = camera_config(tmp_path, [demo_camera()])
    pipeline = running(Pipeline(config, detector_factory=slow_to_load))
    wait_until(lambda: status_of(pipeline, "demo").frames_out >= 10, 60, "10 frames out")
    pipeline.stop()
    first_segment = min(p for p in stored_files(config.storage.data_dir) if p.suffix == ".mp4")
    frames = read_frames(first_segment)
    times = [next(frames).timestamp, next(frames).timestamp]
    frames.close()
    assert times[1] - times[0] < load_s / 2, times


def test_frames_beside_a_failed_detection_fail_closed_and_none_is_lost(
    tmp_path, running
) -> None:
    """An unpaced camera (every frame kept): the detector's 4th call fails. The frames that
    lean on it are withheld (how many depends on which frames the schedule searched: the rule
    itself is tested as pure logic in tests/unit/test_engine.py), the camera recovers, and
    every frame read is delivered or withheld: none dropped, none passed on unchecked."""
    from edge.detectors.registry import build_detector

    config = camera_config(
        tmp_path,
        [demo_camera(source={"type": "demo", "width": 320, "height": 180, "realtime": False})],
    )
    pipeline = running(
        Pipeline(
            config,
            detector_factory=lambda s, store: FailsOnCall(build_detector(s, store), bad_call=4),
        )
    )
    wait_until(
        lambda: sample(
            pipeline, "edgeblur_frames_withheld_total", camera="demo", reason="detector_error"
        ) >= 1,
        60,
        "frames withheld beside the failed detection",
    )
    wait_until(lambda: status_of(pipeline, "demo").ready, 60, "the camera to recover")
    worker = pipeline.worker("demo")
    assert worker is not None
    pipeline.stop()
    assert worker.frames_dropped == 0
    assert worker.frames_in == worker.frames_out + worker.frames_withheld
    assert worker.frames_withheld == sample(
        pipeline, "edgeblur_frames_withheld_total", camera="demo", reason="detector_error"
    )


def test_file_end_stops_and_missing_file_fails_only_its_camera(
    tmp_path, running, face_video
) -> None:
    config = camera_config(
        tmp_path,
        [
            {
                "id": "once",
                "source": {"type": "file", "path": str(face_video), "realtime": False},
                "recording": {"segment_s": 1.0},
            },
            {"id": "missing", "source": {"type": "file", "path": str(tmp_path / "nope.mp4")}},
        ],
    )
    pipeline = running(Pipeline(config))
    wait_until(lambda: status_of(pipeline, "missing").state == "failed", 20, "missing failed")
    missing = status_of(pipeline, "missing")
    assert "nope.mp4" in missing.last_error and not missing.ready
    wait_until(lambda: status_of(pipeline, "once").state == "stopped", 120, "the file to end")
    once = status_of(pipeline, "once")
    # Read for every frame (not paced): each one was processed and recorded, none dropped.
    assert once.frames_in == once.frames_out == probe(face_video).frames
    assert not once.ready and once.faces_redacted > 0


def test_motion_only_mode_needs_no_model(tmp_path, running) -> None:
    empty_cache = tmp_path / "models"
    empty_cache.mkdir()
    config = camera_config(
        tmp_path,
        [demo_camera(motion={"mode": "only"})],
        models={"cache_dir": str(empty_cache)},
    )
    pipeline = running(Pipeline(config))
    wait_until(lambda: status_of(pipeline, "demo").ready, 30, "the motion-only camera ready")
    assert status_of(pipeline, "demo").faces_redacted > 0  # moving regions were masked
    assert sample(pipeline, "edgeblur_detector_latency_seconds_count", camera="demo") == 0


def test_a_full_disk_stops_recording_not_the_camera(tiny_disk, running) -> None:
    """On a real 512 KiB tmpfs: the recorder stops at the full disk and says so in the status;
    redacted frames still reach the preview and snapshot, so the camera stays ready."""
    pipeline = running(Pipeline(camera_config(tiny_disk, [demo_camera("demo")])))
    wait_until(lambda: status_of(pipeline, "demo").recording == "disk_full", 60, "a full disk")
    status = status_of(pipeline, "demo")
    assert "disk full" in status.last_error
    wait_until(
        lambda: status_of(pipeline, "demo").frames_out > status.frames_out + 3,
        30,
        "frames delivered after the disk filled",
    )
    assert status_of(pipeline, "demo").ready
