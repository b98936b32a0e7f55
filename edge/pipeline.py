"""The camera pipeline behind `edgeblur serve`: one CameraWorker per enabled camera, wired

    source -> [ingest thread] -> mailbox (newest frame) -> [processing thread]:
        detect -> TemporalMasker -> redact / fail closed -> sinks (recording, snapshot, preview)

Frames flow one way. Raw `Frame`s live only in memory (the mailbox, the look-ahead buffer);
the sinks are handed `RedactedFrame`s only, which only `edge.redact` can make.

Fail closed: a frame whose detection raised, took longer than the camera's latency budget, or
could not run because the model is missing, is withheld or fully masked (`fail_policy`),
never passed on raw. So is every frame the detector skipped (`detect_every` > 1) unless the
detections on both sides of it succeeded. Each such frame is counted in the metrics, and
logged once per episode (when it starts and when it ends, with the count), not per frame.

`Pipeline` implements `edge.control.Control`, the only thing the service sees.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from edge.config import CameraConfig, EdgeblurConfig
from edge.control import CameraStatus
from edge.detectors.base import Detector
from edge.detectors.registry import DetectorConfig, build_detector
from edge.errors import SinkError, SourceError
from edge.metrics import CameraMetrics, PipelineMetrics
from edge.models import ModelStore
from edge.motion import MotionMasker
from edge.redact import Redactor
from edge.sinks.preview import PreviewSink
from edge.sinks.retention import Retention
from edge.sinks.segments import SegmentRecorder
from edge.sinks.snapshot import SnapshotSink
from edge.sources.base import Source
from edge.sources.registry import build_source
from edge.tracking.lookahead import TemporalMasker
from edge.types import Detections, Frame, RedactedFrame

log = logging.getLogger(__name__)

DetectorFactory = Callable[[DetectorConfig, ModelStore], Detector]

DEFAULT_FPS = 15.0  # when a source cannot say its frame rate (recording pts, readiness window)
READY_MIN_WINDOW_S = 2.0  # ready needs a redacted frame within max(this, 3 frame intervals)
FPS_WINDOW_S = 5.0  # fps is averaged over this many seconds of delivered frames
MODEL_RETRY_S = 30.0  # a missing model is looked for again this often (after `models fetch`)
RETENTION_EVERY_S = 60.0  # retention also runs on this period, besides after each segment
PREVIEW_MAX_FPS = 5.0  # the live preview is for a human glancing at it
STOP_JOIN_S = 20.0  # longer than any source's read timeout, so threads end on their own
MAILBOX_POLL_S = 0.25


class FrameMailbox:
    """Hands raw frames from the ingest thread to the processing thread, holding at most one.

    Live sources (`block_when_full=False`): a new frame replaces one not yet taken, which is
    counted as dropped, so processing always gets the newest frame and latency stays bounded.
    Sources read as fast as possible (`block_when_full=True`): put() waits for the slot, so
    every frame is processed. close() wakes both sides; get() drains the last frame first.
    """

    def __init__(self, *, block_when_full: bool) -> None:
        self._block = block_when_full
        self._frame: Frame | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, frame: Frame) -> int:
        """Offer a frame; return how many frames were dropped to make room (0 or 1)."""
        with self._cond:
            if self._block:
                while self._frame is not None and not self._closed:
                    self._cond.wait()
            if self._closed:
                return 0
            dropped = 1 if self._frame is not None else 0
            self._frame = frame
            self._cond.notify_all()
            return dropped

    def get(self, timeout: float) -> Frame | None:
        """The waiting frame, or None after `timeout` seconds or once closed and empty."""
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def drained(self) -> bool:
        """Closed and nothing left to take: the processing thread can finish."""
        with self._cond:
            return self._closed and self._frame is None


@dataclass(slots=True)
class _Held:
    """A raw frame the processing thread holds until the TemporalMasker releases it."""

    frame: Frame
    motion: Detections  # motion-mode boxes for this frame (empty when motion is off)
    fail: str = ""  # a FAIL_REASONS entry: this frame must be withheld or fully masked
    awaiting_detection: bool = False  # skipped by detect_every, its next detection not yet run


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


class CameraWorker:
    """Runs one camera: an ingest thread (source -> mailbox) and a processing thread
    (mailbox -> detector -> masker -> redactor -> sinks). Built and started by `Pipeline`.

    The ingest thread owns the Source; the processing thread owns the detector, the masker,
    the motion masker and the sinks' write(). status() and the sinks' readers (snapshot,
    preview) may be called from any thread.
    """

    def __init__(
        self,
        camera: CameraConfig,
        config: EdgeblurConfig,
        *,
        store: ModelStore,
        metrics: CameraMetrics,
        retention: Retention,
        detector_factory: DetectorFactory,
    ) -> None:
        self.camera = camera
        self.id = camera.id
        self._detector_config = config.detector_for(camera)
        self._tracking = config.tracking
        self._recordings_dir = config.storage.data_dir / "recordings"
        self._store = store
        self._metrics = metrics
        self._retention = retention
        self._detector_factory = detector_factory
        self._redactor = Redactor(config.redaction)
        self._motion_only = camera.motion.mode == "only"
        # Sources not paced in real time (files, demo with realtime: false) are read for
        # every frame, so the mailbox makes them wait instead of dropping.
        self._mailbox = FrameMailbox(block_when_full=not getattr(camera.source, "realtime", True))
        self._stop = threading.Event()
        self.snapshot = SnapshotSink()
        self.preview = PreviewSink(PREVIEW_MAX_FPS)
        self._recorder: SegmentRecorder | None = None
        self._threads: list[threading.Thread] = []

        # Owned by the processing thread.
        self._detector: Detector | None = None
        self._warm_shape: tuple[int, ...] = ()  # frame shape the detector has run on
        self._model_tried_at = -MODEL_RETRY_S  # monotonic time of the last load attempt
        self._motion = MotionMasker(camera.motion) if camera.motion.mode != "off" else None
        self._masker = TemporalMasker(self._tracking)
        self._held: deque[_Held] = deque()  # every frame pushed into the masker, in order
        self._unchecked: list[_Held] = []  # skipped frames waiting for their next detection
        self._last_detection_ok = True
        self._last_fail = ""  # reason the last detection failed, empty if it succeeded
        self._frame_count = 0
        self._withheld_log = _Episode(
            self.id,
            "frames fully masked" if camera.fail_policy == "mask" else "frames withheld",
            "frames",
        )
        self._sink_log = _Episode(self.id, "sink failing", "frames")

        # Status, written by the two threads, read by status() under _lock.
        self._lock = threading.Lock()
        self._source_state = "starting"  # starting | running | reconnecting | failed | stopped
        self._model_error = ""  # why there is no detector, empty when loaded (or not needed)
        self._model_loaded = self._motion_only
        self._last_error = ""
        self._failing = ""  # reason of the fail-closed episode in progress, empty if none
        self._fps_hint: float | None = None
        self._last_redacted_at: float | None = None  # monotonic time of last normal redaction
        self._delivered_at: deque[float] = deque()  # monotonic times, last FPS_WINDOW_S
        self._started_at: float | None = None  # monotonic time of start()
        self.frames_in = 0
        self.frames_out = 0
        self.frames_withheld = 0
        self.frames_fully_masked = 0
        self.faces_redacted = 0
        self.frames_dropped = 0
        self.reconnects = 0

    # ---- lifecycle (called by Pipeline) -------------------------------------------------

    def start(self) -> None:
        self._started_at = time.monotonic()
        self.snapshot.start()
        self.preview.start()
        self._threads = [
            threading.Thread(target=self._ingest, name=f"ingest-{self.id}", daemon=True),
            threading.Thread(target=self._process, name=f"process-{self.id}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def request_stop(self) -> None:
        """Ask both threads to finish; the processing thread drains what it holds."""
        self._stop.set()
        self._mailbox.close()

    def join(self, timeout: float = STOP_JOIN_S) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.error("camera %s: thread %s did not stop in %.0f s", self.id, thread.name,
                          timeout)
        for sink in (self.snapshot, self.preview):
            sink.stop()

    # ---- status ---------------------------------------------------------------------------

    def status(self) -> CameraStatus:
        """This camera's state, from its own counters. Ready: its model is loaded (or motion
        mode needs none), the source runs, and a frame was redacted normally within the last
        max(2 s, 3 frame intervals). frames_withheld counts every frame that failed closed,
        withheld or fully masked (the metrics tell the two apart)."""
        now = time.monotonic()
        with self._lock:
            while self._delivered_at and now - self._delivered_at[0] > FPS_WINDOW_S:
                self._delivered_at.popleft()
            span = FPS_WINDOW_S if self._started_at is None else min(
                FPS_WINDOW_S, now - self._started_at
            )
            fps = len(self._delivered_at) / span if span > 0.5 else 0.0
            interval = 1.0 / (self._fps_hint or DEFAULT_FPS)
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
            return CameraStatus(
                id=self.id,
                enabled=True,
                state=state,
                fps=round(fps, 2),
                ready=not reason,
                reason=reason,
                last_error=self._last_error,
                recording=self._recorder.state if self._recorder is not None else "off",
                frames_in=self.frames_in,
                frames_out=self.frames_out,
                frames_withheld=self.frames_withheld + self.frames_fully_masked,
                faces_redacted=self.faces_redacted,
            )

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
            self._read_until_stopped(source, outage)
        except Exception as error:  # a bug or an unexpected library error: stop this camera
            log.exception("camera %s: ingest failed", self.id)
            self._set(source_state="failed", last_error=f"ingest failed: {error}")
        finally:
            self._mailbox.close()
            outage.end(stopping=True)
            if source is not None:
                try:
                    source.close()
                except Exception:
                    log.exception("camera %s: closing the source failed", self.id)

    def _read_until_stopped(self, source: Source, outage: _Episode) -> None:
        """Open (retrying with backoff while the error is retryable) and read frames into the
        mailbox until the source ends, fails for good, or the worker stops.

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
                    self._set(fps_hint=source.fps_hint)
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
            if frame is None:  # the processing thread reports "stopped" once it has drained
                log.info("camera %s: source ended", self.id)
                return
            delay = delay_min
            if outage.reason:
                outage.end()
            if self._source_state != "running":
                with self._lock:
                    if self._source_state != "failed":  # the processing thread may have failed
                        self._source_state = "running"
            self.frames_in += 1
            self._metrics.frames_in()
            dropped = self._mailbox.put(frame)
            new_dropped = source.dropped - counted_dropped
            new_reconnects = source.reconnects - counted_reconnects
            counted_dropped, counted_reconnects = source.dropped, source.reconnects
            self.frames_dropped += dropped + new_dropped
            self._metrics.frames_dropped(dropped + new_dropped)
            self.reconnects += new_reconnects
            self._metrics.reconnects(new_reconnects)

    # ---- processing thread ----------------------------------------------------------------

    def _process(self) -> None:
        try:
            while True:
                frame = self._mailbox.get(MAILBOX_POLL_S)
                if frame is None:
                    if self._mailbox.drained:
                        break
                    continue
                self._handle(frame)
            # End of stream or stop: release what the look-ahead holds, checked or not.
            for held in self._unchecked:
                held.fail = held.fail or "end_of_stream"
            self._unchecked.clear()
            self._emit(self._masker.flush())
        except Exception as error:  # a bug: stop this camera rather than run it unchecked
            log.exception("camera %s: processing failed", self.id)
            self._set(source_state="failed", last_error=f"processing failed: {error}")
            self.request_stop()
        finally:
            self._withheld_log.end(stopping=True)
            self._sink_log.end(stopping=True)
            self._stop_recorder()
            if self._detector is not None:
                self._detector.close()
            with self._lock:
                if self._source_state != "failed":
                    self._source_state = "stopped"

    def _load_detector(self) -> None:
        """Build the detector (loading its model); on failure the camera fails closed and the
        model is looked for again every MODEL_RETRY_S seconds."""
        if self._motion_only or self._detector is not None:
            return
        now = time.monotonic()
        if now - self._model_tried_at < MODEL_RETRY_S:
            return
        self._model_tried_at = now
        try:
            self._detector = self._detector_factory(self._detector_config, self._store)
        except Exception as error:  # ModelError, DetectorError, or a backend's import error
            message = str(error) or type(error).__name__
            if message != self._model_error:
                log.error("camera %s: detector %s unavailable: %s", self.id,
                          self._detector_config.type, message)
            self._set(model_error=message, last_error=message)
            return
        if self._model_error:
            log.warning("camera %s: detector %s loaded, model error cleared", self.id,
                        self._detector_config.type)
        self._warm_shape = ()
        self._set(model_error="", model_loaded=True)

    def _handle(self, frame: Frame) -> None:
        """Detect on `frame` (or skip it), push it into the masker and emit what it releases."""
        held = _Held(frame, Detections.empty())
        try:
            self._load_detector()
            if self._motion is not None:
                held.motion = self._motion.boxes(frame.image)
            if self._motion_only:
                self._held.append(held)
                self._emit([(frame, Detections.empty())])
                return
            detections: Detections | None = None
            if self._frame_count % self._tracking.detect_every == 0:
                detections, reason = self._detect(frame)
                if reason:
                    held.fail = reason
                    for skipped in self._unchecked:
                        skipped.fail = skipped.fail or reason
                    detections = detections if detections is not None else Detections.empty()
                for skipped in self._unchecked:
                    skipped.awaiting_detection = False
                self._unchecked.clear()
                self._last_detection_ok = not reason
                self._last_fail = reason
            elif self._last_detection_ok:
                held.awaiting_detection = True
                self._unchecked.append(held)
            else:
                held.fail = self._last_fail
            self._frame_count += 1
            self._held.append(held)
            ready = self._masker.push(frame, detections)
        except Exception as error:
            self._processing_error(held, error)
            return
        self._emit(ready)

    def _processing_error(self, held: _Held, error: Exception) -> None:
        """Something failed between the source and the masker: every frame held is released
        fail-closed, and tracking starts afresh."""
        log.exception("camera %s: processing error", self.id)
        self._set(last_error=f"processing error: {error}")
        if not self._held or self._held[-1] is not held:
            self._held.append(held)
        for entry in self._held:
            entry.fail = entry.fail or "processing_error"
        self._unchecked.clear()
        self._masker = TemporalMasker(self._tracking)
        self._emit([(entry.frame, Detections.empty()) for entry in list(self._held)])

    def _detect(self, frame: Frame) -> tuple[Detections | None, str]:
        """Run the detector: (detections or None, fail reason or "")."""
        if self._detector is None:
            return None, "model_unavailable"
        if frame.image.shape != self._warm_shape:
            # The first inference at a new frame size allocates buffers and can take several
            # times longer than the rest: run it once untimed, so a cold start is not mistaken
            # for an overloaded detector (its result is not used).
            if self._run_detector(frame) is None:
                return None, "detector_error"
            self._warm_shape = frame.image.shape
        started = time.perf_counter()
        detections = self._run_detector(frame)
        if detections is None:
            return None, "detector_error"
        elapsed = time.perf_counter() - started
        self._metrics.detector_latency(elapsed)
        budget_ms = self.camera.latency_budget_ms
        if elapsed * 1000 > budget_ms:
            # The late result still feeds the tracker; this frame is not trusted with it.
            self._set(
                last_error=f"detection took {elapsed * 1000:.0f} ms, over the latency budget "
                f"of {budget_ms:.0f} ms"
            )
            return detections, "over_budget"
        return detections, ""

    def _run_detector(self, frame: Frame) -> Detections | None:
        """detect(), or None (with last_error set) when it raised."""
        assert self._detector is not None
        try:
            return self._detector.detect(frame.image)
        except Exception as error:  # DetectorError, or anything a backend let escape
            self._set(last_error=f"detector {self._detector_config.type}: {error}")
            return None

    def _emit(self, ready: list[tuple[Frame, Detections]]) -> None:
        """Redact (or fail closed) each released frame, in order, and deliver it."""
        for frame, boxes in ready:
            held = self._take_held(frame)
            if held is None or held.awaiting_detection:
                # The masker released a frame we did not hand it, or before the detection
                # that checks it: never trust it.
                self._fail_closed(frame, "processing_error")
                continue
            if held.fail:
                self._fail_closed(frame, held.fail)
                continue
            try:
                # The second look runs on every frame, with its final masks (tracked and
                # look-ahead boxes included), since those are what is recorded.
                redacted = self._redactor.redact(
                    frame, Detections.merge([boxes, held.motion]), look_again=self._detector
                )
            except Exception as error:
                log.exception("camera %s: redaction failed", self.id)
                self._set(last_error=f"redaction failed: {error}")
                self._fail_closed(frame, "processing_error")
                continue
            self._withheld_log.end()
            self._set(failing="")
            self._deliver(redacted)

    def _take_held(self, frame: Frame) -> _Held | None:
        while self._held:
            held = self._held.popleft()
            if held.frame is frame:
                return held
        return None

    def _fail_closed(self, frame: Frame, reason: str) -> None:
        detail = self._model_error or self._last_error or reason
        self._withheld_log.event(reason, detail)
        self._set(failing=reason)
        if self.camera.fail_policy == "mask":
            self.frames_fully_masked += 1
            self._metrics.frames_fully_masked(reason)
            self._deliver(self._redactor.mask_all(frame, reason))
        else:
            self.frames_withheld += 1
            self._metrics.frames_withheld(reason)

    def _deliver(self, redacted: RedactedFrame) -> None:
        """Hand one RedactedFrame to every sink. A sink error is counted and logged (once per
        episode) and never stops the camera."""
        if self.camera.recording.enabled:
            if self._recorder is None:
                self._recorder = SegmentRecorder(
                    self._recordings_dir,
                    self.id,
                    self.camera.recording.segment_s,
                    self._fps_hint or DEFAULT_FPS,
                    self._retention,
                )
                self._recorder.start()
            self._write("recording", self._recorder, redacted)
        self._write("snapshot", self.snapshot, redacted)
        self._write("preview", self.preview, redacted)
        now = time.monotonic()
        self.frames_out += 1
        self._metrics.frames_out()
        self.faces_redacted += redacted.record.regions
        self._metrics.faces_redacted(redacted.record.regions)
        with self._lock:
            self._delivered_at.append(now)
            while now - self._delivered_at[0] > FPS_WINDOW_S:
                self._delivered_at.popleft()
            if not redacted.record.fully_masked:
                self._last_redacted_at = now

    def _write(self, name: str, sink: SegmentRecorder | SnapshotSink | PreviewSink,
               frame: RedactedFrame) -> None:
        try:
            sink.write(frame)
        except Exception as error:  # SinkError by contract; anything else is counted the same
            self._metrics.sink_errors(name)
            self._set(last_error=str(error))
            self._sink_log.event(name, str(error))
            if not isinstance(error, SinkError):
                log.exception("camera %s: %s sink failed", self.id, name)

    def _stop_recorder(self) -> None:
        if self._recorder is None:
            return
        try:
            self._recorder.stop()
        except SinkError as error:
            # The recorder deleted the unfinished file; nothing raw was ever in it.
            self._metrics.sink_errors("recording")
            self._set(last_error=str(error))
            log.error("camera %s: %s", self.id, error)

    def resume_recording(self) -> None:
        """Retry recording after a full disk or a write failure (called by the janitor)."""
        if self._recorder is not None and self._recorder.state in ("disk_full", "failed"):
            log.info("camera %s: retrying recording after: %s", self.id,
                     self._recorder.last_error)
            self._recorder.resume()


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
    only: the service writes it. `detector_factory` is for tests that must produce faults a
    real detector cannot.
    """

    def __init__(
        self,
        config: EdgeblurConfig,
        config_path: Path | None = None,
        *,
        detector_factory: DetectorFactory = build_detector,
    ) -> None:
        self._config = config
        self._config_path = config_path
        self._detector_factory = detector_factory
        self._metrics = PipelineMetrics()
        self._store = ModelStore(config.models.cache_dir)
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
            if janitor is not None:
                janitor.join(STOP_JOIN_S)
        log.info("pipeline stopped")

    def _start_worker(self, camera: CameraConfig) -> None:
        with self._lock:
            worker = CameraWorker(
                camera,
                self._config,
                store=self._store,
                metrics=self._metrics.camera(camera.id),
                retention=self._retention,
                detector_factory=self._detector_factory,
            )
            self._workers[camera.id] = worker
        worker.start()

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
            for status in statuses:
                if status.id in configured:
                    self._metrics.set_status(
                        status.id, up=status.state == "running", ready=status.ready,
                        fps=status.fps,
                    )
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
