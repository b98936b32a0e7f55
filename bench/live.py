"""Live cameras in real time: N cameras in one camera service (edge.pipeline.Pipeline, the
engine behind `edgeblur serve`), fed by loopback RTSP servers playing a clip or by demo
cameras, at product defaults, recording on.

    .venv/bin/python bench/live.py [--rtsp [CLIP] | --file [CLIP]] [--height H] | --demo WxH]
                                   [--cameras N]
                                   [--seconds S] [--warmup S] [--config FILE] [--verify]
                                   [--viewer] [--cut] [--out-dir DIR] [--recordings DIR]

Cameras: `--rtsp` (the default) gives each camera its own loopback RTSP server
(tests/rtsp.py: GStreamer's, H.264 passed through) playing CLIP, by default the shared 1080p
walking crowd; `--height 720` plays a copy scaled to 720 rows. The server plays a file once
per connection, so it plays a looped copy long enough for the run, kept in --out-dir: the
clip played forwards then backwards (re-encoded at high quality, bench._common.prepare_clip),
so that the picture never jumps and everyone walks back the way they came; with `--cut`, the
clip itself repeated (its packets copied), cutting back to its start at every loop, where
every face jumps, which no real camera does. `--file` gives file cameras instead (edgeblur's
`file` source, looped, paced in real time) playing the same, with no RTSP between: their frames
carry the file's time, not the clock, so no latency is reported for them. `--demo WxH` gives
demo cameras (synthetic faces, paced at 25 fps in real time).

All cameras run in one Pipeline, in a fresh process (bench._common.in_fresh_process), so its
peak RSS is the service's: one shared detector, its models, every camera's decoder, engine
and recorder. Once every camera has started (recorded a frame, or run its detector: one that
fails closed throughout is a result, 0 fps and its frames withheld) and after a warm-up, S
seconds are measured. Per camera: recorded fps (frames handed to the recording in the window
/ window), capture-to-recorded latency p50 / p95 / max (when the recording sink is handed the
frame, minus the frame's capture time: the arrival time of an RTSP frame, the due time of a
demo frame), frames in (read from the camera), dropped (frames the camera sent that the
reader replaced with a newer one, plus frames the engine refused at ingest: it can exceed
frames in), withheld (failed closed) and detector runs per second. For the service: peak
RSS, threads, CPU time per second of the window.

Then each RTSP camera's recording is checked for visible faces against the clip it was
served (bench/rtsp_walking.leak_check: each recorded frame is paired with the clip frame it
came from, the reference detector finds the faces there, a face is leaked when 30 % of its
box came through unchanged), printed as "leaked / face-frames", with how many of those lie
within a quarter second of the clip's ends, where everyone turns back on the spot at walking
speed, which nobody does (with `--cut`: in the clip's first half second, just after the cut).
`--verify` also audits the recordings with `edgeblur verify --json`, PASS or FAIL per camera.

`--viewer` also reads each camera's anonymised stream (served on a free loopback port, with a
token) from the warm-up on, as a recorder would: one RTSP client per camera over TCP, in a
process of its own, copying the packets it receives. Per viewer: frames received per second in
the window and per frame recorded, capture-to-viewer latency (each received frame paired with
the recorded frame it is, whose capture time the recording saw), and its frames checked for
visible faces like the recordings.

The detector, redaction and tracking sections of an edgeblur config replace the defaults with
`--config FILE`. Pin it with `taskset -c 0 .venv/bin/python bench/live.py ...`; the table says
how many CPUs the run could use. Run it on a quiet machine: other load changes the numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/live.py`

from bench._common import (
    DEFAULT_OUT,
    WALKING_CLIP,
    edgeblur_command,
    grey_copy,
    in_fresh_process,
    markdown_table,
    prepare_clip,
    resolution,
    shared_clip,
)

if TYPE_CHECKING:  # imported where used, in the run's own process
    from edge.pipeline import CameraWorker
    from edge.types import RedactedFrame

FPS = 25.0  # demo cameras' frame rate; the walking clip's too
FIRST_FRAME_TIMEOUT_S = 180.0  # model load on a slow board, with every camera starting
LOOP_MARGIN_S = 60.0  # looped clips last the run plus this (start-up, warm-up, stopping)
LOOP_CUT_S = 0.5  # leaks in this much of the clip after its loop point are also counted apart
TURN_S = 0.25  # played to and fro, leaks this near either end of the clip are counted apart
STREAM_TOKEN = "live-bench-stream-token"  # --viewer: the service's token, the viewers' password
THUMBNAIL = (64, 36)  # grey copies that tell recorded frames apart, to pair a viewer's with
PAIRING_RUN = 25  # viewed frames compared as one run, to find where in the recording it joined
PAIRING_REACH = 8  # then each viewed frame is one of the next this many recorded ones


# ---- the looped clip (this process) ------------------------------------------------------


def loop_clip(source: Path, out_dir: Path, min_seconds: float) -> Path:
    """`source` repeated until it lasts at least `min_seconds`, its packets copied (not
    re-encoded), so that looped frame i is exactly source frame i % n. Each repeat starts at
    the source's first keyframe, which must be its first frame (true of what prepare_clip and
    x264 write, and of the shared clips). A copy already made is reused."""
    import av

    with av.open(str(source)) as probe:
        stream = probe.streams.video[0]
        rate, time_base = stream.average_rate or stream.guessed_rate, stream.time_base
        if not rate or not time_base:
            sys.exit(f"error: {source}: cannot tell its frame rate, to loop it")
        keyframes = [packet.is_keyframe for packet in probe.demux(stream) if packet.size]
        if not keyframes or not keyframes[0]:
            sys.exit(f"error: {source}: its first frame is not a keyframe, so it cannot loop")
        frames = len(keyframes)
        period = round(frames / (rate * time_base))  # the clip's length in time_base ticks
        length_s = float(period * time_base)
    repeats = max(1, math.ceil(min_seconds / length_s))
    target = out_dir / f"{source.stem}_x{repeats}.mp4"
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    from edge.media import atomic_output

    with atomic_output(target) as tmp, av.open(str(source)) as inp:
        stream = inp.streams.video[0]
        with av.open(str(tmp), mode="w", format="mp4") as out:
            copy = out.add_stream_from_template(stream)
            for repeat in range(repeats):
                inp.seek(0, stream=stream)
                for packet in inp.demux(stream):
                    if not packet.size:
                        continue
                    if packet.pts is not None:
                        packet.pts += repeat * period
                    if packet.dts is not None:
                        packet.dts += repeat * period
                    packet.stream = copy
                    out.mux(packet)
    return target


# ---- the run (a fresh process) -----------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    id: str
    label: str  # e.g. "rtsp 1920x1080"
    source: dict[str, Any]  # its edgeblur source section
    file_time: bool = False  # frames carry the file's time, not the monotonic clock


@dataclass
class ViewerResult:
    """What one RTSP viewer of a camera's anonymised stream received."""

    frames: int  # frames received in the measured window
    latencies_ms: list[float]  # capture to the viewer, each frame paired in the window
    recording: Path  # the received packets, as they came (Matroska)
    leaks: str = "-"


