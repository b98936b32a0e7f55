"""Public shapes of what the API returns, and the masking that keeps secrets out of them.

Secrets in a config: credentials inside any `url` (rtsp://user:pass@host -> rtsp://***@host)
and `service.token`. Both are masked in every response and audit entry. A client that sends a
masked value back (GET, edit, PUT) keeps the stored secret: see `restore_masked_secrets`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field

from edge.config import EdgeblurConfig, mask_credentials
from edge.control import CameraStatus
from edge.sources.base import PLACEHOLDER, split_userinfo

MASK = "***"
_MASKED_URL_MARK = "://" + MASK + "@"
_TOKEN_PATH = ("service", "token")

Loc = tuple[str | int, ...]


def mask_secrets(value: Any, path: Loc = ()) -> Any:
    """A copy of a config dict (or the subtree at `path`) with every secret masked."""
    if isinstance(value, dict):
        return {key: mask_secrets(item, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_secrets(item, (*path, index)) for index, item in enumerate(value)]
    if isinstance(value, str) and path:
        if path == _TOKEN_PATH:
            return MASK
        if path[-1] == "url":
            return mask_credentials(value)
    return value


class SecretError(ValueError):
    """A masked secret was sent back where there is no matching stored one to keep."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _pairs(new: list[Any], old: Any) -> Iterator[tuple[int, Any, Any]]:
    """(index in new, new item, old counterpart): by `id` for lists of objects with ids (so a
    reordered camera keeps its secret), else by position."""
    old_items = old if isinstance(old, list) else []
    by_id = {item["id"]: item for item in old_items if _has_str_id(item)}
    for index, item in enumerate(new):
        if _has_str_id(item):
            yield index, item, by_id.get(item["id"])
        else:
            yield index, item, old_items[index] if index < len(old_items) else None


def _has_str_id(item: Any) -> bool:
    # A client may send any JSON as an id; only a string one (as the schema wants) pairs.
    return isinstance(item, dict) and isinstance(item.get("id"), str)


def restore_masked_secrets(new: Any, old: Any, path: Loc = ()) -> None:
    """Put stored secrets back, in place, where `new` holds their masked form.

    A masked URL is restored only if the stored URL masks to exactly the same text (same
    scheme, host and path), so a client cannot send the stored credentials to another host by
    editing the host and keeping `***`. Raises SecretError naming the field otherwise.
    """
    if isinstance(new, dict):
        for key, value in new.items():
            where = (*path, key)
            stored = old.get(key) if isinstance(old, dict) else None
            if isinstance(value, str) and _is_masked(where, value):
                if not isinstance(stored, str) or mask_secrets(stored, where) != value:
                    raise SecretError(
                        where,
                        "holds a masked secret ('***') that matches no stored value here; "
                        "send the full value (a masked URL is kept only if scheme, host and "
                        "path are unchanged)",
                    )
                new[key] = stored
            else:
                restore_masked_secrets(value, stored, where)
    elif isinstance(new, list):
        for index, item, stored in _pairs(new, old):
            restore_masked_secrets(item, stored, (*path, index))


def _camera_urls(config: EdgeblurConfig) -> Iterator[tuple[Loc, str]]:
    """Every URL a camera sends credentials to: its source, and each push of its stream."""
    for index, camera in enumerate(config.cameras):
        url = getattr(camera.source, "url", None)
        if isinstance(url, str):
            yield ("cameras", index, "source", "url"), url
        for number, push in enumerate(camera.stream.push):
            yield ("cameras", index, "stream", "push", number, "url"), push.url


def _secret_bindings(config: EdgeblurConfig) -> dict[str, set[tuple[str, str]]]:
    """Each ${VAR} used in a camera URL -> the (scheme, host and path) it is sent to."""
    bindings: dict[str, set[tuple[str, str]]] = {}
    for _, url in _camera_urls(config):
        parts = split_userinfo(url)
        if parts is None or parts[1] is None:
            continue
        head, userinfo, rest = parts
        for name in PLACEHOLDER.findall(userinfo or ""):
            bindings.setdefault(name, set()).add((head.lower(), rest))
    return bindings


