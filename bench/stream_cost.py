"""What serving the RTSP stream costs on top of recording, with the camera encoded once, and
how late frames reach a viewer.

    .venv/bin/python bench/stream_cost.py [--seconds S] [--rounds R] [--fps F]
                                          [--resolution WxH] [--frames N] [--clip FILE]

The walking-crowd clip (../shared, or --clip) is decoded, scaled to the resolution (720p by
default) and held in memory as redacted frames (no faces found: redaction is not what is
measured), then played in real time at F fps for S seconds into the camera's encoded outputs,
in three arms:

- recording alone: encoder -> segment recorder;
- recording + stream, nobody watching: the same and the RTSP server (gst-rtsp-server in its
  child process) with the camera mounted (the default: the stream is on for every camera);
- recording + stream, one viewer reading rtsp://edgeblur:TOKEN@127.0.0.1:PORT/bench over TCP
  in a process of its own (its decoding is the viewer's cost, not the edge box's).

The arms run R times each, interleaved (A B C, then C B A, ...), and the table gives each
arm's median: this machine's speed drifts by tens of percent over an hour, and run one after
the other once, the drift would land in the difference.

CPU is user + system time of this process (encoder, recorder, outputs' threads) plus the RTSP
server's process, per second of wall time. Latency: each frame carries its number in a row
of blocks; the viewer decodes it and notes when (CLOCK_MONOTONIC, shared by both processes);
capture-to-viewer latency is that minus the time the frame was handed to the encoder.

Nothing here asserts a speed; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import WALKING_CLIP, markdown_table, shared_clip
from edge.media import H264Encoder, read_frames
from edge.redact import Redactor
from edge.sinks.fanout import EncodedOutputsSink, PacketOutput, RecorderConsumer
from edge.sinks.retention import Retention
from edge.sinks.segments import SegmentRecorder
from edge.streaming.rtsp_server import USER, RtspServer
from edge.types import Detections, Frame, RedactedFrame

BITS, BLOCK = 12, 16  # the frame number as 12 black/white blocks of 16 px, top left
TOKEN = "stream-cost-bench-token"

VIEWER = r"""
import sys, time, av, numpy as np
BITS, BLOCK = 12, 16
url, seconds = sys.argv[1], float(sys.argv[2])
end = None
# Little probing: FFmpeg would otherwise buffer seconds of packets before the first frame and
# keep that backlog as latency of its own.
options = {"rtsp_transport": "tcp", "analyzeduration": "200000", "probesize": "65536"}
with av.open(url, options=options, timeout=30) as container:
    for frame in container.decode(video=0):
        now = time.monotonic()
        end = end or now + seconds
        gray = frame.to_ndarray(format="gray")
        number = 0
        for bit in range(BITS):
            x = bit * BLOCK
            if gray[4:BLOCK - 4, x + 4:x + BLOCK - 4].mean() > 127:
                number |= 1 << bit
        print(number, now, flush=True)
        if now > end:
            break
"""

# Stands in for the viewer in the arms without one: decodes the same pictures, encoded the same
# way, at the same rate on the same CPU, so that every arm has the same load beside it.
DECODE_LOAD = r"""
import sys, time, av
path, fps, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
began, decoded = time.monotonic(), 0
while time.monotonic() < began + seconds:
    with av.open(path, format="h264") as container:
        for frame in container.decode(video=0):
            frame.to_ndarray(format="gray")
            decoded += 1
            time.sleep(max(0.0, began + decoded / fps - time.monotonic()))
"""


def stamp(image: np.ndarray, number: int) -> None:
    for bit in range(BITS):
        image[:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = 255 if (number >> bit) & 1 else 0


# The viewer stands for a recorder on another machine: where there are CPUs to spare it gets
# one of its own (the last), and the edge box's side the rest, so that its decoding does not
# compete with the encoder it is measured against.
ALL_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
VIEWER_CPUS = {ALL_CPUS[-1]} if len(ALL_CPUS) > 1 else set()
EDGE_CPUS = set(ALL_CPUS[:-1]) if len(ALL_CPUS) > 1 else set()


def load_frames(clip: Path, width: int, height: int, count: int) -> list[np.ndarray]:
    images = []
    for frame in read_frames(clip):
        images.append(cv2.resize(frame.image, (width, height), interpolation=cv2.INTER_AREA))
        if len(images) >= count:
            break
    return images


def encode_to_file(images: list[np.ndarray], fps: float, path: Path) -> None:
    """The held pictures, stamped and encoded as the camera's encoder does, as raw H.264."""
    encoder, redactor = H264Encoder(fps), Redactor()
    with path.open("wb") as out:
        for number, original in enumerate(images):
            image = original.copy()
            stamp(image, number)
            frame = redactor.redact(Frame(image, number, number / fps), Detections.empty())
            for packet in encoder.encode(frame):
                out.write(packet.data)
        for packet in encoder.flush():
            out.write(packet.data)