@dataclass
class CameraResult:
    camera: Camera
    latencies_ms: list[float]  # one per frame recorded in the window
    frames_in: int
    dropped: int
    withheld: int
    detections: int
    leaks: str = "-"
    verify: str = "-"
    viewer: ViewerResult | None = None


@dataclass
class LiveResult:
    seconds: float  # the measured window
    cameras: list[CameraResult]
    peak_rss_mib: float  # of the process that ran the service, from start to stop
    threads: int  # of that process at the end of the window, native ones included
    cpu_busy: float  # its CPU seconds per second of the window (2.0: two cores busy)


class RecordingLog:
    """Frames handed to one camera's recording: (monotonic time, latency s), appended by the
    recording's thread, read by the main one. With `thumbnails`, also each frame's capture
    time and a small grey copy, to tell which recorded frame a stream viewer received."""

    def __init__(self, thumbnails: bool = False, file_time: bool = False) -> None:
        self._lock = threading.Lock()
        self.file_time = file_time  # then no latency: NaN
        self._writes: list[tuple[float, float]] = []
        self.first = threading.Event()
        self.thumbnails = thumbnails
        self.captured: list[tuple[float, Any]] = []  # (capture time, thumbnail)

    def record(self, frame: RedactedFrame) -> None:
        now = time.monotonic()
        thumbnail = grey_copy(frame.image, THUMBNAIL) if self.thumbnails else None
        with self._lock:
            self._writes.append((now, math.nan if self.file_time else now - frame.timestamp))
            if thumbnail is not None:
                self.captured.append((frame.timestamp, thumbnail))
        self.first.set()

    def latencies_between(self, start: float, end: float) -> list[float]:
        """Latencies of the frames recorded in [start, end), milliseconds."""
        with self._lock:
            return [1000 * latency for at, latency in self._writes if start <= at < end]


