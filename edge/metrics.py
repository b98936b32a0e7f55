"""Prometheus metrics of one Pipeline, in a registry of its own (never the process-global one,
so two pipelines in one process, as in tests, do not share or collide).

Counters are incremented by the camera threads as events happen; gauges (up, ready, fps) are
set from each worker's own status just before a scrape. Nothing here is ever parsed back:
`CameraStatus` is built from the workers' counters, not from this text.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Why a frame was withheld or fully masked instead of being redacted normally.
FAIL_REASONS = (
    "detector_error",  # detect() raised
    "over_budget",  # not checked within the camera's latency_budget_ms of its arrival
    "model_unavailable",  # the model is missing or corrupt, so no detector exists
    "processing_error",  # an unexpected error anywhere else between source and redaction
    "end_of_stream",  # the stream ended before a detection on or after the frame came in
)

# CenterFace on a Raspberry Pi takes hundreds of ms, on a desktop a few ms: 5 ms .. 2 s.
DETECTOR_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0)

SINKS = ("recording", "snapshot", "preview")


@dataclass(frozen=True)
class CameraMetrics:
    """The metric children of one camera, bound to its label so threads just call inc()."""

    camera_id: str
    metrics: PipelineMetrics

    def frames_in(self, n: int = 1) -> None:
        self.metrics.frames_in.labels(self.camera_id).inc(n)

    def frames_out(self, n: int = 1) -> None:
        self.metrics.frames_out.labels(self.camera_id).inc(n)

    def frames_dropped(self, n: int = 1) -> None:
        if n > 0:
            self.metrics.frames_dropped.labels(self.camera_id).inc(n)

    def frames_withheld(self, reason: str) -> None:
        self.metrics.frames_withheld.labels(self.camera_id, reason).inc()

    def frames_fully_masked(self, reason: str) -> None:
        self.metrics.frames_fully_masked.labels(self.camera_id, reason).inc()

    def faces_redacted(self, n: int) -> None:
        if n > 0:
            self.metrics.faces_redacted.labels(self.camera_id).inc(n)

    def detections(self, n: int = 1) -> None:
        self.metrics.detections.labels(self.camera_id).inc(n)

    def detector_latency(self, seconds: float) -> None:
        self.metrics.detector_latency.labels(self.camera_id).observe(seconds)

    def reconnects(self, n: int = 1) -> None:
        if n > 0:
            self.metrics.reconnects.labels(self.camera_id).inc(n)

    def source_errors(self) -> None:
        self.metrics.source_errors.labels(self.camera_id).inc()

    def sink_errors(self, sink: str) -> None:
        self.metrics.sink_errors.labels(self.camera_id, sink).inc()


class PipelineMetrics:
    """Every metric is labelled by `camera`; names are prefixed `edgeblur_`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_in = Counter(
            "edgeblur_frames_in", "Raw frames read from the source.", ["camera"], registry=r
        )
        self.frames_out = Counter(
            "edgeblur_frames_out",
            "Frames delivered to the sinks (redacted or fully masked).",
            ["camera"],
            registry=r,
        )
        self.frames_dropped = Counter(
            "edgeblur_frames_dropped",
            "Frames discarded to stay live (by the source or because processing was busy).",
            ["camera"],
            registry=r,
        )
        self.frames_withheld = Counter(
            "edgeblur_frames_withheld",
            "Frames not delivered because they could not be checked (fail closed).",
            ["camera", "reason"],
            registry=r,
        )
        self.frames_fully_masked = Counter(
            "edgeblur_frames_fully_masked",
            "Frames delivered entirely grey because they could not be checked (fail closed).",
            ["camera", "reason"],
            registry=r,
        )
        self.faces_redacted = Counter(
            "edgeblur_faces_redacted",
            "Regions masked (faces, coasting tracks and motion) summed over frames.",
            ["camera"],
            registry=r,
        )
        self.detections = Counter(
            "edgeblur_camera_detections",
            "Detector runs on this camera's frames (the shared detector serves every camera).",
            ["camera"],
            registry=r,
        )
        self.detector_latency = Histogram(
            "edgeblur_detector_latency_seconds",
            "Time one detect() call took.",
            ["camera"],
            buckets=DETECTOR_LATENCY_BUCKETS,
            registry=r,
        )
        self.reconnects = Counter(
            "edgeblur_reconnects", "Times the source was reconnected.", ["camera"], registry=r
        )
        self.source_errors = Counter(
            "edgeblur_source_errors", "Errors raised by the source.", ["camera"], registry=r
        )
        self.sink_errors = Counter(
            "edgeblur_sink_errors", "Errors raised by a sink.", ["camera", "sink"], registry=r
        )
        # Encoded outputs count on their own threads; these mirror their counters at scrape.
        self.output_frames_sent = Gauge(
            "edgeblur_output_frames_sent",
            "Frames an encoded output (recording, rtsp, push-N) passed on since its camera "
            "(re)started.",
            ["camera", "output"],
            registry=r,
        )
        self.output_frames_dropped = Gauge(
            "edgeblur_output_frames_dropped",
            "Frames an encoded output dropped since its camera (re)started: a stalled viewer or "
            "an unreachable push target drops its own frames, never the camera's (output rtsp: "
            "the frames its viewers missed, each viewer counted).",
            ["camera", "output"],
            registry=r,
        )
        self.stream_viewers = Gauge(
            "edgeblur_stream_viewers", "RTSP viewers of the camera's anonymised stream.",
            ["camera"], registry=r,
        )
        self.camera_up = Gauge(
            "edgeblur_camera_up", "1 while the camera is in state running.", ["camera"], registry=r
        )
        self.camera_ready = Gauge(
            "edgeblur_camera_ready",
            "1 while the camera delivers redacted frames with its model loaded.",
            ["camera"],
            registry=r,
        )
        self.camera_fps = Gauge(
            "edgeblur_camera_fps",
            "Frames delivered per second, recent average.",
            ["camera"],
            registry=r,
        )

    def set_outputs(self, outputs: dict[str, list[tuple[str, int, int]]]) -> None:
        """Per camera, (output, frames sent, frames dropped) of each encoded output, as of now.
        Replaces the previous values, so outputs of cameras gone or restarted without them
        disappear."""
        self.output_frames_sent.clear()
        self.output_frames_dropped.clear()
        for camera_id, stats in outputs.items():
            for name, sent, dropped in stats:
                self.output_frames_sent.labels(camera_id, name).set(sent)
                self.output_frames_dropped.labels(camera_id, name).set(dropped)

    def camera(self, camera_id: str) -> CameraMetrics:
        """Bind to one camera and create its series at zero, so dashboards see them from the
        start. Counters of a restarted camera carry on from where they were."""
        for family in (
            self.frames_in,
            self.frames_out,
            self.frames_dropped,
            self.faces_redacted,
            self.detections,
            self.reconnects,
            self.source_errors,
            self.camera_up,
            self.camera_ready,
            self.camera_fps,
        ):
            family.labels(camera_id)
        self.detector_latency.labels(camera_id)
        for reason in FAIL_REASONS:
            self.frames_withheld.labels(camera_id, reason)
            self.frames_fully_masked.labels(camera_id, reason)
        for sink in SINKS:
            self.sink_errors.labels(camera_id, sink)
        return CameraMetrics(camera_id, self)

    def set_status(
        self, camera_id: str, *, up: bool, ready: bool, fps: float, viewers: int = 0
    ) -> None:
        self.stream_viewers.labels(camera_id).set(viewers)
        self.camera_up.labels(camera_id).set(1 if up else 0)
        self.camera_ready.labels(camera_id).set(1 if ready else 0)
        self.camera_fps.labels(camera_id).set(fps)

    def remove_camera(self, camera_id: str) -> None:
        """Drop every series of a camera that is no longer configured."""
        for family in (
            self.frames_in,
            self.frames_out,
            self.frames_dropped,
            self.faces_redacted,
            self.detections,
            self.detector_latency,
            self.reconnects,
            self.source_errors,
            self.camera_up,
            self.camera_ready,
            self.camera_fps,
            self.stream_viewers,
        ):
            _remove(family, camera_id)
        for reason in FAIL_REASONS:
            _remove(self.frames_withheld, camera_id, reason)
            _remove(self.frames_fully_masked, camera_id, reason)
        for sink in SINKS:
            _remove(self.sink_errors, camera_id, sink)

    def render(self) -> bytes:
        """Prometheus text exposition format."""
        return generate_latest(self.registry)


def _remove(family: Counter | Gauge | Histogram, *labels: str) -> None:
    try:
        family.remove(*labels)
    except KeyError:  # never created (e.g. a reason that never occurred after a restart)
        pass