def child_cpu_s(pid: int) -> float:
    """utime + stime of a running process, from /proc (Linux)."""
    return cpu_s_at(Path(f"/proc/{pid}/stat"))


def thread_cpu_s(thread_ids: list[int]) -> float:
    """utime + stime of this process's threads with these native ids, from /proc (Linux)."""
    total = 0.0
    for tid in thread_ids:
        total += cpu_s_at(Path(f"/proc/self/task/{tid}/stat"))
    return total


def cpu_s_at(stat: Path) -> float:
    """utime + stime from a /proc stat file (a process's or a thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def own_system_s() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def run(
    images: list[np.ndarray],
    fps: float,
    seconds: float,
    stream: bool,
    watched: bool,
    load_file: Path,
) -> dict:
    redactor = Redactor()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        recorder = SegmentRecorder(root, "bench", 60.0, fps, Retention(root, 3600.0, 10**12))
        outputs = [PacketOutput("recording", RecorderConsumer(recorder), depth=4 * int(fps))]
        server = None
        viewer = None
        if stream:
            server = RtspServer("127.0.0.1", 0, password=TOKEN)
            server.start()
            if not server.serving:
                sys.exit(f"error: {server.status}")
            outputs.append(PacketOutput("rtsp", server.mount("bench")))
        sink = EncodedOutputsSink("bench", fps, outputs)
        sink.start()
        captured: dict[int, float] = {}
        done = threading.Event()

        def camera() -> None:
            began = time.monotonic()
            number = 0
            while not done.is_set():
                image = images[number % len(images)].copy()
                stamp(image, number % 4096)
                frame: RedactedFrame = redactor.redact(
                    Frame(image, number, time.monotonic()), Detections.empty()
                )
                captured[number % 4096] = time.monotonic()
                sink.write(frame)
                number += 1
                done.wait(max(0.0, began + number / fps - time.monotonic()))

        feeder = threading.Thread(target=camera, daemon=True)
        feeder.start()
        time.sleep(2.0)  # warm-up: encoder threads started, first segment open
        if server is not None and watched:
            url = f"rtsp://{USER}:{TOKEN}@127.0.0.1:{server.port}/bench"
            viewer = subprocess.Popen(
                [sys.executable, "-c", VIEWER, url, str(seconds)],
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=lambda: os.sched_setaffinity(0, VIEWER_CPUS) if VIEWER_CPUS else None,
            )
        else:
            viewer = subprocess.Popen(
                [sys.executable, "-c", DECODE_LOAD, str(load_file), str(fps), str(seconds + 4)],
                text=True,
                preexec_fn=lambda: os.sched_setaffinity(0, VIEWER_CPUS) if VIEWER_CPUS else None,
            )
        time.sleep(2.0)  # the viewer connected and probing
        child = server._process.pid if server is not None and server._process else None
        # The threads that exist only for the stream: its output's and the server's supervisors.
        stream_threads = [
            t.native_id
            for t in threading.enumerate()
            if t.native_id and (t.name.startswith("rtsp-server") or t.name == "bench-rtsp")
        ]
        cpu0, child0, wall0 = own_cpu_s(), child_cpu_s(child) if child else 0.0, time.monotonic()
        threads0, system0 = thread_cpu_s(stream_threads), own_system_s()
        time.sleep(seconds)
        cpu1, child1, wall1 = own_cpu_s(), child_cpu_s(child) if child else 0.0, time.monotonic()
        threads1, system1 = thread_cpu_s(stream_threads), own_system_s()
        latencies: list[float] = []
        if viewer is not None and watched:
            out, _ = viewer.communicate(timeout=seconds + 60)
            for line in out.splitlines()[2 * int(fps) :]:  # past the burst from the keyframe
                number, when = line.split()
                if int(number) in captured:
                    latencies.append(float(when) - captured[int(number)])
        elif viewer is not None:
            viewer.wait(timeout=60)
        done.set()
        feeder.join()
        sink.stop()
        if server is not None:
            server.stop()
        wall = wall1 - wall0
        result = {
            "stream": stream,
            "watched": watched,
            "cpu_own": (cpu1 - cpu0) / wall,
            "cpu_server": (child1 - child0) / wall,
            "cpu_stream_threads": (threads1 - threads0) / wall,
            "cpu_own_system": (system1 - system0) / wall,
            "frames_recorded": recorder.frames_written,
            "dropped": [s.packets_dropped for s in sink.stats()],
        }
        if latencies:
            ordered = sorted(latencies)
            result["viewer_frames"] = len(ordered)
            result["latency_p50_s"] = ordered[len(ordered) // 2]
            result["latency_p95_s"] = ordered[int(len(ordered) * 0.95)]
            result["latency_max_s"] = ordered[-1]
        return result


ARMS = (
    ("recording alone", False, False),
    ("recording + stream, no viewer", True, False),
    ("recording + stream, 1 viewer", True, True),
)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each arm, interleaved")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--resolution", default="1280x720")
    parser.add_argument("--frames", type=int, default=60, help="clip frames held in memory")
    parser.add_argument("--clip", type=Path, help="default: the shared walking-crowd clip")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.resolution.split("x"))
    clip = args.clip or shared_clip(WALKING_CLIP)
    images = load_frames(clip, width, height, args.frames)
    results: dict[str, list[dict]] = {name: [] for name, _, _ in ARMS}
    if EDGE_CPUS:  # before the runs' threads start, so each of them and its children inherit it
        os.sched_setaffinity(0, EDGE_CPUS)
    try:
        with tempfile.TemporaryDirectory() as folder:
            load_file = Path(folder) / "load.h264"
            encode_to_file(images, args.fps, load_file)
            for round_number in range(args.rounds):
                order = ARMS if round_number % 2 == 0 else ARMS[::-1]
                for name, stream, watched in order:
                    result = run(images, args.fps, args.seconds, stream, watched, load_file)
                    result["round"] = round_number + 1
                    results[name].append(result)
                    used = result["cpu_own"] + result["cpu_server"]
                    print(f"round {round_number + 1}: {name}: {used:.3f} cores", flush=True)
    finally:
        if ALL_CPUS:  # a caller in the same process (a test) gets its CPUs back
            os.sched_setaffinity(0, ALL_CPUS)

    def cores(name: str) -> list[float]:
        return [r["cpu_own"] + r["cpu_server"] for r in results[name]]

    alone = median(cores(ARMS[0][0]))
    rows = []
    for name, _, watched in ARMS:
        arm = median(cores(name))
        p95s = [r["latency_p95_s"] for r in results[name] if "latency_p95_s" in r]
        rows.append(
            [
                name,
                f"{arm:.3f}",
                " ".join(f"{value:.3f}" for value in cores(name)),
                "–" if name == ARMS[0][0] else f"{100 * (arm - alone) / alone:+.1f} %",
                f"{median([r['cpu_server'] for r in results[name]]):.3f}",
                f"{median([r['cpu_stream_threads'] for r in results[name]]):.3f}",
                f"{median(p95s):.3f}" if watched and p95s else "–",
            ]
        )
    print(
        f"{clip.name} at {width}x{height}, {args.fps:g} fps, {args.seconds:g} s x "
        f"{args.rounds} rounds interleaved; CPU in cores (this process + the RTSP server process"
        f" on CPUs {sorted(EDGE_CPUS) or 'all'}, the viewer on {sorted(VIEWER_CPUS) or 'all'})"
    )
    headers = [
        "outputs",
        "CPU, median",
        "each round",
        "vs alone",
        "of it RTSP server",
        "stream's threads here",
        "latency p95 s",
    ]
    print(markdown_table(headers, rows))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
