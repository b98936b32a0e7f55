"""What the service tests share: `FakeControl`, the test config and its secrets, wait_until.

A module of its own (not conftest.py) so that test files and subprocess scripts can import it.
`FakeControl` is an in-memory implementation of the `edge.control.Control` protocol: the service
is specified against that protocol; the real pipeline behind real uvicorn is covered by
tests/e2e.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from prometheus_client import CollectorRegistry, Counter, generate_latest
from waiting import wait_until  # noqa: F401 - re-exported for the service tests

from edge.config import EdgeblurConfig
from edge.control import CameraStatus

TOKEN = "test-token-0123456789abcdef"
RTSP_PASSWORD = "s3cret-pass"
MJPEG_PASSWORD = "mjpeg-pw-42"
RTSP_URL = f"rtsp://admin:{RTSP_PASSWORD}@192.0.2.10:554/stream1"
MJPEG_URL = f"http://viewer:{MJPEG_PASSWORD}@192.0.2.11/video.mjpg"


def config_dict(tmp_path: Path) -> dict[str, Any]:
    """Three cameras: an RTSP one and a disabled MJPEG one with credentials, and a demo one."""
    return {
        "storage": {"data_dir": str(tmp_path / "data")},
        "cameras": [
            {"id": "gate", "source": {"type": "rtsp", "url": RTSP_URL}},
            {"id": "hall", "source": {"type": "demo", "width": 320, "height": 240}},
            {"id": "spare", "enabled": False, "source": {"type": "mjpeg", "url": MJPEG_URL}},
        ],
    }


def make_jpegs(count: int = 3) -> list[bytes]:
    """Small distinct JPEGs standing in for redacted frames (no faces, nothing to leak)."""
    jpegs = []
    for i in range(count):
        image = np.zeros((48, 64, 3), np.uint8)
        image[:, :, i % 3] = 40 + 60 * i
        ok, encoded = cv2.imencode(".jpg", image)
        assert ok
        jpegs.append(encoded.tobytes())
    return jpegs


class FakeControl:
    """In-memory `Control`: cameras from the config, all ready with frames unless told otherwise.

    Safe to call from any thread (the service calls it from request worker threads).
    `preview_jpegs` is a generator function, so an unknown camera raises KeyError only when it
    is first iterated, as the protocol allows; previews run until `stop()`.
    """

    def __init__(self, config: EdgeblurConfig) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._not_ready: dict[str, str] = {}
        self.jpegs = make_jpegs()
        self.snapshots: dict[str, bytes | None] = {c.id: self.jpegs[0] for c in config.cameras}
        self.silent: set[str] = set()  # cameras whose previews deliver nothing
        self.applied: list[EdgeblurConfig] = []
        self.apply_error: Exception | None = None
        self.health_error: Exception | None = None
        self.open_previews = 0
        self._stopped = threading.Event()
        self._registry = CollectorRegistry()
        self._frames_out = Counter(
            "edgeblur_frames_out", "Redacted frames delivered.", ["camera"], registry=self._registry
        )
        for camera in config.cameras:
            self._frames_out.labels(camera=camera.id).inc(10)

    def set_ready(self, camera_id: str, ready: bool, reason: str = "") -> None:
        with self._lock:
            if ready:
                self._not_ready.pop(camera_id, None)
            else:
                self._not_ready[camera_id] = reason

    def stop(self) -> None:
        self._stopped.set()

    # ---- Control ----

    def health(self) -> list[CameraStatus]:
        if self.health_error is not None:
            raise self.health_error
        with self._lock:
            cameras, not_ready = list(self._config.cameras), dict(self._not_ready)
        return [
            CameraStatus(
                id=camera.id,
                enabled=camera.enabled,
                state="running" if camera.enabled else "stopped",
                fps=15.0 if camera.enabled else 0.0,
                ready=camera.enabled and camera.id not in not_ready,
                reason="disabled" if not camera.enabled else not_ready.get(camera.id, ""),
                last_error="",
                recording="recording" if camera.enabled else "off",
                frames_in=12,
                frames_out=10,
                frames_withheld=2,
                faces_redacted=7,
                detections_per_s=4.5 if camera.enabled else 0.0,
                frames_dropped=3,
                stream_url=f"rtsp://127.0.0.1:8554/{camera.id}" if camera.enabled else "",
                stream="serving (1 viewers)" if camera.enabled else "off",
            )
            for camera in cameras
        ]

    def metrics(self) -> bytes:
        return generate_latest(self._registry)

    def config(self) -> EdgeblurConfig:
        with self._lock:
            return self._config

    def apply_config(self, new: EdgeblurConfig) -> None:
        if self.apply_error is not None:
            raise self.apply_error
        with self._lock:
            self.applied.append(new)
            known = {camera.id for camera in self._config.cameras}
            for camera in new.cameras:
                if camera.id not in known:
                    self._not_ready[camera.id] = "starting"
                    self.snapshots[camera.id] = None
            self._config = new

    def snapshot_jpeg(self, camera_id: str) -> bytes | None:
        with self._lock:
            if camera_id not in {camera.id for camera in self._config.cameras}:
                raise KeyError(camera_id)
            return self.snapshots.get(camera_id)

    def preview_jpegs(self, camera_id: str) -> Iterator[bytes]:
        if camera_id not in {camera.id for camera in self.config().cameras}:
            raise KeyError(camera_id)
        with self._lock:
            self.open_previews += 1
        try:
            index = 0
            while not self._stopped.is_set():
                if camera_id in self.silent:
                    self._stopped.wait(0.05)
                    continue
                yield self.jpegs[index % len(self.jpegs)]
                index += 1
                self._stopped.wait(0.02)  # ~50 fps, like a camera, not a busy loop
        finally:
            with self._lock:
                self.open_previews -= 1


