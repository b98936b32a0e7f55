"""Capture-to-redacted-frame latency of the live pipeline (`edgeblur serve`'s), on a 25 fps
camera, with look-ahead off and on.

    .venv/bin/python bench/latency.py [--seconds S] [--lookahead D]
                                      [--resolution WxH ...] [--fps F] [--no-recording]
                                      [--config FILE]

The camera is the built-in demo source paced in real time (realtime: true): its frames carry
their capture time on the monotonic clock (when each frame is due), so latency is simply the
delivery time minus the frame's timestamp. The pipeline runs at its defaults (CenterFace,
noise fill, recording to a temporary folder) with one camera, or with the detector and
redaction sections of an edgeblur config given with --config.

Delivery is observed at the snapshot sink, which the pipeline hands every delivered frame
right after the recorder (see `_observe_deliveries`). After the first delivered frame (model
loaded) and a short warm-up, frames delivered during S seconds are measured: p50 / p95 / max
latency, delivered fps, and frames dropped (a newer frame replaced one the detector had not
taken, or the source skipped frames it was late for) and withheld (failed closed). Each run
is a fresh process (bench._common.in_fresh_process), so its peak RSS is that of one camera's
pipeline, model and recorder (this script stays small: Linux starts a child's peak at its
parent's).

Pin it to a core with `taskset -c 0 .venv/bin/python bench/latency.py` for a Pi-class
stand-in. Run it on a quiet machine: other load changes the numbers.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/latency.py`

from bench._common import in_fresh_process, markdown_table, resolution

if TYPE_CHECKING:  # imported where used, in the run's own process
    from edge.config import EdgeblurConfig
    from edge.pipeline import CameraWorker
    from edge.types import RedactedFrame

CAMERA_ID = "bench"
FIRST_FRAME_TIMEOUT_S = 180.0  # model load on a slow board


@dataclass(frozen=True)
class Delivery:
    delivered_at: float  # time.monotonic() when the pipeline handed the frame to its sinks
    captured_at: float  # the frame's timestamp: the demo camera's monotonic capture time


@dataclass(frozen=True)
class LatencyResult:
    resolution: str
    lookahead: int
    seconds: float
    latencies_ms: np.ndarray  # float64 (n,), one per frame delivered in the window
    dropped: int
    withheld: int  # withheld or fully masked (failed closed)
    frames_in: int
    peak_rss_mib: float  # of the process that ran this camera, from start to stop

    @property
    def fps(self) -> float:
        return len(self.latencies_ms) / self.seconds


class DeliveryLog:
    """Delivered frames, appended by the camera's processing thread, read by the main one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self.first = threading.Event()

    def record(self, frame: RedactedFrame) -> None:
        delivery = Delivery(time.monotonic(), frame.timestamp)
        with self._lock:
            self._deliveries.append(delivery)
        self.first.set()

    def between(self, start: float, end: float) -> list[Delivery]:
        with self._lock:
            return [d for d in self._deliveries if start <= d.delivered_at < end]


def _observe_deliveries(worker: CameraWorker, log: DeliveryLog) -> None:
    """Record every frame handed to the worker's snapshot sink, then pass it on.

    The pipeline offers no delivery hook, so this wraps the public sink's write() on the
    instance. Frames delivered before the wrap are missed; they fall in the warm-up anyway."""
    sink = worker.snapshot
    write = sink.write

    def observed_write(frame: RedactedFrame) -> None:
        log.record(frame)
        write(frame)

    sink.write = observed_write  # type: ignore[method-assign]


def bench_config(
    width: int, height: int, fps: float, lookahead: int, data_dir: Path, record: bool,
    sections: dict[str, Any],
) -> EdgeblurConfig:
    """One demo camera; `sections` (detector, redaction) replace the defaults."""
    from edge.config import EdgeblurConfig

    return EdgeblurConfig.model_validate({
        **sections,
        "tracking": {"lookahead_frames": lookahead},
        "storage": {"data_dir": str(data_dir)},
        "cameras": [{
            "id": CAMERA_ID,
            "source": {"type": "demo", "width": width, "height": height, "fps": fps,
                       "realtime": True},
            "recording": {"enabled": record},
        }],
    })


def sections_of(path: Path) -> dict[str, Any]:
    """The detector and redaction sections of the edgeblur config at `path`, validated.
    Exits with the config error if it is not valid."""
    from edge.configfile import load_config
    from edge.errors import ConfigError

    try:
        config = load_config(path)
    except ConfigError as error:
        sys.exit(f"error: {error}")
    return {
        "detector": config.detector.model_dump(mode="json"),
        "redaction": config.redaction.model_dump(mode="json"),
    }