def check_secret_hosts(old: EdgeblurConfig, new: EdgeblurConfig) -> None:
    """A camera secret may only go where the config in force already sends it.

    A ${VAR} in a camera URL (its source or a push of its stream) changed through the API
    must be used by the config in force with the same scheme, host, port and path, so whoever
    holds the API token can move cameras between secrets the box's owner bound to them but
    cannot send a secret to a host of their own. Raises SecretError naming the field."""
    before = _secret_bindings(old)
    for where, url in _camera_urls(new):
        parts = split_userinfo(url)
        if parts is None or parts[1] is None:
            continue
        head, userinfo, rest = parts
        for name in PLACEHOLDER.findall(userinfo or ""):
            if (head.lower(), rest) not in before.get(name, set()):
                raise SecretError(
                    where,
                    f"${{{name}}} may only be sent where the config in force sends it "
                    "(same scheme, host, port and path); a secret's host is set in the config "
                    "file on the box",
                )


def _is_masked(path: Loc, value: str) -> bool:
    if path == _TOKEN_PATH:
        return value == MASK
    return path[-1] == "url" and _MASKED_URL_MARK in value


class CameraCounters(BaseModel):
    frames_in: int = Field(description="Frames read from the source.")
    frames_out: int = Field(description="Redacted frames delivered to sinks.")
    frames_withheld: int = Field(description="Frames withheld or fully masked (fail-closed).")
    frames_dropped: int = Field(
        0, description="Frames dropped at ingest to keep the rate the box can check in time."
    )
    faces_redacted: int = Field(description="Face regions masked.")


class CameraStatusOut(BaseModel):
    id: str
    enabled: bool
    state: str = Field(description="starting | running | reconnecting | failed | stopped")
    fps: float = Field(description="Redacted frames delivered per second, recent average.")
    detections_per_s: float = Field(
        0.0, description="Detector runs on this camera's frames per second, recent average (one "
        "detector serves every camera of the box)."
    )
    ready: bool = Field(description="Delivering redacted frames with its model loaded.")
    reason: str = Field(description="Why not ready; empty when ready.")
    last_error: str = Field(description="Most recent error; empty if none.")
    recording: str = Field(
        description="off (no recorder) | idle | recording | disk_full | failed | stopped. A full "
        "disk stops recording, not redaction: the camera stays ready."
    )
    stream_url: str = Field(
        "", description="The anonymised RTSP stream (user `edgeblur`, password: the API "
        "token); empty when the camera serves none."
    )
    stream: str = Field(
        "off", description="The stream's state: serving (with its viewers), off, or why it "
        "is not served."
    )
    counters: CameraCounters

    @classmethod
    def from_status(cls, status: CameraStatus) -> CameraStatusOut:
        # Error texts may quote a source URL; never let its credentials out.
        return cls(
            id=status.id,
            enabled=status.enabled,
            state=status.state,
            fps=status.fps,
            detections_per_s=status.detections_per_s,
            ready=status.ready,
            reason=mask_credentials(status.reason),
            last_error=mask_credentials(status.last_error),
            recording=status.recording,
            stream_url=status.stream_url,
            stream=mask_credentials(status.stream),
            counters=CameraCounters(
                frames_in=status.frames_in,
                frames_out=status.frames_out,
                frames_withheld=status.frames_withheld,
                frames_dropped=status.frames_dropped,
                faces_redacted=status.faces_redacted,
            ),
        )


class NotReadyCamera(BaseModel):
    id: str
    state: str
    reason: str


class Readiness(BaseModel):
    status: str = Field(description="ready | not ready")
    ready: list[str] = Field(description="Enabled cameras that are ready.")
    not_ready: list[NotReadyCamera] = Field(description="Enabled cameras that are not, and why.")


class ConfigChange(BaseModel):
    path: str = Field(description="e.g. cameras[front].source.url; secrets masked.")
    old: Any = Field(description="Previous value; null when it was not set.")
    new: Any = Field(description="New value; null when it is no longer set.")


class ConfigUpdate(BaseModel):
    config: dict[str, Any] = Field(description="The config now in force, secrets masked.")
    changes: list[ConfigChange]
    restart_required: list[str] = Field(
        description="Changed service.* settings (port, limits) that take effect at the next "
        "start of `edgeblur serve`."
    )
    weakens_privacy: list[str] = Field(
        default_factory=list,
        description="Settings this change moved the weaker way (within the privacy floor); "
        "logged as a warning and counted in /metrics.",
    )
