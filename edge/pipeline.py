"""The camera service's cameras: one CameraWorker per enabled camera, each running its
source into the one engine (edge.engine) that `edgeblur video` uses too:

    source -> [ingest thread] -> FrameEngine (detection schedule, look-ahead, redaction,
        fail closed) -> one bounded queue and thread per sink (recording, snapshot, preview)

and one detector for the whole box (edge.detectors.shared), shared fairly by every camera.

Frames flow one way. Raw `Frame`s live only in memory (the engine's look-ahead); the sinks
are handed `RedactedFrame`s only, which only `edge.redact` can make. A camera drops frames at
ingest only (counted), to keep the rate the box can check in time; a frame the engine has
accepted is delivered redacted, or failed closed: withheld or fully masked (`fail_policy`),
counted by reason and logged once per episode (when it starts and ends, with the count).

`Pipeline` implements `edge.control.Control`, the only thing the service sees.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry

from edge.config import CameraConfig, EdgeblurConfig
from edge.control import CameraStatus
from edge.detectors.registry import build_detector
from edge.detectors.shared import DetectionResult, DetectionSeat, DetectorFactory, SharedDetector
from edge.engine import (
    FrameEngine,
    FrameProcessor,
    Output,
    Released,
    StreamSettings,
    second_look,
)
from edge.errors import SinkError, SourceError
from edge.metrics import CameraMetrics, PipelineMetrics
from edge.models import ModelStore
from edge.motion import MotionMasker
from edge.redact import Redactor
from edge.sinks.base import Sink
from edge.sinks.fanout import EncodedOutputsSink, OutputStats, PacketOutput, RecorderConsumer
from edge.sinks.preview import PreviewSink
from edge.sinks.retention import Retention
from edge.sinks.segments import SegmentRecorder
from edge.sinks.snapshot import SnapshotSink
from edge.sources.base import Source
from edge.sources.registry import build_source
from edge.streaming.push import RtspPushConsumer
from edge.streaming.rtsp_server import RtspServer
from edge.types import Frame, RedactedFrame

log = logging.getLogger(__name__)

DEFAULT_FPS = 15.0  # when a source cannot say its frame rate (recording rate, readiness window)
READY_MIN_WINDOW_S = 2.0  # ready needs a redacted frame within max(this, 3 frame intervals)
FPS_WINDOW_S = 5.0  # fps is averaged over this many seconds of delivered frames
RETENTION_EVERY_S = 60.0  # retention also runs on this period, besides after each segment
PREVIEW_MAX_FPS = 5.0  # the live preview is for a human glancing at it
STOP_JOIN_S = 20.0  # longer than any source's read timeout, so threads end on their own
MODEL_WAIT_S = 60.0  # a camera waits this long for its model before opening its source
RECORDING_QUEUE = 8  # frames waiting for the encoder before the corridor waits for it
UNPACED_FRAMES = 16  # frames an unpaced source (a file read for every frame) may have inside


class _Episode:
    """Logs a run of like events once when it starts and once when it ends, with its count.
    Owned by one thread."""

    def __init__(self, camera_id: str, what: str, unit: str) -> None:
        self.camera_id = camera_id
        self.what = what  # e.g. "frames withheld"
        self.unit = unit  # what count counts, e.g. "frames"
        self.reason = ""
        self.count = 0

    def event(self, reason: str, detail: str) -> None:
        if reason != self.reason:
            self.end()
            self.reason = reason
            log.warning("camera %s: %s (%s): %s", self.camera_id, self.what, reason, detail)
        self.count += 1

    def end(self, *, stopping: bool = False) -> None:
        """The run is over: it recovered, or (`stopping`) the camera stops while it lasts."""
        if self.reason:
            log.warning(
                "camera %s: %s (%s) %s after %d %s",
                self.camera_id,
                self.what,
                self.reason,
                "still going when the camera stopped" if stopping else "ended",
                self.count,
                self.unit,
            )
        self.reason = ""
        self.count = 0


class _EncodedOutputs(Sink):
    """The camera's H.264 outputs behind one encoder (edge.sinks.fanout): the segment
    recording, the RTSP mount that viewers pull, and pushes to other servers. Made on the first
    frame, when the source has said its frame rate (the encoder's nominal rate; timestamps
    come from capture times)."""

    def __init__(self, worker: CameraWorker, rtsp: RtspServer | None) -> None:
        self._worker = worker
        self._rtsp = rtsp
        self.recorder: SegmentRecorder | None = None
        self.fanout: EncodedOutputsSink | None = None

    def _write(self, frame: RedactedFrame) -> None:
        if self.fanout is None:
            self.fanout = self._build(self._worker.fps_hint or DEFAULT_FPS)
            self.fanout.start()
        self.fanout.write(frame)

    def _build(self, fps: float) -> EncodedOutputsSink:
        worker, camera = self._worker, self._worker.camera
        outputs = []
        if camera.recording.enabled:
            self.recorder = SegmentRecorder(
                worker.recordings_dir, worker.id, camera.recording.segment_s, fps,
                worker.retention,
            )
            outputs.append(PacketOutput("recording", RecorderConsumer(self.recorder),
                                        depth=max(8, int(4 * fps))))
        if self._rtsp is not None and camera.stream.serve:
            outputs.append(PacketOutput("rtsp", self._rtsp.mount(worker.id),
                                        depth=camera.stream.queue_frames))
        for number, push in enumerate(p for p in camera.stream.push if p.enabled):
            outputs.append(PacketOutput(
                f"push-{number}",
                RtspPushConsumer(push.url, push.transport, push.timeout_s,
                                 max_backoff_s=push.max_backoff_s),
                depth=push.queue_frames,
            ))
        return EncodedOutputsSink(worker.id, fps, outputs, camera.stream.keyframe_interval_s)

    def stats(self) -> list[OutputStats]:
        return self.fanout.stats() if self.fanout is not None else []

    def stop(self) -> None:
        if self.fanout is not None:
            self.fanout.stop()


class CameraWorker:
    """Runs one camera: an ingest thread (source -> engine) and the camera's FrameEngine.
    Built and started by `Pipeline`.

    The ingest thread owns the Source; the engine's thread owns the schedule, the masker and
    the redaction; each sink has its own thread. status() and the sinks' readers (snapshot,
    preview) may be called from any thread.
    """

    def __init__(
        self,
        camera: CameraConfig,
        config: EdgeblurConfig,
        *,
        detector: SharedDetector,
        metrics: CameraMetrics,
        retention: Retention,
        rtsp: RtspServer | None = None,
    ) -> None:
        self.camera = camera
        self.id = camera.id
        self._detector_config = config.detector_for(camera)
        self.recordings_dir = config.storage.data_dir / "recordings"
        self.retention = retention
        self._metrics = metrics
        self._motion_only = camera.motion.mode == "only"
        self._stop = threading.Event()
        self.snapshot = SnapshotSink()
        self.preview = PreviewSink(PREVIEW_MAX_FPS)
        self._rtsp = rtsp if camera.stream.serve else None
        # The encoded outputs: recording, RTSP stream, pushes (None when all are off);
        # benchmarks wrap its write() to time frames.
        encoded = camera.recording.enabled or self._rtsp is not None or any(
            p.enabled for p in camera.stream.push
        )
        self.recording_sink = _EncodedOutputs(self, self._rtsp) if encoded else None
        self.fps_hint: float | None = None
        redactor = Redactor(config.redaction)
        # Sources not paced in real time (files, demo with realtime: false) are read for every
        # frame: the engine makes them wait instead of dropping, and nothing is late.
        live = getattr(camera.source, "realtime", True)
        settings = StreamSettings(
            detect_every=config.tracking.detect_every or None,
            budget_s=camera.latency_budget_ms / 1000.0 if live else None,
            live=live,
            second_look=camera.second_look and config.redaction.second_look_threshold is not None,
            fail_policy=camera.fail_policy,
            motion_only=self._motion_only,
        )
        outputs = [
            Output("snapshot", self.snapshot, depth=1, leaky=True, on_error=self._sink_failed),
            Output("preview", self.preview, depth=1, leaky=True, on_error=self._sink_failed),
        ]
        if self.recording_sink is not None:
            outputs.insert(0, Output("recording", self.recording_sink, depth=RECORDING_QUEUE,
                                     on_error=self._sink_failed))

        def processor(
            request: Callable[[Frame, float], None], seat: DetectionSeat | None
        ) -> FrameProcessor:
            look_again = None
            if settings.second_look and seat is not None:
                look_again = second_look(redactor, seat)
            return FrameProcessor(settings, config.tracking, redactor, request, look_again)

        def seat(on_result: Callable[[DetectionResult], None]) -> DetectionSeat | None:
            if self._motion_only:
                return None
            return detector.seat(self.id, self._detector_config, on_result)

        self.engine = FrameEngine(
            self.id, processor, seat, outputs, self,
            motion=MotionMasker(camera.motion) if camera.motion.mode != "off" else None,
            source_fps=lambda: self.fps_hint,
            capacity=4 if live else UNPACED_FRAMES,
        )
        self._redactor = redactor
        self._threads: list[threading.Thread] = []
        self._withheld_log = _Episode(
            self.id,
            "frames fully masked" if camera.fail_policy == "mask" else "frames withheld",
            "frames",
        )
        self._sink_log = _Episode(self.id, "sink failing", "frames")

        # Status, written by the threads, read by status() under _lock.
        self._lock = threading.Lock()
        self._source_state = "starting"  # starting | running | reconnecting | failed | stopped
        self._model_error = ""  # why there is no detector, empty when loaded (or not needed)
        self._model_loaded = self._motion_only
        self._last_error = ""
        self._failing = ""  # reason of the fail-closed episode in progress, empty if none
        self._last_redacted_at: float | None = None  # monotonic time of last normal redaction
        self._delivered_at: deque[float] = deque()  # monotonic times, last FPS_WINDOW_S
        self._detected_at: deque[float] = deque()  # monotonic times, last FPS_WINDOW_S
        self._started_at: float | None = None  # monotonic time of start()
        self._latency: deque[float] = deque(maxlen=512)  # arrival to release, seconds
        self.frames_in = 0
        self.frames_out = 0
        self.frames_withheld = 0
        self.frames_fully_masked = 0
        self.faces_redacted = 0
        self.frames_dropped = 0
        self.detections = 0
        self.reconnects = 0

    # ---- lifecycle (called by Pipeline) -------------------------------------------------

    def start(self) -> None:
        self._started_at = time.monotonic()
        self.engine.start()
        self._threads = [
            threading.Thread(target=self._ingest, name=f"ingest-{self.id}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def request_stop(self) -> None:
        """Ask the ingest thread to finish; the engine then delivers what it holds (the
        frames waiting get their search, within the budget) and closes the recording."""
        self._stop.set()

    def join(self, timeout: float = STOP_JOIN_S) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.error("camera %s: thread %s did not stop in %.0f s", self.id, thread.name,
                          timeout)
        if not self.engine.join(max(0.0, deadline - time.monotonic())):
            self.engine.stop()  # what is still unchecked fails closed
            if not self.engine.join(STOP_JOIN_S):
                log.error("camera %s: the engine did not stop in %.0f s", self.id, timeout)
        self._stopped()

    def _stopped(self) -> None:
        """The source and the engine are done: the camera reports "stopped"."""
        self._withheld_log.end(stopping=True)
        self._sink_log.end(stopping=True)
        with self._lock:
            if self._source_state != "failed":
                self._source_state = "stopped"

    # ---- status ---------------------------------------------------------------------------

    @property
    def recorder(self) -> SegmentRecorder | None:
        return self.recording_sink.recorder if self.recording_sink is not None else None

    def latencies(self) -> list[float]:
        """Arrival-to-release times of the last frames delivered normally, seconds."""
        with self._lock:
            return list(self._latency)

    def status(self) -> CameraStatus:
        """This camera's state, from its own counters. Ready: its model is loaded (or motion
        mode needs none), the source runs, and a frame was redacted normally within the last
        max(2 s, 3 frame intervals). frames_withheld counts every frame that failed closed,
        withheld or fully masked (the metrics tell the two apart)."""
        now = time.monotonic()
        with self._lock:
            span = FPS_WINDOW_S if self._started_at is None else min(
                FPS_WINDOW_S, now - self._started_at
            )
            rates = []
            for times in (self._delivered_at, self._detected_at):
                while times and now - times[0] > FPS_WINDOW_S:
                    times.popleft()
                rates.append(len(times) / span if span > 0.5 else 0.0)
            fps, detections_per_s = rates
            interval = 1.0 / (self.fps_hint or DEFAULT_FPS)
            window = max(READY_MIN_WINDOW_S, 3 * interval)
            state = "failed" if self._model_error else self._source_state
            fresh = self._last_redacted_at is not None and now - self._last_redacted_at <= window
            if self._model_error:
                reason = f"model unavailable: {self._model_error}"
            elif self._source_state == "starting":
                reason = "starting" if self._model_loaded else "loading the model"
            elif self._source_state == "reconnecting":
                reason = f"source reconnecting: {self._last_error}"
            elif self._source_state == "failed":
                reason = f"source failed: {self._last_error}"
            elif self._source_state == "stopped":
                reason = "stopped"
            elif self._failing:
                reason = f"frames failing closed ({self._failing}): {self._last_error}"
            elif not fresh:
                age = "ever" if self._last_redacted_at is None else (
                    f"{now - self._last_redacted_at:.1f} s"
                )
                reason = f"no redacted frame for {age}"
            else:
                reason = ""
            recorder = self.recorder
            stream_url, stream = self._stream_status()
            last_error = self._last_error
            if recorder is not None and recorder.state in ("disk_full", "failed"):
                # The recorder reports on its own thread; its error is the camera's news.
                last_error = recorder.last_error or last_error
            return CameraStatus(
                id=self.id,
                enabled=True,
                state=state,
                fps=round(fps, 2),
                ready=not reason,
                reason=reason,
                last_error=last_error,
                recording=recorder.state if recorder is not None else (
                    "idle" if self.camera.recording.enabled else "off"
                ),
                frames_in=self.frames_in,
                frames_out=self.frames_out,
                frames_withheld=self.frames_withheld + self.frames_fully_masked,
                faces_redacted=self.faces_redacted,
                detections_per_s=round(detections_per_s, 2),
                frames_dropped=self.frames_dropped,
                stream_url=stream_url,
                stream=stream,
            )

    def _stream_status(self) -> tuple[str, str]:
        """(the anonymised stream's URL, without credentials; its state, and why when it is
        not served)."""
        rtsp = self._rtsp
        if rtsp is None:
            return "", "off"
        if rtsp.serving:
            if rtsp.is_mounted(self.id):
                return rtsp.url(self.id), f"serving ({rtsp.viewers(self.id)} viewers)"
            return rtsp.url(self.id), "starting: waiting for the camera's first frame"
        return rtsp.url(self.id), f"{rtsp.state}: {rtsp.status}"

    def output_stats(self) -> list[OutputStats]:
        """Frames sent and dropped by each encoded output (recording, stream, pushes)."""
        return self.recording_sink.stats() if self.recording_sink is not None else []

    def _set(self, **fields: object) -> None:
        with self._lock:
            for name, value in fields.items():
                setattr(self, f"_{name}", value)

    # ---- ingest thread --------------------------------------------------------------------

    def _ingest(self) -> None:
        source: Source | None = None
        outage = _Episode(self.id, "source unavailable", "failed reads")
        try:
            source = build_source(self.camera.source)
            self._wait_for_model()
            self._read_until_stopped(source, outage)
        except Exception as error:  # a bug or an unexpected library error: stop this camera
            log.exception("camera %s: ingest failed", self.id)
            self._set(source_state="failed", last_error=f"ingest failed: {error}")
        finally:
            self.engine.end()
            outage.end(stopping=True)
            if source is not None:
                try:
                    source.close()
                except Exception:
                    log.exception("camera %s: closing the source failed", self.id)
            # A source that ended (a file) stops its camera once the engine has delivered
            # its last frames.
            if self.engine.join(STOP_JOIN_S):
                self._stopped()

    def _wait_for_model(self) -> None:
        """Open the source once the model has loaded (or failed to), up to MODEL_WAIT_S:
        a camera that opened first had its first frame wait a second or more for the model,
        every frame after it dropped meanwhile, and its first recorded seconds masked from
        that stale search."""
        seat = self.engine.seat
        if seat is None:  # motion-only: no model
            return
        deadline = time.monotonic() + MODEL_WAIT_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            if seat.wait_for_model(0.25):
                return
        if not self._stop.is_set():
            log.warning("camera %s: the model has not loaded after %.0f s; opening the "
                        "source anyway (its frames wait for the model)", self.id, MODEL_WAIT_S)

    def _read_until_stopped(self, source: Source, outage: _Episode) -> None:
        """Open (retrying with backoff while the error is retryable) and read frames into the
        engine until the source ends, fails for good, or the worker stops.

        Live sources reconnect inside read() (see edge.sources.live.LiveSource): a retryable
        error from read() only means "still reconnecting", and read() paces itself."""
        settings = self.camera.source
        delay_min = getattr(settings, "reconnect_min_s", 0.5)
        delay_max = getattr(settings, "reconnect_max_s", 30.0)
        delay = delay_min
        opened = False
        counted_dropped = counted_reconnects = 0
        while not self._stop.is_set():
            try:
                if not opened:
                    source.open()
                    opened = True
                    self.fps_hint = source.fps_hint
                    if outage.reason:  # opened at last after failed attempts
                        self.reconnects += 1
                        self._metrics.reconnects()
                frame = source.read()
            except SourceError as error:
                self._metrics.source_errors()
                message = str(error)
                if not error.retryable:
                    log.error("camera %s: source failed: %s", self.id, message)
                    self._set(source_state="failed", last_error=message)
                    return
                outage.event("reconnecting", message)
                self._set(source_state="reconnecting", last_error=message)
                # Retry open() with backoff; after a read() error only guard against a
                # source that raises without waiting.
                if self._stop.wait(delay if not opened else delay_min):
                    return
                if not opened:
                    delay = min(delay * 2, delay_max)
                continue
            if frame is None:
                log.info("camera %s: source ended", self.id)
                return
            delay = delay_min
            if outage.reason:
                outage.end()
            if self._source_state != "running":
                with self._lock:
                    if self._source_state != "failed":
                        self._source_state = "running"
            self.frames_in += 1
            self._metrics.frames_in()
            before = self.engine.dropped
            self.engine.offer(frame)
            new_dropped = source.dropped - counted_dropped + self.engine.dropped - before
            new_reconnects = source.reconnects - counted_reconnects
            counted_dropped, counted_reconnects = source.dropped, source.reconnects
            self.frames_dropped += new_dropped
            self._metrics.frames_dropped(new_dropped)
            self.reconnects += new_reconnects
            self._metrics.reconnects(new_reconnects)
            if self.engine.error is not None:
                self._set(source_state="failed",
                          last_error=f"processing failed: {self.engine.error}")
                return

    # ---- EngineEvents (the engine's and the detector's threads) ---------------------------

    def detection(self, result: DetectionResult) -> None:
        if result.failure == "model_unavailable":
            if result.error != self._model_error:
                self._set(model_error=result.error, last_error=result.error)
            return
        if self._model_error or not self._model_loaded:
            self._set(model_error="", model_loaded=True)
        if result.failure:
            self._set(last_error=result.error)
            return
        now = time.monotonic()
        self.detections += 1
        self._metrics.detections()
        self._metrics.detector_latency(result.seconds)
        with self._lock:
            self._detected_at.append(now)

    def released(self, item: Released) -> None:
        if item.reason:
            self._failed_closed(item)
            return
        redacted = item.redacted
        assert redacted is not None
        self._withheld_log.end()
        self._set(failing="")
        self._count_delivered(redacted)
        with self._lock:
            self._last_redacted_at = time.monotonic()
            self._latency.append(self._last_redacted_at - item.arrived)

    def output_failed(self, name: str, error: Exception) -> None:
        self._sink_failed(name, error)

    def _failed_closed(self, item: Released) -> None:
        detail = self._model_error or self.engine.last_error or item.reason
        self._withheld_log.event(item.reason, detail)
        self._set(failing=item.reason, last_error=detail)
        if item.redacted is not None:
            self.frames_fully_masked += 1
            self._metrics.frames_fully_masked(item.reason)
            self._count_delivered(item.redacted)
        else:
            self.frames_withheld += 1
            self._metrics.frames_withheld(item.reason)

    def _count_delivered(self, redacted: RedactedFrame) -> None:
        now = time.monotonic()
        self.frames_out += 1
        self._metrics.frames_out()
        self.faces_redacted += redacted.record.regions
        self._metrics.faces_redacted(redacted.record.regions)
        with self._lock:
            self._delivered_at.append(now)
            while now - self._delivered_at[0] > FPS_WINDOW_S:
                self._delivered_at.popleft()

    def _sink_failed(self, name: str, error: Exception) -> None:
        """A sink error is counted and logged (once per episode) and never stops the camera."""
        self._metrics.sink_errors(name)
        self._set(last_error=str(error))
        self._sink_log.event(name, str(error))
        if not isinstance(error, SinkError):
            log.error("camera %s: %s sink failed: %r", self.id, name, error)

    def resume_recording(self) -> None:
        """Retry recording after a full disk or a write failure (called by the janitor)."""
        recorder = self.recorder
        if recorder is not None and recorder.state in ("disk_full", "failed"):
            log.info("camera %s: retrying recording after: %s", self.id, recorder.last_error)
            recorder.resume()


def _camera_fingerprint(config: EdgeblurConfig, camera: CameraConfig) -> str:
    """Everything a running camera depends on: if this changes, the camera restarts."""
    parts = [
        camera.model_dump_json(),
        config.detector_for(camera).model_dump_json(),
        config.redaction.model_dump_json(),
        config.tracking.model_dump_json(),
        str(config.storage.data_dir),
        str(config.models.cache_dir),
    ]
    return "\n".join(parts)


def _idle_status(camera: CameraConfig, state: str, reason: str) -> CameraStatus:
    """Status of a configured camera that has no worker running."""
    return CameraStatus(
        id=camera.id, enabled=camera.enabled, state=state, fps=0.0, ready=False, reason=reason,
        last_error="", recording="off", frames_in=0, frames_out=0, frames_withheld=0,
        faces_redacted=0,
    )


class Pipeline:
    """All cameras of one config, behind the `edge.control.Control` protocol.

    start() and stop() are called by whoever owns the process (`edgeblur serve`); every other
    method may be called from any thread (the service's request handlers) at any time.
    start(), stop() and apply_config() run one at a time; health() and the other readers never
    wait for a camera to stop. `config_path` is the file the config came from, for messages
    only: the service writes it. `detector_factory` builds a detector from a detector
    config and the model store (tests pass one producing faults a real detector cannot); the
    cameras share the detectors it builds, one per distinct detector config.
    `stream_password` (the API token) guards the RTSP streams served on `stream_host`
    (default: service.host); without it they are served on a loopback address only.
    """

    def __init__(
        self,
        config: EdgeblurConfig,
        config_path: Path | None = None,
        *,
        detector_factory: DetectorFactory = build_detector,
        stream_password: str | None = None,
        stream_host: str | None = None,
    ) -> None:
        self._config = config
        self._config_path = config_path
        self._stream_password = stream_password
        self._stream_host = stream_host or config.service.host
        self._rtsp: RtspServer | None = None
        self._detector_factory = detector_factory
        self._metrics = PipelineMetrics()
        self._store = ModelStore(config.models.cache_dir)
        self._detector: SharedDetector | None = None  # made with the first camera
        self._retention = self._new_retention(config)
        self._workers: dict[str, CameraWorker] = {}
        self._started = False
        self._lock = threading.Lock()  # guards the fields above; held only briefly
        self._change_lock = threading.Lock()  # serialises start, stop and apply_config
        self._janitor_stop = threading.Event()
        self._janitor: threading.Thread | None = None

    @property
    def registry(self) -> CollectorRegistry:
        """This pipeline's Prometheus registry (read by tests and embedders)."""
        return self._metrics.registry

    def worker(self, camera_id: str) -> CameraWorker | None:
        """The running worker of a camera, None if it is disabled, unknown or restarting."""
        with self._lock:
            return self._workers.get(camera_id)

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        with self._change_lock:
            with self._lock:
                if self._started:
                    return
                self._started = True
                config = self._config
            self._start_rtsp(config)
            for camera in config.cameras:
                if camera.enabled:
                    self._start_worker(camera)
            self._janitor_stop.clear()
            self._janitor = threading.Thread(
                target=self._janitor_loop, name="retention", daemon=True
            )
            self._janitor.start()
        log.info(
            "pipeline started with %d camera(s)%s",
            len(self._workers),
            f" from {self._config_path}" if self._config_path else " (built-in demo config)",
        )

    def stop(self) -> None:
        """Stop every camera: each flushes its look-ahead and closes its recording."""
        with self._change_lock:
            with self._lock:
                if not self._started:
                    return
                self._started = False
                workers = list(self._workers.values())
                self._workers.clear()
            self._janitor_stop.set()
            janitor, self._janitor = self._janitor, None
            self._stop_workers(workers)
            self._close_detector()
            rtsp, self._rtsp = self._rtsp, None
            if rtsp is not None:
                rtsp.stop()
            if janitor is not None:
                janitor.join(STOP_JOIN_S)
        log.info("pipeline stopped")

    def _start_worker(self, camera: CameraConfig) -> None:
        with self._lock:
            if self._detector is None:
                self._detector = SharedDetector(self._detector_factory, self._store)
            worker = CameraWorker(
                camera,
                self._config,
                detector=self._detector,
                metrics=self._metrics.camera(camera.id),
                retention=self._retention,
                rtsp=self._rtsp,
            )
            self._workers[camera.id] = worker
        worker.start()

    def _start_rtsp(self, config: EdgeblurConfig) -> None:
        """The RTSP server every camera's stream is mounted on (service.rtsp). A missing
        engine or a busy port never stops the cameras: the server's status says why."""
        settings = config.service.rtsp
        if not settings.enabled:
            return
        self._rtsp = RtspServer(
            self._stream_host, settings.port, password=self._stream_password,
            python=settings.python, max_threads=settings.max_threads,
        )
        self._rtsp.start()
        if self._rtsp.serving:
            log.info("anonymised streams on rtsp://%s:%d/<camera-id>", self._stream_host,
                     settings.port)
        else:
            log.warning("no RTSP streams are served: %s", self._rtsp.status)

    def _close_detector(self) -> None:
        with self._lock:
            detector, self._detector = self._detector, None
        if detector is not None:
            detector.close()

    @staticmethod
    def _stop_workers(workers: list[CameraWorker]) -> None:
        for worker in workers:  # signal all first, so they wind down in parallel
            worker.request_stop()
        for worker in workers:
            worker.join()

    @staticmethod
    def _new_retention(config: EdgeblurConfig) -> Retention:
        storage = config.storage
        return Retention(
            storage.data_dir / "recordings", storage.max_age_h * 3600, storage.max_bytes
        )

    def _janitor_loop(self) -> None:
        while True:
            with self._lock:
                retention = self._retention
                workers = list(self._workers.values())
            try:
                retention.enforce()
            except Exception:
                log.exception("retention failed under %s", retention.root)
            if retention.quota_met:
                for worker in workers:
                    worker.resume_recording()
            if self._janitor_stop.wait(RETENTION_EVERY_S):
                return

    # ---- Control --------------------------------------------------------------------------

    def health(self) -> list[CameraStatus]:
        with self._lock:
            cameras = list(self._config.cameras)
            workers = dict(self._workers)
            started = self._started
        statuses = []
        for camera in cameras:
            worker = workers.get(camera.id)
            if worker is not None:
                statuses.append(worker.status())
            elif not camera.enabled:
                statuses.append(_idle_status(camera, "stopped", "disabled"))
            elif started:  # between stopping its old worker and starting the new one
                statuses.append(_idle_status(camera, "starting", "restarting"))
            else:
                statuses.append(_idle_status(camera, "stopped", "pipeline not running"))
        return statuses

    def metrics(self) -> bytes:
        statuses = self.health()
        with self._lock:  # so a camera removed meanwhile does not get its gauges back
            configured = {camera.id for camera in self._config.cameras}
            workers = dict(self._workers)
            rtsp = self._rtsp
            for status in statuses:
                if status.id in configured:
                    self._metrics.set_status(
                        status.id, up=status.state == "running", ready=status.ready,
                        fps=status.fps,
                        viewers=rtsp.viewers(status.id) if rtsp is not None else 0,
                    )
            self._metrics.set_outputs({
                camera_id: [(o.name, o.packets_sent, o.packets_dropped)
                            for o in worker.output_stats()]
                for camera_id, worker in workers.items()
            })
        return self._metrics.render()

    def config(self) -> EdgeblurConfig:
        with self._lock:
            return self._config

    def apply_config(self, new: EdgeblurConfig) -> None:
        """Apply a validated config: cameras added, removed or changed are started, stopped or
        restarted; the others keep running. Writing the config file is the caller's job (the
        service saves it before calling this and restores it if this raises)."""
        with self._change_lock:
            with self._lock:
                old = self._config
                self._config = new
                if new.models.cache_dir != old.models.cache_dir:
                    self._store = ModelStore(new.models.cache_dir)
                if new.storage.data_dir != old.storage.data_dir:
                    self._retention = self._new_retention(new)
                else:  # new limits apply at once, also to the recorders already running
                    self._retention.max_age_s = new.storage.max_age_h * 3600
                    self._retention.max_bytes = new.storage.max_bytes
                wanted = {c.id: c for c in new.cameras if c.enabled}
                old_cameras = {c.id: c for c in old.cameras}
                restart = [
                    cid for cid in self._workers
                    if cid not in wanted
                    or _camera_fingerprint(new, wanted[cid])
                    != _camera_fingerprint(old, old_cameras[cid])
                ]
                stopping = [self._workers.pop(cid) for cid in restart]
                starting = [c for cid, c in wanted.items() if cid not in self._workers]
                started = self._started
            if new.service != old.service:
                log.warning(
                    "service settings changed: they take effect when `edgeblur serve` restarts"
                )
            self._stop_workers(stopping)
            if new.models.cache_dir != old.models.cache_dir:  # every camera was restarted
                self._close_detector()
            with self._lock:  # after its worker stopped, so nothing counts for it any more
                for gone in set(old_cameras) - {c.id for c in new.cameras}:
                    self._metrics.remove_camera(gone)
            if started:
                for camera in starting:
                    self._start_worker(camera)
        unchanged = sorted(set(wanted) - {c.id for c in starting})
        log.info(
            "config applied: stopped %s, started %s, unchanged %s",
            sorted(w.id for w in stopping) or "none",
            sorted(c.id for c in starting) if started else "none (pipeline not running)",
            unchanged or "none",
        )

    def _worker_of(self, camera_id: str) -> CameraWorker | None:
        """The camera's worker (None if not running); KeyError if no such camera."""
        with self._lock:
            if not any(camera.id == camera_id for camera in self._config.cameras):
                raise KeyError(camera_id)
            return self._workers.get(camera_id)

    def snapshot_jpeg(self, camera_id: str) -> bytes | None:
        worker = self._worker_of(camera_id)
        return worker.snapshot.jpeg() if worker is not None else None

    def preview_jpegs(self, camera_id: str) -> Iterator[bytes]:
        worker = self._worker_of(camera_id)
        if worker is None:
            return iter(())
        # Ends when the camera stops or delivers nothing for STOP_JOIN_S seconds.
        return worker.preview.frames(timeout=STOP_JOIN_S)