# A viewer of a camera's stream, in a process of its own (its work is not the edge box's): it
# copies the packets it receives, from the first keyframe, into a Matroska file (no decoding)
# and notes when each arrived (CLOCK_MONOTONIC, the same clock the service's frames carry).
VIEWER = r"""
import json, sys, time, av
url, until, path, times_path = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
times = []
# Little probing: FFmpeg otherwise reads seconds of packets (20 frames to guess the frame rate)
# before the first is returned, and they would all count as arriving then.
options = {"rtsp_transport": "tcp", "analyzeduration": "200000", "probesize": "65536"}
try:
    # A camera's stream is mounted with its first anonymised frame: until then 404, and a
    # recorder tries again (an overloaded box may withhold a camera's first frames for seconds).
    while True:
        try:
            source = av.open(url, options=options, timeout=30)
            break
        except av.error.HTTPNotFoundError:
            if time.monotonic() >= until:
                raise
            time.sleep(0.5)
    with source, av.open(path, "w", format="matroska") as out:
        stream = source.streams.video[0]
        copy = out.add_stream_from_template(stream)
        for packet in source.demux(stream):
            now = time.monotonic()
            if packet.dts is None or not packet.size or not (times or packet.is_keyframe):
                continue
            times.append(now)
            packet.stream = copy
            out.mux(packet)
            if now >= until:
                break
finally:
    with open(times_path, "w") as file:
        json.dump(times, file)
"""


def capture_to_viewer(
    captured: list[tuple[float, Any]], viewed: list[tuple[float, Any]]
) -> list[float]:
    """Seconds from capture to arrival of each viewed frame, (arrival time, thumbnail), paired
    with the recorded frame it is, `captured` (capture time, thumbnail) in recording order.

    The stream carries the recording's packets, so a viewer sees the recorded frames in order
    from where it joined: that is the offset (before the first arrival) whose next PAIRING_RUN
    frames look most like the first viewed ones; after it each viewed frame is the next
    recorded one, or a few later where the viewer's output dropped packets."""
    import numpy as np

    if not captured or not viewed:
        return []
    recorded = np.stack([thumbnail for _, thumbnail in captured]).astype(np.int16)
    seen = np.stack([thumbnail for _, thumbnail in viewed]).astype(np.int16)
    run = min(PAIRING_RUN, len(seen))
    costs = [
        float(np.abs(recorded[offset:offset + run] - seen[:run]).mean())
        for offset in range(len(recorded) - run + 1)
        if captured[offset][0] <= viewed[0][0]
    ]
    if not costs:
        return []
    index = int(np.argmin(costs))
    latencies = []
    for (arrived, _), thumbnail in zip(viewed, seen, strict=True):
        ahead = recorded[index:index + PAIRING_REACH]
        if not len(ahead):
            break
        index += int(np.argmin(np.abs(ahead - thumbnail).mean(axis=(1, 2))))
        latencies.append(arrived - captured[index][0])
        index += 1
    return latencies


def _start_viewer(url: str, until: float, folder: Path, camera_id: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", VIEWER, url, str(until), str(folder / f"{camera_id}.mkv"),
         str(folder / f"{camera_id}.json")],
    )


def _viewer_result(
    folder: Path, camera_id: str, log: RecordingLog, start: float, end: float
) -> ViewerResult:
    from edge.media import read_frames

    recording = folder / f"{camera_id}.mkv"
    arrivals = json.loads((folder / f"{camera_id}.json").read_text())
    viewed = []
    if arrivals:
        for arrived, frame in zip(arrivals, read_frames(recording), strict=False):
            viewed.append((arrived, grey_copy(frame.image, THUMBNAIL)))
    latencies = capture_to_viewer(log.captured, viewed)
    if log.file_time:  # paired all the same ("frames paired"), but no latency to tell
        latencies = [math.nan] * len(latencies)
    return ViewerResult(
        frames=sum(start <= arrived < end for arrived in arrivals),
        latencies_ms=[
            1000 * latency
            for (arrived, _), latency in zip(viewed, latencies, strict=False)
            if start <= arrived < end
        ],
        recording=recording,
    )