def measure(
    width: int, height: int, fps: float, lookahead: int, seconds: float, warmup_s: float,
    record: bool, sections: dict[str, Any],
) -> LatencyResult:
    from edge.pipeline import Pipeline

    with tempfile.TemporaryDirectory(prefix="edgeblur-latency-") as data_dir:
        config = bench_config(width, height, fps, lookahead, Path(data_dir), record, sections)
        pipeline = Pipeline(config)
        deliveries = DeliveryLog()
        pipeline.start()
        try:
            worker = pipeline.worker(CAMERA_ID)
            if worker is None:
                sys.exit("error: the pipeline did not start the benchmark camera")
            _observe_deliveries(worker, deliveries)
            if not deliveries.first.wait(FIRST_FRAME_TIMEOUT_S):
                status = pipeline.health()[0]
                sys.exit(f"error: no redacted frame in {FIRST_FRAME_TIMEOUT_S:.0f} s: "
                         f"{status.reason or status.last_error}")
            time.sleep(warmup_s)
            dropped, withheld, frames_in = _counters(worker)
            start = time.monotonic()
            time.sleep(seconds)
            end = time.monotonic()
            dropped_end, withheld_end, frames_in_end = _counters(worker)
        finally:
            pipeline.stop()
    window = deliveries.between(start, end)
    latencies = np.array([1000 * (d.delivered_at - d.captured_at) for d in window])
    return LatencyResult(
        resolution=f"{width}x{height}",
        lookahead=lookahead,
        seconds=end - start,
        latencies_ms=latencies,
        dropped=dropped_end - dropped,
        withheld=withheld_end - withheld,
        frames_in=frames_in_end - frames_in,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def _counters(worker: CameraWorker) -> tuple[int, int, int]:
    status = worker.status()
    return worker.frames_dropped, status.frames_withheld, status.frames_in


def report(results: list[LatencyResult]) -> str:
    rows = []
    for result in results:
        latencies = result.latencies_ms
        if len(latencies):
            p50, p95 = np.percentile(latencies, [50, 95])
            stats = [f"{p50:.0f}", f"{p95:.0f}", f"{latencies.max():.0f}"]
        else:
            stats = ["-", "-", "-"]
        rows.append([
            result.resolution,
            result.lookahead,
            *stats,
            f"{result.fps:.1f}",
            result.frames_in,
            result.dropped,
            result.withheld,
            f"{result.peak_rss_mib:.0f}",
        ])
    header = ["camera", "look-ahead frames", "p50 ms", "p95 ms", "max ms", "delivered fps",
              "frames in", "dropped", "withheld", "peak RSS MiB"]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="measured seconds per run (default %(default)s)")
    parser.add_argument("--lookahead", type=int, default=5, metavar="D",
                        help="look-ahead frames for the second run (default %(default)s)")
    parser.add_argument("--resolution", type=resolution, nargs="+",
                        default=[(1280, 720), (1920, 1080)], metavar="WxH",
                        help="camera sizes (default 1280x720 1920x1080)")
    parser.add_argument("--fps", type=float, default=25.0, help="camera frame rate")
    parser.add_argument("--warmup", type=float, default=2.0, metavar="S",
                        help="seconds after the first delivered frame before measuring")
    parser.add_argument("--no-recording", action="store_true",
                        help="do not record segments (the default records, as serve does)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="use this edgeblur config's detector and redaction sections")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.lookahead < 1:
        parser.error("--seconds must be > 0 and --lookahead at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sections = {} if args.config is None else sections_of(args.config)

    results = []
    for width, height in args.resolution:
        for lookahead in (0, args.lookahead):
            print(f"{width}x{height}, look-ahead {lookahead}: {args.seconds:.0f} s ...",
                  file=sys.stderr, flush=True)
            results.append(in_fresh_process(
                measure, width, height, args.fps, lookahead, args.seconds, args.warmup,
                not args.no_recording, sections,
            ))
    settings = f"detector and redaction of {args.config}" if args.config else "default settings"
    print(f"\ndemo camera at {args.fps:g} fps (real time), {settings}, "
          f"recording {'off' if args.no_recording else 'on'}; {args.seconds:g} s per run "
          "after warm-up; latency = delivery to the sinks minus capture time. Look-ahead "
          "holds that many frames of the processed stream: it adds look-ahead / delivered fps "
          "seconds.\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
