"""The whole configuration as pydantic models: unknown keys are refused, every field has a
default, bounds and a description. No I/O here (see edge.configfile for reading and writing)."""

from __future__ import annotations

import re
from ipaddress import ip_address
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, model_validator

from edge.detectors.centerface import CenterFaceConfig
from edge.detectors.registry import DetectorConfig
from edge.motion import MotionConfig
from edge.redact import RedactionConfig
from edge.redact.redactor import Method
from edge.sources.demo import DemoSourceConfig
from edge.sources.registry import SourceConfig
from edge.streaming.config import RtspServerConfig, StreamOutputConfig
from edge.tracking.settings import TrackingConfig, check_lookahead
from edge.urls import (
    mask_credentials,  # noqa: F401 - used by the service through here
    split_userinfo,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VideoConfig(_Strict):
    """`edgeblur video` only (offline files, no latency limit): speed levers that the camera
    service and `edgeblur image` do not use. The tracking section's hold_s and iou_match
    apply; its detect_every and lookahead_frames are replaced by the ones here."""

    detect_long_side: int | None = Field(
        None,
        ge=320,
        le=8192,
        description="Detect on frames scaled down so their long side is at most this many "
        "pixels, unless the detector sets its own input_long_side; none (default) = native "
        "size, the same detection as `edgeblur image`. 960 halves 1080p and runs about twice "
        "as fast, but faces under about 20 px at 1080p are then missed.",
    )
    detect_every: int = Field(
        4,
        ge=1,
        le=30,
        description="Run the detector on every k-th frame; the frames between are masked from "
        "the detections on both sides of them (look-ahead), never left unchecked.",
    )
    lookahead_frames: int = Field(
        8,
        ge=0,
        le=100,
        description="Frames held back so a face found later is also masked before it was "
        "first seen (costs width x height x 3 bytes each). At least detect_every - 1; "
        "2 x detect_every lets a face first seen moving fast be followed back along its "
        "velocity (from its first two detections).",
    )

    second_look: bool = Field(
        False,
        description="Run the redaction's second look (redaction.second_look_threshold) on the "
        "frames the detector runs on, as the camera service does on every frame. Off for "
        "files: there a mask between two detections is interpolated between them, not "
        "predicted from earlier frames, and on the test clips the second look changed "
        "neither the leaks nor the audit's result, for 1.5 times the run time "
        "(docs/configuration.md).",
    )

    @model_validator(mode="after")
    def _skipping_needs_lookahead(self) -> VideoConfig:
        check_lookahead(self.detect_every, self.lookahead_frames, "video.")
        return self

    def tracking(self, base: TrackingConfig) -> TrackingConfig:
        """`base` with this section's detect_every and lookahead_frames."""
        return base.model_copy(
            update={"detect_every": self.detect_every, "lookahead_frames": self.lookahead_frames}
        )

    def redaction(self, base: RedactionConfig) -> RedactionConfig:
        """`base`, with its second look turned off unless this section asks for it."""
        if self.second_look:
            return base
        return base.model_copy(update={"second_look_threshold": None})


class RecordingConfig(_Strict):
    """Redacted H.264 segments on disk."""

    enabled: bool = Field(True, description="Record redacted segments for this camera.")
    segment_s: float = Field(60.0, ge=1.0, le=3600.0, description="Length of each MP4 segment.")


class CameraConfig(_Strict):
    id: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Short name used in URLs, metrics and file names.",
    )
    enabled: bool = Field(True, description="Run this camera.")
    source: SourceConfig = Field(..., description="Where frames come from.")
    detector: DetectorConfig | None = Field(
        None, description="Overrides the top-level detector for this camera."
    )
    fail_policy: Literal["withhold", "mask"] = Field(
        "withhold",
        description="When detection fails or is late: withhold the frame, or emit it fully "
        "masked. Never passed on raw.",
    )
    latency_budget_ms: float = Field(
        3000.0,
        gt=0,
        le=60000,
        description="A frame not checked by a detection (on it or a later frame) within this "
        "many ms of its arrival fails closed; frames are dropped at ingest to keep the frame "
        "rate the box can check in time.",
    )
    detect_long_side: int | None = Field(
        1440,
        ge=320,
        le=8192,
        description="Search frames scaled down so their long side is at most this many pixels "
        "(the detector's max_long_side, unless the detector sets it or input_long_side). A "
        "1080p search then costs about two thirds of a native one, so searches come closer "
        "together and masks follow moving faces better, but more faces under 16 px tall are "
        "missed (WIDER FACE at three quarters size: 89 % of them found instead of 96 %; "
        "docs/benchmarks.md). 720p and smaller cameras are searched at native size. "
        "none = native size always.",
    )
    second_look: bool = Field(
        False,
        description="Run the redaction's second look (redaction.second_look_threshold) on the "
        "frames the detector runs on, as `edgeblur video --second-look` does. Off by default: "
        "it costs a second detector run per searched frame with faces, and on the test clips "
        "it changed neither the leaks nor the audit's result (docs/configuration.md).",
    )
    motion: MotionConfig = Field(default_factory=MotionConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    stream: StreamOutputConfig = Field(
        default_factory=StreamOutputConfig,
        description="Live outputs: the RTSP mount rtsp://HOST:PORT/<id> and pushes.",
    )


class StorageConfig(_Strict):
    data_dir: Path = Field(Path("data"), description="Where redacted recordings are written.")
    max_age_h: float = Field(
        24.0 * 30, gt=0, description="Delete recordings older than this many hours."
    )
    max_bytes: int = Field(
        10 * 1024**3, gt=0, description="Delete the oldest recordings beyond this many bytes."
    )


class ServiceConfig(_Strict):
    host: str = Field("127.0.0.1", description="Address to bind; loopback unless told otherwise.")
    port: int = Field(8080, ge=1, le=65535, description="HTTP port.")
    token: str | None = Field(
        None,
        min_length=16,
        description="Bearer token for the API. Prefer token_env; without a token, mutating "
        "routes are refused.",
    )
    token_env: str = Field(
        "EDGEBLUR_TOKEN", description="Environment variable that holds the bearer token."
    )
    audit_log: Path | None = Field(
        None, description="Config change log (JSON lines); default: <data_dir>/audit.log."
    )
    max_body_bytes: int = Field(
        256 * 1024, ge=1024, le=16 * 1024**2, description="Larger request bodies are refused."
    )
    rtsp: RtspServerConfig = Field(
        default_factory=RtspServerConfig,
        description="The RTSP server for every camera's anonymised stream, bound to host.",
    )
    camera_networks: list[IPvAnyNetwork] | None = Field(
        None,
        max_length=64,
        description="If set, every rtsp and mjpeg camera's host must be an IP address inside "
        "one of these networks (e.g. [10.20.0.0/24]); host names are then refused, since "
        "what they resolve to can change. None = any host. File only.",
    )


class ModelsConfig(_Strict):
    cache_dir: Path | None = Field(
        None,
        description="Model cache directory; default: $EDGEBLUR_MODEL_DIR, else the user's "
        "cache directory (~/.cache/edgeblur/models on Linux).",
    )


class PrivacyFloorConfig(_Strict):
    """The least privacy any change through the API may leave. Set only in the config file on
    the box (the API refuses to change this section); its defaults protect a box whose file
    never mentions it. A value in the file itself may lie below the floor (the file is the
    box owner's); the API may only move a setting to a value inside it."""

    detector_threshold_max: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="Highest detector threshold (and small_face_threshold) the API may set; "
        "at 1.0 no face is found.",
    )
    min_face_px_max: float = Field(
        24.0, ge=0.0, description="Highest detector min_face_px the API may set (source px)."
    )
    max_face_px_min: float = Field(
        1024.0,
        gt=0.0,
        description="Lowest detector max_face_px the API may set (source px); a close face "
        "taller than max_face_px would go unmasked.",
    )
    input_long_side_min: int = Field(
        320,
        ge=32,
        le=8192,
        description="Lowest detector input_long_side or max_long_side (a camera's "
        "detect_long_side sets its max_long_side) the API may set.",
    )
    largest_scale_min: float = Field(
        0.5,
        ge=0.05,
        le=4.0,
        description="The largest of the detector's scales may not be set below this.",
    )
    mask_scale_min: float = Field(
        1.1, ge=1.0, le=4.0, description="Lowest redaction mask_scale the API may set."
    )
    methods: list[Method] = Field(
        default_factory=lambda: list(get_args(Method)),
        min_length=1,
        description="Redaction methods the API may choose.",
    )
    pixelate_blocks_max: int = Field(
        12, ge=2, le=64, description="Most mosaic cells across a face the API may set."
    )
    blur_strength_min: float = Field(
        0.3, gt=0.0, le=2.0, description="Lowest blur_strength the API may set."
    )
    motion_min_area_px_max: int = Field(
        4096,
        ge=1,
        description="Highest motion min_area_px the API may set (a larger value ignores "
        "people in motion-only mode).",
    )
    motion_only: bool = Field(
        True,
        description="Whether the API may switch a camera to motion mode `only` (no face "
        "detector).",
    )


