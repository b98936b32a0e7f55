"""The narrow interface between the FastAPI service and the camera pipeline.

No raw frames or pixels cross it; the only images are JPEGs of redacted frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from edge.config import EdgeblurConfig


@dataclass(frozen=True)
class CameraStatus:
    id: str
    enabled: bool
    state: str  # "starting" | "running" | "reconnecting" | "failed" | "stopped"
    fps: float  # redacted frames delivered per second, recent average
    ready: bool  # delivering redacted frames and its model is loaded
    reason: str  # why not ready, empty when ready
    last_error: str  # most recent error message, empty if none
    # "off" (no recorder) | "idle" | "recording" | "disk_full" | "failed" | "stopped": a full
    # disk stops recording but not redaction, so the camera stays ready and says so here
    recording: str
    frames_in: int
    frames_out: int
    frames_withheld: int
    faces_redacted: int
    detections_per_s: float = 0.0  # detector runs on this camera's frames, recent average
    frames_dropped: int = 0  # frames dropped at ingest to keep the rate the box can check
    stream_url: str = ""  # the anonymised RTSP stream, without credentials; "" when off
    stream: str = "off"  # "serving (N viewers)", "off", or the server's state and why not


class Control(Protocol):
    def health(self) -> list[CameraStatus]:
        """Status of every configured camera (the service derives /readyz from it)."""
        ...

    def metrics(self) -> bytes:
        """Prometheus text exposition of the pipeline's metrics."""
        ...

    def config(self) -> EdgeblurConfig: ...

    def apply_config(self, new: EdgeblurConfig) -> None:
        """Apply a validated config, restarting only the cameras whose settings changed."""
        ...

    def snapshot_jpeg(self, camera_id: str) -> bytes | None:
        """Latest redacted frame of a camera as JPEG; None if it has none yet. KeyError if the
        camera is unknown."""
        ...

    def preview_jpegs(self, camera_id: str) -> Iterator[bytes]:
        """Redacted frames as JPEG, one per new frame, until the camera stops. KeyError if the
        camera is unknown."""
        ...
