"""Config models of the live stream outputs, for edge.config to hold:

    service:  rtsp: RtspServerConfig          (the pull server, one per service)
    cameras[]: stream: StreamOutputConfig     (this camera's mount, its pushes, its encoder)

No I/O here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.streaming.push import check_push_url


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RtspServerConfig(_Strict):
    """The RTSP pull server: rtsp://HOST:PORT/<camera-id> for each camera, bound to
    service.host like the API. Viewers sign in as user `edgeblur` with the service token;
    without a token it serves only on a loopback address."""

    enabled: bool = Field(
        True, description="Serve every camera's anonymised stream over RTSP (pull)."
    )
    port: int = Field(8554, ge=1, le=65535, description="RTSP port (TCP).")
    max_threads: int = Field(
        32,
        ge=2,
        le=1024,
        description="Threads serving viewers; more than one, else a viewer waiting for its "
        "first frame holds up all others.",
    )
    python: str = Field(
        "/usr/bin/python3",
        description="The interpreter with Debian's GStreamer bindings (python3-gi) that runs "
        "the server process.",
    )


class PushOutputConfig(_Strict):
    """Publish this camera's anonymised stream to an operator's RTSP server (RECORD)."""

    url: str = Field(
        ...,
        description="rtsp://[user:password@]host[:port]/path of the target (MediaMTX, go2rtc, "
        "Wowza). ${EDGEBLUR_CAM_*} placeholders in user:password are read from the "
        "environment at each connection; nowhere else.",
    )
    enabled: bool = Field(True, description="Publish to this target.")
    transport: Literal["tcp", "udp"] = Field(
        "tcp", description="RTP over the RTSP connection (tcp) or over UDP."
    )
    timeout_s: float = Field(
        5.0, gt=0, le=60, description="Give up a connection attempt or a stalled write after this."
    )
    max_backoff_s: float = Field(
        30.0, ge=1, le=600, description="Longest wait between reconnection attempts."
    )
    queue_frames: int = Field(
        30,
        ge=1,
        le=1000,
        description="Frames held for this target while it is slow; beyond that they are "
        "dropped (counted) and sending resumes at the next keyframe.",
    )

    @field_validator("url")
    @classmethod
    def _safe_url(cls, url: str) -> str:
        return check_push_url(url)


class StreamOutputConfig(_Strict):
    """This camera's live outputs. The camera is encoded once for these and the recording."""

    serve: bool = Field(
        True, description="Serve at rtsp://HOST:PORT/<camera-id> (when service.rtsp is enabled)."
    )
    keyframe_interval_s: float = Field(
        1.0,
        ge=0.2,
        le=10.0,
        description="Seconds between keyframes: the longest a viewer joining waits for a "
        "picture; shorter costs bitrate.",
    )
    queue_frames: int = Field(
        30,
        ge=1,
        le=1000,
        description="Frames held for the RTSP server while it is slow; beyond that they are "
        "dropped (counted) and sending resumes at the next keyframe.",
    )
    push: list[PushOutputConfig] = Field(
        default_factory=list, description="RTSP servers to publish this camera's stream to."
    )