def _observe_recording(worker: CameraWorker, log: RecordingLog) -> None:
    """Log every frame handed to the worker's recording sink, then pass it on.

    Wraps the public sink's write() on the instance; frames recorded before the wrap are
    missed, and fall in the warm-up anyway."""
    # Before the one engine (to time the previous commit side by side), every delivered frame
    # went to the recorder and then, on the same thread, to the snapshot sink.
    sink = getattr(worker, "recording_sink", worker.snapshot)
    if sink is None:
        sys.exit(f"error: camera {worker.id} does not record")
    write = sink.write

    def observed_write(frame: RedactedFrame) -> None:
        log.record(frame)
        write(frame)

    sink.write = observed_write  # type: ignore[method-assign]


def _wait_until_running(workers: dict[str, CameraWorker], logs: dict[str, RecordingLog]) -> None:
    """Until every camera has recorded a frame or run its detector once (model loaded: a
    camera that fails closed on every frame is a result, not a start-up). Exits naming the
    camera and its state if one does neither within FIRST_FRAME_TIMEOUT_S."""
    deadline = time.monotonic() + FIRST_FRAME_TIMEOUT_S
    waiting = dict(workers)
    while waiting:
        for camera_id, worker in list(waiting.items()):
            if logs[camera_id].first.is_set() or getattr(worker, "detections", 0) > 0:
                del waiting[camera_id]
        if waiting and time.monotonic() > deadline:
            camera_id, worker = next(iter(waiting.items()))
            status = worker.status()
            sys.exit(f"error: camera {camera_id} neither recorded nor detected in "
                     f"{FIRST_FRAME_TIMEOUT_S:.0f} s: {status.reason or status.last_error}")
        time.sleep(0.1)


def _counters(worker: CameraWorker) -> tuple[int, int, int, int]:
    status = worker.status()
    return (status.frames_in, worker.frames_dropped, status.frames_withheld,
            getattr(worker, "detections", 0))


