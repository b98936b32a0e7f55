"""bench/live.py for a couple of seconds: one demo camera, and one camera over a real loopback
RTSP server playing a small clip of a face, looped by copying its packets. Each run's table
has every column and a sane row. No timing here: speed lives in bench/."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench import live
from bench._common import prepare_clip
from edge.media import read_frames
from tests.rtsp import SYSTEM_PYTHON, write_h264

SHORT_RUN = ["--cameras", "1", "--seconds", "2", "--warmup", "0.5"]


def table(printed: str, number: int = 0) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the `number`-th markdown table in `printed`."""
    tables = [
        [line for line in block.splitlines() if line.startswith("|")]
        for block in printed.split("\n\n")
    ]
    lines = [rows for rows in tables if rows][number]

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip("|").split("|")]

    return cells(lines[0]), [cells(line) for line in lines[2:]]


def gi_available() -> bool:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return False
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
        capture_output=True, check=False,
    )
    return probe.returncode == 0


def test_a_demo_camera_gets_a_row_of_every_measure(
    model_store, capsys: pytest.CaptureFixture[str]
) -> None:
    model_store.fetch("centerface")

    status = live.main([*SHORT_RUN, "--demo", "320x240"])

    header, rows = table(capsys.readouterr().out)
    assert status == 0
    assert header == live.HEADER
    [row] = rows
    values = dict(zip(header, row, strict=True))
    assert values["camera"] == "demo-1" and values["source"] == "demo 320x240"
    assert float(values["recorded fps"]) >= 0 and int(values["frames in"]) > 0
    assert int(values["dropped"]) >= 0 and int(values["withheld"]) >= 0
    assert values["leaked / face-frames"] == "-"  # no source clip to compare with
    # The run's process loaded the libraries and the model (about 280 MiB at 640x360).
    assert float(values["service RSS MiB"]) > 150


