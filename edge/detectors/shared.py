"""One detector per box, shared by every camera and file being processed.

A model in memory once, one thread pool sized to the CPUs the process may use, and one
detection at a time: two passes running side by side on two cores are no faster than one
after the other, and each would need its own buffers. Cameras take turns fairly: the one whose
oldest unchecked frame has waited longest goes next.

Each user holds a `DetectionSeat`: it asks for a frame to be searched (`request`, replacing a
request not yet started, so a busy detector always gets the newest frame), and results come
back through its callback, on the detector's thread, in request order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edge.detectors.base import Detector
from edge.types import Detections, Frame

log = logging.getLogger(__name__)

# A missing model is looked for again this often (after `edgeblur models fetch`).
MODEL_RETRY_S = 30.0


class DetectorSettings(Protocol):
    """What the host needs of a detector config: its backend name and a stable identity."""

    @property
    def type(self) -> str: ...

    def model_dump_json(self) -> str: ...


DetectorFactory = Callable[[Any, Any], Detector]  # (detector config, model store) -> Detector


@dataclass(frozen=True, slots=True)
class DetectionResult:
    """The outcome of one request. `detections` is None when the search did not happen or
    failed; `failure` then says why ("detector_error" or "model_unavailable") and `error` how.
    `seconds` is the detect() call's own duration (0 when it did not run)."""

    frame: Frame
    detections: Detections | None
    failure: str = ""
    error: str = ""
    seconds: float = 0.0


