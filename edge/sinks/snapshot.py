"""The latest redacted frame of a camera, as JPEG on demand."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from edge.errors import SinkError
from edge.media import atomic_output
from edge.sinks.base import Sink
from edge.types import RedactedFrame


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """JPEG bytes of a uint8 (H, W, 3) BGR image. `quality` is 1-100."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1-100, got {quality}")
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise SinkError(f"JPEG encoding failed for a {image.shape} {image.dtype} image")
    return buffer.tobytes()


def snapshot_path(data_dir: Path, camera_id: str, when: float | None = None) -> Path:
    """Where an on-demand snapshot goes: `<data_dir>/snapshots/<camera>/<YYYYmmdd-HHMMSS-fff>.jpg`
    (UTC; `when` in seconds since the epoch, default now)."""
    moment = datetime.fromtimestamp(time.time() if when is None else when, timezone.utc)
    name = moment.strftime("%Y%m%d-%H%M%S-") + f"{moment.microsecond // 1000:03d}.jpg"
    return Path(data_dir) / "snapshots" / camera_id / name


class SnapshotSink(Sink):
    """Holds only the latest RedactedFrame (a reference; its image is read-only).

    Threads: the pipeline thread calls write(); HTTP threads call jpeg() and save(). Encoding
    happens in the caller's thread, outside the lock, so a reader never delays the pipeline.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: RedactedFrame | None = None

    def _write(self, frame: RedactedFrame) -> None:
        with self._lock:
            self._latest = frame

    @property
    def latest(self) -> RedactedFrame | None:
        with self._lock:
            return self._latest

    def jpeg(self, quality: int = 85) -> bytes | None:
        """JPEG of the latest frame, or None if no frame has arrived yet."""
        frame = self.latest
        return None if frame is None else encode_jpeg(frame.image, quality)

    def save(self, path: Path, quality: int = 85) -> Path | None:
        """Write the latest frame to `path` as JPEG, atomically (no partial file on failure).
        Returns the path, or None if no frame has arrived yet. Raises SinkError on I/O errors."""
        data = self.jpeg(quality)
        if data is None:
            return None
        try:
            with atomic_output(Path(path)) as temp:
                temp.write_bytes(data)
        except OSError as error:
            raise SinkError(f"cannot save snapshot {path}: {error}") from error
        return Path(path)
