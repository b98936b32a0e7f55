"""A camera that drops frames to keep real time is still recorded at real speed: the
recording's timestamps are the frames' capture times, so a gap stays a gap in playback and a
minute of camera plays for a minute whatever frame rate the box kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.media import read_frames
from edge.redact import Redactor
from edge.sinks.retention import SEGMENT_NAME, Retention
from edge.sinks.segments import SegmentRecorder
from edge.types import Detections, Frame

NOMINAL_FPS = 25.0
# Capture times of the frames the box kept (seconds): 25 fps, then a stretch at 10 fps, then
# a second without any frame, then 25 fps again.
KEPT = [i / 25 for i in range(10)] + [0.4 + i / 10 for i in range(10)] + [
    2.4 + i / 25 for i in range(10)
]


def test_a_recording_with_dropped_frames_plays_at_real_speed(tmp_path: Path) -> None:
    redactor = Redactor()
    recorder = SegmentRecorder(
        tmp_path, "cam", segment_s=60.0, fps=NOMINAL_FPS,
        retention=Retention(tmp_path, 3600.0, 10**9),
    )
    recorder.start()
    base = 1000.0  # monotonic capture clock of a camera: the recording starts at zero
    for index, seconds in enumerate(KEPT):
        image = np.full((48, 64, 3), 40 + 6 * index, np.uint8)
        recorder.write(redactor.redact(Frame(image, index, base + seconds), Detections.empty()))
    recorder.stop()

    (segment,) = [p for p in (tmp_path / "cam").glob("*.mp4") if SEGMENT_NAME.match(p.name)]
    played = [frame.timestamp for frame in read_frames(segment)]
    assert len(played) == len(KEPT)
    np.testing.assert_allclose(played, KEPT, atol=0.002)