def _threads() -> int:
    """This process's threads, native ones (the detector's pool, codecs) included on Linux."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    cameras: list[Camera], seconds: float, warmup_s: float, sections: dict[str, Any],
    data_dir: Path, viewer: bool = False,
) -> LiveResult:
    """Run `cameras` in one Pipeline recording to `data_dir`, measure `seconds` once every
    camera started and `warmup_s` later, stop it (recordings closed). With `viewer`, one RTSP
    client per camera reads its stream with the token from the warm-up on (into
    data_dir/viewers)."""
    from edge.config import EdgeblurConfig
    from edge.pipeline import Pipeline
    from tests.rtsp import free_port

    rtsp_port = free_port()
    config = EdgeblurConfig.model_validate({
        **sections,
        "storage": {"data_dir": str(data_dir)},
        "service": {"rtsp": {"port": rtsp_port}},
        "cameras": [{"id": camera.id, "source": camera.source} for camera in cameras],
    })
    pipeline = Pipeline(config, stream_password=STREAM_TOKEN, stream_host="127.0.0.1")
    logs = {camera.id: RecordingLog(viewer, camera.file_time) for camera in cameras}
    viewers_dir = data_dir / "viewers"
    viewers: dict[str, subprocess.Popen] = {}
    pipeline.start()
    try:
        workers = {}
        for camera in cameras:
            worker = pipeline.worker(camera.id)
            if worker is None:
                sys.exit(f"error: the pipeline did not start camera {camera.id}")
            _observe_recording(worker, logs[camera.id])
            workers[camera.id] = worker
        _wait_until_running(workers, logs)
        if viewer:
            viewers_dir.mkdir(parents=True, exist_ok=True)
            until = time.monotonic() + warmup_s + seconds + 1.0
            for camera in cameras:
                url = f"rtsp://edgeblur:{STREAM_TOKEN}@127.0.0.1:{rtsp_port}/{camera.id}"
                viewers[camera.id] = _start_viewer(url, until, viewers_dir, camera.id)
        time.sleep(warmup_s)
        before = {camera_id: _counters(worker) for camera_id, worker in workers.items()}
        cpu_before, start = _cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        end, cpu_after = time.monotonic(), _cpu_seconds()
        after = {camera_id: _counters(worker) for camera_id, worker in workers.items()}
        threads = _threads()
        for process in viewers.values():
            process.wait(timeout=30)
    finally:
        for process in viewers.values():
            process.kill()
        pipeline.stop()
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the service's
    results = []
    for camera in cameras:
        frames_in, dropped, withheld, detections = (
            a - b for a, b in zip(after[camera.id], before[camera.id], strict=True)
        )
        results.append(CameraResult(
            camera, logs[camera.id].latencies_between(start, end), frames_in, dropped,
            withheld, detections,
            viewer=_viewer_result(viewers_dir, camera.id, logs[camera.id], start, end)
            if viewer else None,
        ))
    return LiveResult(
        seconds=end - start,
        cameras=results,
        peak_rss_mib=peak_rss_mib,
        threads=threads,
        cpu_busy=(cpu_after - cpu_before) / (end - start),
    )


def check_leaks(clip: Path, recordings: list[list[Path]], cut: bool) -> list[str]:
    """bench/rtsp_walking.leak_check of each camera's segments against `clip` (run in a fresh
    process: it holds every clip frame and the reference detector), the leaks at the loop's
    cut (`cut`) or at the turns of the to-and-fro clip counted apart."""
    from bench.rtsp_walking import leak_check

    where = {"loop_cut_s": LOOP_CUT_S} if cut else {"turn_s": TURN_S}
    return [leak_check(clip, segments, **where) if segments else "no recording"
            for segments in recordings]


# ---- verify, table, command line ---------------------------------------------------------


def verify_verdicts(recordings: Path, camera_ids: list[str], report: Path) -> dict[str, str]:
    """`edgeblur verify --json` on every recording; PASS or FAIL per camera, with counts."""
    audit = subprocess.run(
        [*edgeblur_command(), "verify", "--json", str(recordings)],
        capture_output=True, text=True, check=False,
    )
    report.write_text(audit.stdout + audit.stderr)
    try:
        files = json.loads(audit.stdout)["files"]
    except (json.JSONDecodeError, KeyError):
        lines = audit.stderr.strip().splitlines()
        failed = f"FAIL: verify exit {audit.returncode}: {lines[-1] if lines else 'no output'}"
        return dict.fromkeys(camera_ids, failed)
    verdicts = {}
    for camera_id in camera_ids:
        mine = [f for f in files if Path(f["path"]).parent.name == camera_id]
        if not mine:
            verdicts[camera_id] = "no recording"
            continue
        clean = all(f["status"] == "clean" for f in mine)
        verdicts[camera_id] = (
            f"{'PASS' if clean else 'FAIL'}: {sum(f['frames_checked'] for f in mine)} frames, "
            f"{sum(len(f['faces']) for f in mine)} faces, "
            f"{sum(len(f['review']) for f in mine)} to review"
        )
    return verdicts


HEADER = ["camera", "source", "recorded fps", "p50 ms", "p95 ms", "max ms", "frames in",
          "dropped", "withheld", "detections/s", "leaked / face-frames", "verify",
          "service RSS MiB"]


def report(result: LiveResult) -> str:
    import numpy as np

    rows = []
    for camera in result.cameras:
        latencies = np.array(camera.latencies_ms)
        if len(latencies) and not np.isnan(latencies).all():
            p50, p95 = np.percentile(latencies, [50, 95])
            stats = [f"{p50:.0f}", f"{p95:.0f}", f"{latencies.max():.0f}"]
        else:
            stats = ["-", "-", "-"]
        rows.append([
            camera.camera.id,
            camera.camera.label,
            f"{len(latencies) / result.seconds:.1f}",
            *stats,
            camera.frames_in,
            camera.dropped,
            camera.withheld,
            f"{camera.detections / result.seconds:.1f}",
            camera.leaks,
            camera.verify,
            f"{result.peak_rss_mib:.0f}",
        ])
    return markdown_table(HEADER, rows)


VIEWER_HEADER = ["camera", "viewer fps", "of recorded", "p50 ms", "p95 ms", "max ms",
                 "frames paired", "leaked / face-frames"]


def viewer_report(result: LiveResult) -> str:
    """One row per camera's stream viewer: what it received, how late, and its faces."""
    import numpy as np

    rows = []
    for camera in result.cameras:
        if camera.viewer is None:
            continue
        viewer, recorded = camera.viewer, len(camera.latencies_ms)
        latencies = np.array(viewer.latencies_ms)
        stats = (["-", "-", "-"] if not len(latencies) or np.isnan(latencies).all() else
                 [f"{v:.0f}" for v in (*np.percentile(latencies, [50, 95]), latencies.max())])
        rows.append([
            camera.camera.id,
            f"{viewer.frames / result.seconds:.1f}",
            f"{viewer.frames / recorded:.0%}" if recorded else "-",
            *stats,
            len(latencies),
            viewer.leaks,
        ])
    return markdown_table(VIEWER_HEADER, rows)


