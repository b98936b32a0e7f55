"""The live service end to end on a real camera stream: `edgeblur serve` with one RTSP camera
fed by a loopback RTSP server playing a clip (default: the 1080p walking crowd in ../shared),
the server killed and restarted mid-run, then every recorded segment audited with
`edgeblur verify`. Once with look-ahead off and once on.

    .venv/bin/python bench/rtsp_walking.py [--clip FILE] [--seconds S] [--lookahead D ...]
                                           [--out-dir DIR]

Per run it prints: seconds until /readyz first answered 200; delivered frames per second
(frames out over the time the camera was up); frames in, out, dropped (a newer frame replaced
one the detector had not taken) and withheld; seconds from the kill until /readyz answered
503 and from the restart until it answered 200 again; segments recorded; verify's verdict on
them (faces, findings to review, masked faces seen); and the leak check of
bench/video_leaks.py against the clip: each recorded frame is paired with the clip frame it
came from (the closest in the pixels no mask covers), the reference (CenterFace at 0.5) finds
the faces in that original, and a face is leaked when 30 % of its box came through unchanged.
The RTSP server plays the clip once per connection, so the camera also reconnects each time
the clip ends (4.2 s for the walking clip). Needs the GStreamer RTSP server packages of
.ci/run. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/rtsp_walking.py`

from bench._common import (
    DEFAULT_OUT,
    WALKING_CLIP,
    edgeblur_command,
    grey_copy,
    markdown_table,
    shared_clip,
)
from bench.video_leaks import REFERENCE_THRESHOLD, judge_faces, reference_detector
from edge.maskrule import masked_pixels
from edge.media import probe, read_frames
from tests.rtsp import RtspServer, free_port

READY_TIMEOUT_S = 120.0


@dataclass
class RunResult:
    lookahead: int
    ready_s: float
    fps: float
    counters: dict[str, int]
    to_503_s: float | None
    back_to_200_s: float | None
    segments: int
    verdict: str
    leaks: str


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def wait_for(port: int, status: int, timeout_s: float) -> float | None:
    """Seconds until /readyz answers `status`, or None after `timeout_s`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if readyz(port) == status:
            return time.monotonic() - start
        time.sleep(0.2)
    return None