def _url_host(url: str) -> str:
    """The host of a camera URL (brackets of an IPv6 literal removed), credentials aside."""
    parts = split_userinfo(url)
    rest = parts[2] if parts is not None else url
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    return authority.rpartition(":")[0] if authority.count(":") == 1 else authority


# Each box loads a detector per camera; more than this is a mistake or an attack.
MAX_CAMERAS = 64


class MqttConfig(_Strict):
    """Events and Home Assistant discovery on an MQTT broker, published by the service from a
    thread of its own that only reads the cameras' status: a slow or absent broker never holds
    up a camera. Counts only, never anything about a face but how many were masked."""

    enabled: bool = Field(False, description="Publish camera events to the broker.")
    host: str = Field("127.0.0.1", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual with TLS).")
    tls: bool = Field(False, description="Connect with TLS, checking the broker's certificate.")
    ca_file: Path | None = Field(
        None, description="CA bundle to check the broker's certificate; default: the system's."
    )
    username: str | None = Field(None, min_length=1, description="Broker user name, if any.")
    password_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the broker password (never in this file).",
    )
    node_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="This box's name in topics and Home Assistant ids; default: the host name.",
    )
    topic_prefix: str = Field(
        "edgeblur",
        pattern=r"^[^#+\s]+$",
        description="Topics are <topic_prefix>/<node_id>/<camera>/...; no MQTT wildcards.",
    )
    discovery: bool = Field(
        True, description="Announce each camera to Home Assistant as a device (MQTT discovery)."
    )
    discovery_prefix: str = Field(
        "homeassistant",
        pattern=r"^[^#+\s]+$",
        description="Home Assistant's discovery prefix (its default is homeassistant).",
    )
    poll_s: float = Field(
        1.0, ge=0.05, le=60.0, description="How often the cameras' status is read."
    )
    face_count_interval_s: float = Field(
        60.0,
        ge=1.0,
        le=3600.0,
        description="Publish each camera's count of masked regions over this interval.",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval.")


def _default_cameras() -> list[CameraConfig]:
    return [CameraConfig(id="demo", source=DemoSourceConfig())]


class EdgeblurConfig(_Strict):
    """Root of a config file. `edgeblur serve` with no file uses these defaults (the demo)."""

    detector: DetectorConfig = Field(
        default_factory=CenterFaceConfig, description="Face detector used by every camera."
    )
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    video: VideoConfig = Field(default_factory=VideoConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    privacy_floor: PrivacyFloorConfig = Field(
        default_factory=PrivacyFloorConfig,
        description="The least privacy an API change may leave; file only.",
    )
    cameras: list[CameraConfig] = Field(
        default_factory=_default_cameras,
        max_length=MAX_CAMERAS,
        description=f"The cameras (at most {MAX_CAMERAS}; each runs its own detector).",
    )

    @model_validator(mode="after")
    def _cameras_in_allowed_networks(self) -> EdgeblurConfig:
        networks = self.service.camera_networks
        if networks is None:
            return self
        for camera in self.cameras:
            url = getattr(camera.source, "url", None)
            if not isinstance(url, str):
                continue
            host = _url_host(url)
            try:
                address = ip_address(host)
            except ValueError:
                raise ValueError(
                    f"camera {camera.id!r}: with service.camera_networks set, the host must be "
                    f"an IP address, not {host!r}"
                ) from None
            if not any(address in network for network in networks):
                raise ValueError(
                    f"camera {camera.id!r}: {address} is outside service.camera_networks"
                )
        return self

    @model_validator(mode="after")
    def _unique_camera_ids(self) -> EdgeblurConfig:
        seen: set[str] = set()
        for camera in self.cameras:
            if camera.id in seen:
                raise ValueError(f"camera id {camera.id!r} is used twice")
            seen.add(camera.id)
        return self

    def detector_for(self, camera: CameraConfig) -> DetectorConfig:
        """The detector settings `camera` searches with: its own or the top-level ones, with
        its detect_long_side as max_long_side where the detector sets no size of its own."""
        detector = camera.detector or self.detector
        if (
            camera.detect_long_side is None
            or detector.max_long_side is not None
            or detector.input_long_side is not None
        ):
            return detector
        return detector.model_copy(update={"max_long_side": camera.detect_long_side})
