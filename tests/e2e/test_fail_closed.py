"""Fail closed: when detection raises, runs past its latency budget or has no model, frames
are withheld or fully masked, never passed on raw; the pipeline stays up, the frames are
counted in the metrics and the episode is logged once (not once per frame).

A detector that raises or stalls is a fault a real model cannot be made to produce on
demand, so those two are fakes; the missing model is real (an empty model cache)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from e2e_support import (
    camera_config,
    decoded_images,
    demo_camera,
    sample,
    status_of,
    stored_files,
    wait_until,
)

from edge.detectors.base import Detector
from edge.errors import DetectorError
from edge.pipeline import Pipeline
from edge.types import Detections

GREY_TOLERANCE = 8  # BGR -> yuv420p -> BGR rounding around the flat 128 grey of mask_all


class FaultyDetector(Detector):
    """Raises on its first `failures` calls (all calls by default), then delegates."""

    name = "faulty"

    def __init__(self, then: Detector | None = None, failures: int | None = None) -> None:
        self.then = then
        self.failures = failures
        self.calls = 0

    def detect(self, image: np.ndarray) -> Detections:
        self.calls += 1
        if self.failures is None or self.calls <= self.failures or self.then is None:
            raise DetectorError("injected fault: inference failed")
        return self.then.detect(image)


class SlowDetector(Detector):
    """A real detector that takes `delay_s` longer than it should."""

    name = "slow"

    def __init__(self, real: Detector, delay_s: float) -> None:
        self.real = real
        self.delay_s = delay_s

    def detect(self, image: np.ndarray) -> Detections:
        time.sleep(self.delay_s)
        return self.real.detect(image)


def assert_all_grey(files: list[Path]) -> int:
    frames = 0
    for path in files:
        for image in decoded_images(path):
            worst = int(np.abs(image.astype(np.int16) - 128).max())
            assert worst <= GREY_TOLERANCE, f"{path}: a frame is not fully masked ({worst})"
            frames += 1
    return frames


def episode_logs(caplog: pytest.LogCaptureFixture, reason: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "edge.pipeline" and f"({reason})" in r.getMessage()
    ]


@pytest.mark.parametrize("policy", ["withhold", "mask"])
def test_detector_error_fails_closed(tmp_path, running, caplog, policy) -> None:
    caplog.set_level(logging.INFO)
    config = camera_config(tmp_path, [demo_camera(fail_policy=policy)])
    pipeline = running(
        Pipeline(config, detector_factory=lambda settings, store: FaultyDetector())
    )
    counter = (
        "edgeblur_frames_withheld_total" if policy == "withhold"
        else "edgeblur_frames_fully_masked_total"
    )
    wait_until(
        lambda: sample(pipeline, counter, camera="demo", reason="detector_error") >= 10,
        30,
        "10 frames failed closed",
    )
    status = status_of(pipeline, "demo")
    assert status.state == "running"  # the camera and the pipeline keep going
    assert not status.ready
    assert "detector_error" in status.reason and "injected fault" in status.last_error
    assert status.frames_withheld >= 10
    assert status.faces_redacted == 0
    assert len(episode_logs(caplog, "detector_error")) == 1, "logged per frame, not per episode"
    snapshot = pipeline.snapshot_jpeg("demo")
    pipeline.stop()

    files = stored_files(config.storage.data_dir)
    if policy == "withhold":
        assert files == [], "a withheld frame was written"
        assert snapshot is None
    else:
        assert snapshot is not None
        assert assert_all_grey(files) >= 10
    (summary,) = episode_logs(caplog, "detector_error")[1:]
    assert "still going when the camera stopped" in summary


def test_episode_ends_when_the_detector_recovers(
    tmp_path, running, caplog, model_store
) -> None:
    from edge.detectors.registry import build_detector

    caplog.set_level(logging.INFO)
    config = camera_config(tmp_path, [demo_camera()])

    def flaky(settings, store):
        return FaultyDetector(then=build_detector(settings, store), failures=5)

    pipeline = running(Pipeline(config, detector_factory=flaky))
    wait_until(lambda: status_of(pipeline, "demo").ready, 30, "the camera to recover")
    # Each failed run fails its frame and those waiting on it: how many depends on timing.
    withheld = sample(
        pipeline, "edgeblur_frames_withheld_total", camera="demo", reason="detector_error"
    )
    assert withheld >= 1
    messages = episode_logs(caplog, "detector_error")
    assert len(messages) == 2, messages
    assert f"ended after {withheld:.0f} frames" in messages[1]
    assert status_of(pipeline, "demo").faces_redacted > 0


def test_missing_model_fails_closed(tmp_path, running) -> None:
    empty_cache = tmp_path / "models"
    empty_cache.mkdir()
    config = camera_config(
        tmp_path, [demo_camera(fail_policy="mask")], models={"cache_dir": str(empty_cache)}
    )
    pipeline = running(Pipeline(config))
    wait_until(
        lambda: sample(
            pipeline, "edgeblur_frames_fully_masked_total", camera="demo",
            reason="model_unavailable",
        ) >= 10,
        30,
        "10 frames fully masked",
    )
    status = status_of(pipeline, "demo")
    assert status.state == "failed"
    assert not status.ready
    assert "centerface" in status.reason, status.reason
    pipeline.stop()
    assert assert_all_grey(stored_files(config.storage.data_dir)) >= 10


def test_detection_over_budget_fails_closed(tmp_path, running, model_store) -> None:
    from edge.detectors.registry import build_detector

    config = camera_config(tmp_path, [demo_camera(latency_budget_ms=100)])
    pipeline = running(
        Pipeline(
            config,
            detector_factory=lambda s, store: SlowDetector(build_detector(s, store), 0.25),
        )
    )
    wait_until(
        lambda: sample(
            pipeline, "edgeblur_frames_withheld_total", camera="demo", reason="over_budget"
        ) >= 5
        and sample(pipeline, "edgeblur_detector_latency_seconds_count", camera="demo") >= 1,
        30,
        "5 frames withheld for lateness and a slow detection timed",
    )
    status = status_of(pipeline, "demo")
    assert not status.ready and "over_budget" in status.reason
    assert "latency budget" in status.last_error
    count = sample(pipeline, "edgeblur_detector_latency_seconds_count", camera="demo")
    total = sample(pipeline, "edgeblur_detector_latency_seconds_sum", camera="demo")
    assert count >= 1 and total >= 0.25 * count
    pipeline.stop()
    assert stored_files(config.storage.data_dir) == []