def sections_of(path: Path) -> dict[str, Any]:
    """The detector, redaction and tracking sections of the edgeblur config at `path`,
    validated. Exits with the config error if it is not valid."""
    from edge.configfile import load_config
    from edge.errors import ConfigError

    try:
        config = load_config(path)
    except ConfigError as error:
        sys.exit(f"error: {error}")
    return {
        "detector": config.detector.model_dump(mode="json"),
        "redaction": config.redaction.model_dump(mode="json"),
        "tracking": config.tracking.model_dump(mode="json"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--rtsp", type=Path, nargs="?", const=None, metavar="CLIP",
                      help="RTSP cameras playing CLIP (the default, with the walking clip)")
    kind.add_argument("--file", type=Path, nargs="?", const=Path(), metavar="CLIP",
                      help="file cameras playing CLIP (default: the walking clip)")
    kind.add_argument("--demo", type=resolution, metavar="WxH",
                      help="demo cameras of this size instead, at 25 fps")
    parser.add_argument("--height", type=int, metavar="H",
                        help="RTSP: play a copy of the clip scaled to H rows (e.g. 720)")
    parser.add_argument("--cameras", type=int, default=1, metavar="N",
                        help="cameras in the one service (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="measured seconds (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=5.0, metavar="S",
                        help="seconds after every camera started (first frame recorded or "
                        "detector run) before measuring (default %(default)s)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="use this edgeblur config's detector, redaction and tracking")
    parser.add_argument("--verify", action="store_true",
                        help="also audit the recordings with `edgeblur verify`")
    parser.add_argument("--cut", action="store_true",
                        help="RTSP: loop the clip as it is, cutting back to its start (every "
                        "face jumps) instead of playing it forwards then backwards")
    parser.add_argument("--viewer", action="store_true",
                        help="also read each camera's RTSP stream with a viewer, and report "
                        "what it received")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT / "live",
                        help="scaled and looped clip copies (kept for the next run)")
    parser.add_argument("--recordings", type=Path, metavar="DIR",
                        help="record here and keep it (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.cameras < 1:
        parser.error("--seconds must be > 0, --warmup >= 0 and --cameras at least 1")
    if args.demo is not None and args.height is not None:
        parser.error("--height scales the RTSP clip; give demo cameras their size with --demo")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sections = {} if args.config is None else sections_of(args.config)

    from edge.cpus import usable_cpus
    from edge.media import probe

    clip = None
    if args.demo is not None:
        width, height = args.demo
        cameras = [
            Camera(f"demo-{n}", f"demo {width}x{height}",
                   {"type": "demo", "width": width, "height": height, "fps": FPS,
                    "realtime": True})
            for n in range(1, args.cameras + 1)
        ]
        what = f"demo {width}x{height} at {FPS:g} fps (real time)"
    else:
        named = args.file if args.file is not None and args.file != Path() else args.rtsp
        clip = named or shared_clip(WALKING_CLIP)
        if not clip.is_file():
            sys.exit(f"error: {clip} is not a file")
        args.out_dir.mkdir(parents=True, exist_ok=True)
        played = clip
        if args.height is not None or not args.cut:
            print(f"preparing {clip.name} ...", file=sys.stderr, flush=True)
            played = in_fresh_process(prepare_clip, clip, args.out_dir, height=args.height,
                                      ping_pong=not args.cut)
            if args.height is not None:  # the clip the recordings are paired with
                clip = in_fresh_process(prepare_clip, clip, args.out_dir, height=args.height)
        info = probe(clip)
        what = (f"{'file' if args.file else 'RTSP (loopback)'} {clip.name} "
                f"{info.width}x{info.height} at {info.fps:g} fps, "
                + ("looped (cut back to its start)" if args.cut else "played to and fro"))

    from tests.rtsp import RtspServer

    servers: list[RtspServer] = []
    recordings_root = args.recordings or Path(tempfile.mkdtemp(prefix="edgeblur-live-"))
    try:
        if clip is not None and args.file is not None:  # the file source loops it itself
            cameras = [
                Camera(f"file-{n}", f"file {info.width}x{info.height}",
                       {"type": "file", "path": str(played), "loop": True, "realtime": True},
                       file_time=True)
                for n in range(1, args.cameras + 1)
            ]
        elif clip is not None:
            looped = loop_clip(played, args.out_dir, args.seconds + args.warmup + LOOP_MARGIN_S)
            cameras = []
            for n in range(1, args.cameras + 1):
                server = RtspServer(looped)
                servers.append(server)
                server.start()
                cameras.append(Camera(f"rtsp-{n}", f"rtsp {info.width}x{info.height}",
                                      {"type": "rtsp", "url": server.url}))
        shutil.rmtree(recordings_root / "recordings", ignore_errors=True)  # this run's only
        print(f"{len(cameras)} camera(s), {what}: {args.seconds:g} s after warm-up ...",
              file=sys.stderr, flush=True)
        result = in_fresh_process(
            measure, cameras, args.seconds, args.warmup, sections, recordings_root, args.viewer
        )
        for server in servers:
            server.stop()
        recordings = recordings_root / "recordings"
        if clip is not None:
            print("checking the recordings for visible faces ...", file=sys.stderr, flush=True)
            segments = [sorted((recordings / camera.id).glob("*.mp4")) for camera in cameras]
            for camera, leaks in zip(
                result.cameras, in_fresh_process(check_leaks, clip, segments, args.cut),
                strict=True
            ):
                camera.leaks = leaks
            viewed = [c.viewer for c in result.cameras if c.viewer is not None]
            if viewed:
                print("checking what the viewers received ...", file=sys.stderr, flush=True)
                for viewer, leaks in zip(viewed, in_fresh_process(
                    check_leaks, clip, [[v.recording] if v.frames else [] for v in viewed],
                    args.cut,
                ), strict=True):
                    viewer.leaks = leaks
        if args.verify:
            print("edgeblur verify ...", file=sys.stderr, flush=True)
            verdicts = verify_verdicts(
                recordings, [c.id for c in cameras], recordings_root / "verify.json"
            )
            for camera in result.cameras:
                camera.verify = verdicts[camera.camera.id]
    finally:
        for server in servers:
            server.stop()
        if args.recordings is None:
            shutil.rmtree(recordings_root, ignore_errors=True)

    settings = f"detector, redaction and tracking of {args.config}" if args.config else (
        "product defaults")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else (
        shlex.join(["bench/live.py", *argv]))
    print(f"\n{len(cameras)} camera(s) in one Pipeline: {what}; {settings}, recording on; "
          f"{result.seconds:.0f} s measured after every camera started + "
          f"{args.warmup:g} s; {usable_cpus()} usable CPU(s) of {os.cpu_count()}; {now}; "
          f"`{command}`. Latency: capture to the recording sink. Service: peak RSS "
          f"{result.peak_rss_mib:.0f} MiB, {result.threads} threads, "
          f"{result.cpu_busy:.2f} CPU s/s.\n")
    print(report(result))
    if args.viewer:
        print("\nStream viewers (rtsp://edgeblur:TOKEN@127.0.0.1:PORT/<camera>, one per camera, "
              "over TCP, in a process of their own, from the warm-up on). Latency: capture to "
              "the viewer; \"of recorded\": frames received per frame recorded.\n")
        print(viewer_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