def camera(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/cameras", timeout=5) as answer:
        (status,) = json.load(answer)
    return status


def dropped_frames(port: int) -> int:
    """edgeblur_frames_dropped_total of /metrics (the camera list does not carry it)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    match = re.search(r"^edgeblur_frames_dropped_total\{[^}]*\} (\S+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else -1


PAIRING_SIZE = (480, 270)  # frames are paired on grey copies this small


def leak_check(
    clip: Path, recordings: list[Path], loop_cut_s: float | None = None, turn_s: float | None = None
) -> str:
    """'leaked / face-frames' over every recorded frame, against the clip frame it came from.
    With `loop_cut_s` (a clip served looped), the leaks in the clip's first loop_cut_s seconds
    are also counted apart: at the loop's cut every face jumps to where it was at the start,
    which no real camera does. With `turn_s` (a clip served forwards then backwards), the leaks
    within turn_s of either end of the clip are counted apart: there everyone turns back on the
    spot, at walking speed."""
    originals = [frame.image for frame in read_frames(clip)]
    fps = probe(clip).fps
    cut_frames = 0 if loop_cut_s is None else round(loop_cut_s * fps)
    turn_frames = 0 if turn_s is None else round(turn_s * fps)
    at_cut = at_turns = 0

    def small(image: np.ndarray) -> np.ndarray:
        return grey_copy(image, PAIRING_SIZE).astype(np.int16)

    smalls = [small(image) for image in originals]
    detector = reference_detector(REFERENCE_THRESHOLD, None, 1)
    faces: dict[int, np.ndarray] = {}
    face_frames = leaked = 0
    for segment in recordings:
        for frame in read_frames(segment):
            unmasked = ~cv2.resize(
                masked_pixels(frame.image).view(np.uint8), PAIRING_SIZE,
                interpolation=cv2.INTER_NEAREST,
            ).astype(bool)
            if not unmasked.any():  # fully masked (failed closed): nothing to leak
                continue
            recorded = small(frame.image)
            distance = [np.abs(candidate - recorded)[unmasked].mean() for candidate in smalls]
            index = int(np.argmin(distance))
            if index not in faces:
                faces[index] = detector.detect(originals[index]).xyxy
            inside, leaked_faces = judge_faces(originals[index], frame.image, faces[index])
            face_frames += int(inside.sum())
            leaked += int(leaked_faces[inside].sum())
            if index < cut_frames:
                at_cut += int(leaked_faces[inside].sum())
            if index < turn_frames or index >= len(originals) - turn_frames:
                at_turns += int(leaked_faces[inside].sum())
    detector.close()
    counts = f"{leaked} / {face_frames}"
    if loop_cut_s is not None:
        counts += f" ({at_cut} at the loop's cut)"
    if turn_s is not None:
        counts += f" ({at_turns} at the turns)"
    return counts


def write_config(folder: Path, url: str, port: int, lookahead: int) -> Path:
    config = folder / "edgeblur.yaml"
    config.write_text(
        f"storage:\n  data_dir: {folder / 'data'}\n"
        f"service:\n  port: {port}\n"
        f"tracking:\n  lookahead_frames: {lookahead}\n"
        "cameras:\n"
        "  - id: walking\n"
        f"    source: {{type: rtsp, url: '{url}', read_timeout_s: 3, reconnect_max_s: 2}}\n"
        "    recording: {segment_s: 2}\n"
    )
    return config


def run_once(clip: Path, folder: Path, seconds: float, lookahead: int) -> RunResult:
    shutil.rmtree(folder, ignore_errors=True)  # verify must see this run's recordings only
    folder.mkdir(parents=True)
    port = free_port()
    server = RtspServer(clip)
    server.start()
    config = write_config(folder, server.url, port, lookahead)
    log = (folder / "serve.log").open("wb")
    service = subprocess.Popen(
        [*edgeblur_command(), "serve", "--config", str(config)], stdout=log, stderr=log
    )
    try:
        ready_s = wait_for(port, 200, READY_TIMEOUT_S)
        if ready_s is None:
            sys.exit(f"error: the service was not ready in {READY_TIMEOUT_S:g} s; see {log.name}")
        up_from, out_from = time.monotonic(), camera(port)["counters"]["frames_out"]
        time.sleep(seconds)
        fps = (camera(port)["counters"]["frames_out"] - out_from) / (time.monotonic() - up_from)
        server.stop()  # the camera loses power
        to_503_s = wait_for(port, 503, 30.0)
        server.start()
        back_to_200_s = wait_for(port, 200, 60.0)
        time.sleep(seconds / 2)
        counters = {**camera(port)["counters"], "dropped": dropped_frames(port)}
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=60)
        server.stop()
        log.close()
    recordings = folder / "data" / "recordings"
    segments = sorted(recordings.rglob("*.mp4"))
    audit = subprocess.run(
        [*edgeblur_command(), "verify", "--json", str(recordings)],
        capture_output=True,
        text=True,
        check=False,
    )
    (folder / "verify.json").write_text(audit.stdout)
    files = json.loads(audit.stdout)["files"] if audit.stdout else []
    faces = sum(len(f["faces"]) for f in files)
    review = sum(len(f["review"]) for f in files)
    masked = sum(f["masked_faces"] for f in files)
    checked = sum(f["frames_checked"] for f in files)
    verdict = (
        f"{'PASS' if audit.returncode == 0 else 'FAIL'}: {checked} frames, {faces} faces, "
        f"{review} to review, {masked} masked"
    )
    leaks = leak_check(clip, segments)
    return RunResult(
        lookahead, ready_s, fps, counters, to_503_s, back_to_200_s, len(segments), verdict, leaks
    )


def report(results: list[RunResult]) -> str:
    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.1f}"

    rows = [
        [
            result.lookahead,
            f"{result.ready_s:.1f}",
            f"{result.fps:.2f}",
            result.counters["frames_in"],
            result.counters["frames_out"],
            result.counters["dropped"],
            result.counters["frames_withheld"],
            seconds(result.to_503_s),
            seconds(result.back_to_200_s),
            result.segments,
            result.verdict,
            result.leaks,
        ]
        for result in results
    ]
    header = ["look-ahead", "ready s", "fps out", "in", "out", "dropped", "withheld", "kill->503 s",
              "restart->200 s", "segments", "verify", "leaked / face-frames"]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, help="video to serve (default: the walking clip)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="seconds to run before the kill (default %(default)s)")
    parser.add_argument("--lookahead", type=int, nargs="+", default=[0, 5], metavar="D",
                        help="look-ahead frames, one run each (default: 0 5)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT / "rtsp_walking",
                        help="configs, logs, recordings and verify reports")
    args = parser.parse_args(argv)
    clip = args.clip or shared_clip(WALKING_CLIP)
    print(f"clip: {clip}; {os.cpu_count()} CPUs", flush=True)
    results = [
        run_once(clip, args.out_dir / f"lookahead-{lookahead}", args.seconds, lookahead)
        for lookahead in args.lookahead
    ]
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
