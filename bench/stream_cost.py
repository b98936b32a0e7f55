"""What serving the RTSP stream costs on top of recording, with the camera encoded once, and
how late frames reach a viewer.

    .venv/bin/python bench/stream_cost.py [--seconds S] [--fps F] [--resolution WxH]
                                          [--frames N] [--clip FILE]

The walking-crowd clip (../shared, or --clip) is decoded, scaled to the resolution (720p by
default) and held in memory as redacted frames (no faces found: redaction is not what is
measured), then played in real time at F fps for S seconds into the camera's encoded outputs,
twice:

- recording alone: encoder -> segment recorder;
- recording + stream: encoder -> segment recorder and the RTSP server (gst-rtsp-server in its
  child process), with one viewer reading rtsp://edgeblur:TOKEN@127.0.0.1:PORT/bench over TCP
  in a process of its own (its decoding is the viewer's cost, not the edge box's).

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
from edge.media import read_frames
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


def stamp(image: np.ndarray, number: int) -> None:
    for bit in range(BITS):
        image[:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = 255 if (number >> bit) & 1 else 0


def load_frames(clip: Path, width: int, height: int, count: int) -> list[np.ndarray]:
    images = []
    for frame in read_frames(clip):
        images.append(cv2.resize(frame.image, (width, height), interpolation=cv2.INTER_AREA))
        if len(images) >= count:
            break
    return images


def child_cpu_s(pid: int) -> float:
    """utime + stime of a running process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(images: list[np.ndarray], fps: float, seconds: float, stream: bool) -> dict:
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
        if server is not None:
            url = f"rtsp://{USER}:{TOKEN}@127.0.0.1:{server.port}/bench"
            viewer = subprocess.Popen(
                [sys.executable, "-c", VIEWER, url, str(seconds)],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(2.0)  # the viewer connected and probing
        child = server._process.pid if server is not None and server._process else None
        cpu0, child0, wall0 = own_cpu_s(), child_cpu_s(child) if child else 0.0, time.monotonic()
        time.sleep(seconds)
        cpu1, child1, wall1 = own_cpu_s(), child_cpu_s(child) if child else 0.0, time.monotonic()
        latencies: list[float] = []
        if viewer is not None:
            out, _ = viewer.communicate(timeout=seconds + 60)
            for line in out.splitlines()[2 * int(fps) :]:  # past the burst from the keyframe
                number, when = line.split()
                if int(number) in captured:
                    latencies.append(float(when) - captured[int(number)])
        done.set()
        feeder.join()
        sink.stop()
        if server is not None:
            server.stop()
        wall = wall1 - wall0
        result = {
            "stream": stream,
            "cpu_own": (cpu1 - cpu0) / wall,
            "cpu_server": (child1 - child0) / wall,
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--resolution", default="1280x720")
    parser.add_argument("--frames", type=int, default=60, help="clip frames held in memory")
    parser.add_argument("--clip", type=Path, help="default: the shared walking-crowd clip")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.resolution.split("x"))
    clip = args.clip or shared_clip(WALKING_CLIP)
    images = load_frames(clip, width, height, args.frames)
    results = [run(images, args.fps, args.seconds, stream) for stream in (False, True)]
    alone, streamed = results
    total_alone = alone["cpu_own"] + alone["cpu_server"]
    total_streamed = streamed["cpu_own"] + streamed["cpu_server"]
    rows = [
        ["recording alone", f"{total_alone:.3f}", "–", "–", "–"],
        [
            "recording + stream (1 viewer)",
            f"{total_streamed:.3f}",
            f"{100 * (total_streamed - total_alone) / total_alone:+.1f} %",
            f"{streamed.get('latency_p50_s', float('nan')):.3f}",
            f"{streamed.get('latency_p95_s', float('nan')):.3f}",
        ],
    ]
    print(
        f"{clip.name} at {width}x{height}, {args.fps:g} fps, {args.seconds:g} s; CPU in cores "
        "(this process + the RTSP server process)"
    )
    print(markdown_table(["outputs", "CPU", "vs alone", "latency p50 s", "p95 s"], rows))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