@pytest.mark.skipif(not gi_available(), reason=f"{SYSTEM_PYTHON} lacks GStreamer's gi bindings")
def test_an_rtsp_camera_and_its_stream_viewer_are_checked_for_faces_against_the_clip(
    model_store, astronaut_bgr: np.ndarray, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_store.fetch("centerface")
    face = cv2.resize(astronaut_bgr, (320, 320))
    images = [  # a little camera noise, so that the frames differ
        np.clip(face + np.random.default_rng(n).integers(-3, 4, face.shape), 0, 255)
        .astype(np.uint8)
        for n in range(25)
    ]
    clip = write_h264(tmp_path / "astronaut.mp4", images, fps=25)

    # The viewer connects at the warm-up's start: a loaded machine gets a second for it.
    status = live.main(["--cameras", "1", "--seconds", "2", "--warmup", "1.5", "--rtsp",
                        str(clip), "--out-dir", str(tmp_path), "--viewer"])

    printed = capsys.readouterr().out
    header, rows = table(printed)
    assert status == 0
    [row] = rows
    values = dict(zip(header, row, strict=True))
    assert values["camera"] == "rtsp-1" and values["source"] == "rtsp 320x320"
    assert float(values["recorded fps"]) >= 0 and int(values["frames in"]) > 0
    # Every frame recorded in the run (not only the measured window) is checked; the reference
    # finds the astronaut on each, and the service masked her on each.
    counts, _, at_turns = values["leaked / face-frames"].partition(" (")
    leaked, face_frames = (int(n) for n in counts.split(" / "))
    assert at_turns.endswith("at the turns)")  # played to and fro, where everyone turns back
    assert face_frames > 0 and leaked == 0
    # The viewer read the camera's stream with the token, and its frames were paired with the
    # recorded ones (capture times) and checked like the recording.
    header, [row] = table(printed, 1)
    assert header == live.VIEWER_HEADER
    viewer = dict(zip(header, row, strict=True))
    assert viewer["camera"] == "rtsp-1" and float(viewer["viewer fps"]) > 0
    assert int(viewer["frames paired"]) > 0 and 0 < float(viewer["p50 ms"]) < 10_000
    counts, _, _ = viewer["leaked / face-frames"].partition(" (")
    leaked, face_frames = (int(n) for n in counts.split(" / "))
    assert face_frames > 0 and leaked == 0


@pytest.mark.skipif(not gi_available(), reason=f"{SYSTEM_PYTHON} lacks GStreamer's gi bindings")
def test_a_file_camera_is_checked_for_faces_but_has_no_latency_to_tell(
    model_store, astronaut_bgr: np.ndarray, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_store.fetch("centerface")
    face = cv2.resize(astronaut_bgr, (320, 320))
    clip = write_h264(tmp_path / "astronaut.mp4", [face] * 25, fps=25)

    status = live.main(["--cameras", "1", "--seconds", "2", "--warmup", "1.5", "--file",
                        str(clip), "--out-dir", str(tmp_path), "--viewer"])

    printed = capsys.readouterr().out
    header, [row] = table(printed)
    assert status == 0
    values = dict(zip(header, row, strict=True))
    assert values["camera"] == "file-1" and values["source"] == "file 320x320"
    assert float(values["recorded fps"]) > 0
    # Its frames carry the file's time, not the clock: a latency from them would be nonsense.
    assert values["p50 ms"] == values["p95 ms"] == "-"
    counts, _, _ = values["leaked / face-frames"].partition(" (")
    leaked, face_frames = (int(n) for n in counts.split(" / "))
    assert face_frames > 0 and leaked == 0
    header, [row] = table(printed, 1)
    viewer = dict(zip(header, row, strict=True))
    assert float(viewer["viewer fps"]) > 0 and int(viewer["frames paired"]) > 0
    assert viewer["p50 ms"] == "-"


def test_each_viewed_frame_is_paired_with_the_recorded_frame_it_is() -> None:
    """Capture-to-viewer latency: a viewer joins at recorded frame 20, receives each frame
    0.3 s after its capture, a little changed by the codec, and misses frame 30."""
    rng = np.random.default_rng(7)
    thumbnails = [rng.integers(0, 256, (36, 64), np.uint8) for _ in range(50)]
    captured = [(0.04 * n, thumbnail) for n, thumbnail in enumerate(thumbnails)]
    viewed = [
        (0.04 * n + 0.3, np.clip(thumbnails[n] + rng.integers(-3, 4, (36, 64)), 0, 255))
        for n in range(20, 40) if n != 30
    ]

    latencies = live.capture_to_viewer(captured, viewed)

    assert len(latencies) == 19
    assert np.allclose(latencies, 0.3)
    assert live.capture_to_viewer(captured, []) == []


def test_a_looped_clip_is_the_clip_again_and_again(tmp_path: Path) -> None:
    images = [np.full((64, 96, 3), 10 * n, np.uint8) for n in range(10)]
    clip = write_h264(tmp_path / "ten.mp4", images, fps=25)  # 0.4 s

    looped = live.loop_clip(clip, tmp_path, 1.0)

    original = [frame.image for frame in read_frames(clip)]
    copies = [frame.image for frame in read_frames(looped)]
    assert len(copies) == 3 * len(original)
    assert all(np.array_equal(copy, original[n % 10]) for n, copy in enumerate(copies))
    assert live.loop_clip(clip, tmp_path, 1.0) == looped  # made once


def test_a_ping_pong_copy_plays_the_clip_forwards_then_backwards(tmp_path: Path) -> None:
    images = [np.full((64, 96, 3), 20 * n, np.uint8) for n in range(10)]
    clip = write_h264(tmp_path / "ten.mp4", images, fps=25)

    copy = prepare_clip(clip, tmp_path, ping_pong=True)

    original = [frame.image.mean() for frame in read_frames(clip)]
    levels = [frame.image.mean() for frame in read_frames(copy)]
    expected = [original[n] for n in [*range(10), *range(8, 0, -1)]]  # the turns shown once
    assert len(levels) == len(expected)
    assert all(abs(level - want) <= 2 for level, want in zip(levels, expected, strict=True))


def test_the_table_lines_up_with_its_header() -> None:
    camera = live.CameraResult(live.Camera("demo-1", "demo 320x240", {}), [40.0, 60.0, 90.0],
                               frames_in=75, dropped=3, withheld=0, detections=20)
    result = live.LiveResult(seconds=3.0, cameras=[camera], peak_rss_mib=300.0, threads=20,
                             cpu_busy=1.5)

    printed = live.report(result)

    header, rows = table(printed)
    assert header == live.HEADER
    assert rows == [["demo-1", "demo 320x240", "1.0", "60", "87", "90", "75", "3", "0", "6.7",
                     "-", "-", "300"]]