class DetectionSeat:
    """One camera's (or file's) place at the shared detector. `request` and `close` are called
    from the owner's thread; the callback runs on the detector's thread and must not block."""

    def __init__(
        self,
        host: SharedDetector,
        name: str,
        settings: DetectorSettings,
        on_result: Callable[[DetectionResult], None],
    ) -> None:
        self.name = name
        self.settings = settings
        self.key = settings.model_dump_json()
        self._host = host
        self._on_result = on_result
        self._pending: Frame | None = None
        self._waiting_since = 0.0  # monotonic: the owner's oldest frame waiting on this seat
        self._closed = False

    def request(self, frame: Frame, waiting_since: float | None = None) -> None:
        """Search `frame` next, replacing a request the detector has not started yet.
        `waiting_since` (monotonic) is how long this seat has had frames waiting, for
        fairness between seats; default now."""
        with self._host._cond:
            if self._closed:
                return
            if self._pending is None:
                self._waiting_since = time.monotonic() if waiting_since is None else waiting_since
            self._pending = frame
            self._host._cond.notify_all()

    @property
    def pending(self) -> bool:
        """A request is waiting for the detector (not started yet)."""
        with self._host._cond:
            return self._pending is not None

    def status(self) -> tuple[bool, str]:
        """(the model is loaded, why it is not: empty while loading or when loaded)."""
        return self._host.model_status(self.key)

    def wait_for_model(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for this seat's model to be loaded or to have failed to
        load; True once either is known. The model starts loading when the seat is made."""
        with self._host._cond:
            return self._host._cond.wait_for(
                lambda: self._closed or any(self._host.model_status(self.key)), timeout_s
            )

    def detect_now(self, image: Any) -> Detections:
        """Search one image at once, ahead of every seat's turn (the second look after
        masking, whose frame is already waiting to be delivered); raises what detect() raises."""
        return self._host.detect_now(self.settings, image)

    def close(self) -> None:
        """Leave the detector; a request not started is dropped, a result in progress is
        still delivered."""
        with self._host._cond:
            self._closed = True
            self._pending = None
        self._host._leave(self)


@dataclass
class _Model:
    settings: DetectorSettings
    detector: Detector | None = None
    error: str = ""
    tried_at: float | None = None  # monotonic, the last attempt to load it
    users: int = 0


@dataclass
class _Urgent:
    settings: DetectorSettings
    image: Any
    done: threading.Event
    result: Detections | None = None
    error: BaseException | None = None


class SharedDetector:
    """Owns the detectors (one per distinct detector config) and the one thread that runs
    them. Built by whoever owns the process's cameras (`Pipeline`, `edgeblur video`)."""

    def __init__(self, factory: DetectorFactory, store: Any) -> None:
        self._factory = factory
        self._store = store
        self._cond = threading.Condition()
        self._seats: list[DetectionSeat] = []
        self._urgent: list[_Urgent] = []
        self._models: dict[str, _Model] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="detector", daemon=True)
        self._thread.start()

    def seat(
        self, name: str, settings: DetectorSettings, on_result: Callable[[DetectionResult], None]
    ) -> DetectionSeat:
        seat = DetectionSeat(self, name, settings, on_result)
        with self._cond:
            self._seats.append(seat)
            self._models.setdefault(seat.key, _Model(settings)).users += 1
            self._cond.notify_all()  # the detector's thread loads a new model at once
        return seat

    def model_status(self, key: str) -> tuple[bool, str]:
        with self._cond:  # reentrant: also called with the condition held
            model = self._models.get(key)
            if model is None:
                return False, ""
            return model.detector is not None, model.error

    def detect_now(self, settings: DetectorSettings, image: Any) -> Detections:
        job = _Urgent(settings, image, threading.Event())
        with self._cond:
            if self._stopping:
                raise RuntimeError("the shared detector has stopped")
            self._urgent.append(job)
            self._cond.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def close(self) -> None:
        """Stop the thread and close every detector (after the seats have left)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()

    def _leave(self, seat: DetectionSeat) -> None:
        with self._cond:
            if seat in self._seats:
                self._seats.remove(seat)
                model = self._models.get(seat.key)
                if model is not None:
                    model.users -= 1  # at 0 the detector's thread closes it
            self._cond.notify_all()

    # ---- the detector's thread ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (
                    self._stopping
                    or self._urgent
                    or any(s._pending is not None for s in self._seats)
                    or self._unused_models()
                    or self._models_to_load()
                ):
                    self._cond.wait()
                if self._stopping and not self._urgent:
                    unused = list(self._models.values())
                    self._models.clear()
                else:
                    unused = [self._models.pop(key) for key in self._unused_models()]
                urgent = self._urgent.pop(0) if self._urgent else None
                to_load = self._models_to_load()
                load = to_load[0] if urgent is None and not self._stopping and to_load else None
                seat = frame = None
                if urgent is None and load is None and not self._stopping and unused == []:
                    # Fair turns: the seat whose frames have waited longest goes first.
                    seat = min(
                        (s for s in self._seats if s._pending is not None),
                        key=lambda s: s._waiting_since,
                    )
                    frame, seat._pending = seat._pending, None
                stopping = self._stopping and urgent is None
            for model in unused:  # closed here, the only thread that runs them
                if model.detector is not None:
                    _close_quietly(model.detector)
            if urgent is not None:
                self._run_urgent(urgent)
            elif load is not None:
                self._model(load)
            elif seat is not None and frame is not None:
                result = self._search(seat, frame)
                try:
                    seat._on_result(result)
                except Exception:  # the owner's bug must not stop every camera's detection
                    log.exception("detector: delivering a result to %s failed", seat.name)
            if stopping:
                return

    def _unused_models(self) -> list[str]:
        return [key for key, model in self._models.items() if model.users <= 0]

    def _models_to_load(self) -> list[DetectorSettings]:
        """Models in use that were never tried: loaded before any search, so a camera's
        first frame is not the one that waits for the model (see `wait_for_model`)."""
        return [m.settings for m in self._models.values() if m.users > 0 and m.tried_at is None]

    def _run_urgent(self, job: _Urgent) -> None:
        try:
            detector, error = self._model(job.settings)
            if detector is None:
                raise RuntimeError(error)
            job.result = detector.detect(job.image)
        except BaseException as exc:  # handed to the waiting caller
            job.error = exc
        finally:
            job.done.set()

    def _model(self, settings: DetectorSettings) -> tuple[Detector | None, str]:
        """The detector for `settings`, loading it (at most every MODEL_RETRY_S after a
        failure); else (None, why)."""
        key = settings.model_dump_json()
        with self._cond:
            model = self._models.setdefault(key, _Model(settings))
            if model.detector is not None:
                return model.detector, ""
            if model.tried_at is not None and time.monotonic() - model.tried_at < MODEL_RETRY_S:
                return None, model.error
            model.tried_at = time.monotonic()
        try:
            detector = self._factory(settings, self._store)
        except Exception as error:  # ModelError, DetectorError, or a backend's import error
            message = str(error) or type(error).__name__
            with self._cond:
                if message != model.error:
                    log.error("detector %s unavailable: %s", settings.type, message)
                model.error = message
                self._cond.notify_all()  # wakes wait_for_model
            return None, message
        with self._cond:
            if model.error:
                log.warning("detector %s loaded, model error cleared", settings.type)
            model.detector, model.error = detector, ""
            self._cond.notify_all()
        return detector, ""

    def _search(self, seat: DetectionSeat, frame: Frame) -> DetectionResult:
        detector, error = self._model(seat.settings)
        if detector is None:
            return DetectionResult(frame, None, "model_unavailable", error)
        try:
            started = time.perf_counter()
            detections = detector.detect(frame.image)
            seconds = time.perf_counter() - started
        except Exception as exc:  # DetectorError, or anything a backend let escape
            message = f"detector {seat.settings.type}: {exc}"
            return DetectionResult(frame, None, "detector_error", message)
        return DetectionResult(frame, detections, seconds=seconds)


def _close_quietly(detector: Detector) -> None:
    try:
        detector.close()
    except Exception:
        log.exception("closing detector %s failed", getattr(detector, "name", "?"))
