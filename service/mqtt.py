"""Camera events on an MQTT broker, and Home Assistant MQTT discovery (the config's `mqtt`).

`MqttObserver` reads the cameras' status through `Control.health()` (the same call /api/cameras
makes) from a thread of its own, and publishes through paho-mqtt, whose network thread connects
and reconnects by itself. Nothing here is on a camera's frame path: a broker that is down, slow
or gone only delays this thread's messages, and what it holds for the broker is bounded.

Topics, under <topic_prefix>/<node_id> (one box):
  status                    "online" / "offline" (retained; the broker sends "offline" itself
                            when the box vanishes, as the connection's last will)
  <camera>/state            retained JSON: state, ready, reason, recording, failing_closed, fps,
                            detections_per_s and the camera's counters; on every change, and
                            every 30 s
  <camera>/event            JSON events: "state" and "recording" changes (from, to),
                            "fail_closed_start" and "fail_closed_end" (frames, duration_s)
  <camera>/faces            JSON every face_count_interval_s: masked regions summed over the
                            frames of the interval (a count; nothing else about any face)
Home Assistant: one device per camera with sensors for state, recording, fps and masked
regions per interval, and binary sensors for ready and failing closed, under
<discovery_prefix>/<component>/<unique_id>/config (retained), re-announced whenever Home
Assistant says it came online (<discovery_prefix>/status).

Events that happen while the broker is away wait in a bounded queue (the oldest are dropped
first); state topics are retained and re-published on every reconnect.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from edge.config import MqttConfig, mask_credentials
from edge.control import CameraStatus, Control

log = logging.getLogger("edgeblur.mqtt")

VERSION = "0.1.0"
STATE_REFRESH_S = 30.0
# A fail-closed episode ends once no frame has failed closed for this long.
EPISODE_QUIET_S = 5.0
PENDING_EVENTS_MAX = 256
# Reconnection attempts back off from 1 s to this.
RECONNECT_MAX_S = 10
# What paho holds for the broker (QoS 1 messages not yet acknowledged) at most.
INFLIGHT_MAX = 1000


def default_node_id() -> str:
    """The host name, cut to what MQTT topics and Home Assistant ids allow."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])[:64]
    return name or "edgeblur"


@dataclass
class _CameraTrack:
    """What the observer remembers of one camera between polls."""

    last: CameraStatus
    state_published_at: float = 0.0
    state_payload: str = ""
    episode_started_at: float | None = None
    episode_frames: int = 0
    last_failed_at: float = 0.0
    faces_at_interval_start: int = 0
    interval_started_at: float = 0.0
    announced: bool = False


class MqttObserver:
    """Start with start(), stop with stop(). `clock` is monotonic seconds (tests may pass
    their own); `client_factory` builds the paho client (the real one by default)."""

    def __init__(
        self,
        control: Control,
        config: MqttConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        client_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self.control = control
        self.config = config
        self.node_id = config.node_id or default_node_id()
        self.base = f"{config.topic_prefix}/{self.node_id}"
        self.status_topic = f"{self.base}/status"
        self._clock = clock
        self._client_factory = client_factory or _paho_client
        self._client: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cameras: dict[str, _CameraTrack] = {}
        self._pending: deque[tuple[str, str]] = deque(maxlen=PENDING_EVENTS_MAX)
        self._resync = threading.Event()  # set by paho's thread on (re)connect
        self.connects = 0  # successful connections so far (for status and tests)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        config = self.config
        client = self._client_factory(f"edgeblur-{self.node_id}")
        client.max_inflight_messages_set(20)
        client.max_queued_messages_set(INFLIGHT_MAX)
        client.reconnect_delay_set(min_delay=1, max_delay=RECONNECT_MAX_S)
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        if config.username:
            password = os.environ.get(config.password_env) if config.password_env else None
            if config.password_env and password is None:
                log.warning("mqtt: %s is not set; connecting without a password",
                            config.password_env)
            client.username_pw_set(config.username, password)
        if config.tls:
            client.tls_set(
                ca_certs=str(config.ca_file) if config.ca_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        # connect_async: the first attempt is made by the network thread, so an unreachable
        # broker never delays the service's start.
        client.connect_async(config.host, config.port, keepalive=config.keepalive_s)
        client.loop_start()
        self._thread = threading.Thread(target=self._run, name="edgeblur-mqtt", daemon=True)
        self._thread.start()
        log.info("mqtt: publishing to %s:%d under %s/", config.host, config.port, self.base)

    def stop(self) -> None:
        """Say "offline" if connected, then disconnect. Returns within a few seconds even with
        the broker gone."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        client = self._client
        if client is None:
            return
        try:
            if client.is_connected():
                info = client.publish(self.status_topic, "offline", qos=1, retain=True)
                info.wait_for_publish(timeout=2)
        except (RuntimeError, ValueError) as error:  # not connected after all, or queue full
            log.debug("mqtt: offline message not sent: %s", error)
        client.disconnect()
        client.loop_stop()

    # -- paho callbacks (paho's network thread: flags only, no publishing here) -------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("mqtt: broker refused the connection: %s", reason)
            return
        self.connects += 1
        log.info("mqtt: connected to %s:%d", self.config.host, self.config.port)
        if self.config.discovery:
            client.subscribe(f"{self.config.discovery_prefix}/status", qos=1)
        self._resync.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any = None) -> None:
        if not self._stop.is_set():
            log.warning("mqtt: disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        # Home Assistant's birth message: it (re)started and has forgotten its devices.
        if message.payload == b"online":
            self._resync.set()

    # -- the observer's own thread --------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # a bug here must not end the thread; the cameras are unaffected
                log.exception("mqtt: poll failed")
            self._stop.wait(self.config.poll_s)

    def poll(self) -> None:
        """Read every camera's status once and publish what changed."""
        now = self._clock()
        connected = self._client.is_connected()
        resync = connected and self._resync.is_set()
        if resync:
            self._resync.clear()
            self._send(self.status_topic, "online", retain=True)
        statuses = {status.id: status for status in self.control.health() if status.enabled}
        for camera_id in list(self._cameras):
            if camera_id not in statuses:
                self._forget(camera_id)
        for camera_id, status in statuses.items():
            track = self._cameras.get(camera_id)
            if track is None:
                track = _CameraTrack(
                    last=status,
                    faces_at_interval_start=status.faces_redacted,
                    interval_started_at=now,
                )
                self._cameras[camera_id] = track
            self._observe(track, status, now)
            if resync or (connected and not track.announced):
                if self.config.discovery:
                    self._announce(camera_id)
                track.announced = connected
            self._publish_state(track, status, now, force=resync)
        if connected:
            while self._pending:
                topic, payload = self._pending.popleft()
                self._send(topic, payload)

    def _observe(self, track: _CameraTrack, status: CameraStatus, now: float) -> None:
        camera = status.id
        before = track.last
        if status.state != before.state:
            self._event(camera, {"event": "state", "from": before.state, "to": status.state,
                                 "reason": mask_credentials(status.reason)})
        if status.recording != before.recording:
            self._event(camera, {"event": "recording", "from": before.recording,
                                 "to": status.recording})
        failed = max(0, status.frames_withheld - before.frames_withheld)
        if failed:
            track.last_failed_at = now
            if track.episode_started_at is None:
                track.episode_started_at = now
                track.episode_frames = 0
                self._event(camera, {"event": "fail_closed_start", "frames": failed,
                                     "reason": mask_credentials(status.reason)})
            track.episode_frames += failed
        elif (track.episode_started_at is not None
              and now - track.last_failed_at >= EPISODE_QUIET_S):
            self._event(camera, {"event": "fail_closed_end", "frames": track.episode_frames,
                                 "duration_s": round(track.last_failed_at
                                                     - track.episode_started_at, 1)})
            track.episode_started_at = None
        if now - track.interval_started_at >= self.config.face_count_interval_s:
            faces = max(0, status.faces_redacted - track.faces_at_interval_start)
            self._send_or_queue(f"{self.base}/{camera}/faces", json.dumps({
                "faces": faces,
                "interval_s": round(now - track.interval_started_at, 1),
                "time": _utc_now(),
            }))
            track.faces_at_interval_start = status.faces_redacted
            track.interval_started_at = now
        track.last = status

    def _publish_state(self, track: _CameraTrack, status: CameraStatus, now: float,
                       force: bool) -> None:
        payload = json.dumps({
            "state": status.state,
            "ready": status.ready,
            "reason": mask_credentials(status.reason),
            "recording": status.recording,
            "failing_closed": track.episode_started_at is not None,
            "frames_in": status.frames_in,
            "frames_out": status.frames_out,
            "frames_withheld": status.frames_withheld,
            "faces_redacted": status.faces_redacted,
            "frames_dropped": status.frames_dropped,
        }, sort_keys=True)
        # fps changes every poll: sent with the others, but it alone does not cause a message.
        changed = _without_counters(payload) != _without_counters(track.state_payload)
        due = now - track.state_published_at >= STATE_REFRESH_S
        if not (changed or due or force) or not self._client.is_connected():
            return
        document = json.loads(payload)
        document["fps"] = round(status.fps, 2)
        document["detections_per_s"] = round(status.detections_per_s, 2)
        if self._send(f"{self.base}/{status.id}/state", json.dumps(document), retain=True):
            track.state_payload = payload
            track.state_published_at = now

    def _event(self, camera: str, event: dict[str, Any]) -> None:
        event["camera"] = camera
        event["time"] = _utc_now()
        log.info("mqtt event: %s", event)
        self._send_or_queue(f"{self.base}/{camera}/event", json.dumps(event))

    def _send_or_queue(self, topic: str, payload: str) -> None:
        if not (self._client.is_connected() and self._send(topic, payload)):
            self._pending.append((topic, payload))

    def _send(self, topic: str, payload: str, retain: bool = False) -> bool:
        """Hand a message to paho (never blocks); False if paho would not take it."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        return bool(info.rc == 0)

    # -- Home Assistant discovery ---------------------------------------------------------

    def discovery_messages(self, camera: str) -> dict[str, dict[str, Any]]:
        """Discovery topic -> config payload for each entity of one camera's device."""
        uid = f"edgeblur_{self.node_id}_{camera}"
        device = {
            "identifiers": [uid],
            "name": f"{camera} ({self.node_id})",
            "manufacturer": "edgeblur",
            "model": "edgeblur camera",
            "sw_version": VERSION,
        }
        state_topic = f"{self.base}/{camera}/state"
        common = {
            "availability_topic": self.status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            "origin": {"name": "edgeblur", "sw_version": VERSION},
        }
        entities: list[tuple[str, str, dict[str, Any]]] = [
            ("sensor", "state", {"name": "State", "state_topic": state_topic,
                                 "value_template": "{{ value_json.state }}",
                                 "icon": "mdi:cctv"}),
            ("binary_sensor", "ready", {
                "name": "Ready", "state_topic": state_topic, "device_class": "running",
                "value_template": "{{ 'ON' if value_json.ready else 'OFF' }}",
                "payload_on": "ON", "payload_off": "OFF"}),
            ("binary_sensor", "failing_closed", {
                "name": "Failing closed", "state_topic": state_topic,
                "device_class": "problem",
                "value_template": "{{ 'ON' if value_json.failing_closed else 'OFF' }}",
                "payload_on": "ON", "payload_off": "OFF"}),
            ("sensor", "recording", {"name": "Recording", "state_topic": state_topic,
                                     "value_template": "{{ value_json.recording }}",
                                     "icon": "mdi:record-rec"}),
            ("sensor", "fps", {"name": "Delivered frame rate", "state_topic": state_topic,
                               "value_template": "{{ value_json.fps }}",
                               "unit_of_measurement": "fps", "state_class": "measurement",
                               "entity_category": "diagnostic"}),
            ("sensor", "faces", {"name": "Faces masked", "state_topic":
                                 f"{self.base}/{camera}/faces",
                                 "value_template": "{{ value_json.faces }}",
                                 "state_class": "measurement", "icon": "mdi:face-man-shimmer"}),
        ]
        messages = {}
        for component, key, entity in entities:
            unique_id = f"{uid}_{key}"
            topic = f"{self.config.discovery_prefix}/{component}/{unique_id}/config"
            messages[topic] = {**entity, "unique_id": unique_id, **common}
        return messages

    def _announce(self, camera: str) -> None:
        for topic, payload in self.discovery_messages(camera).items():
            self._send(topic, json.dumps(payload), retain=True)

    def _forget(self, camera: str) -> None:
        """A camera gone from the config: its retained state and its Home Assistant device."""
        track = self._cameras.pop(camera)
        if not self._client.is_connected():
            return
        self._send(f"{self.base}/{camera}/state", "", retain=True)
        if self.config.discovery and track.announced:
            for topic in self.discovery_messages(camera):
                self._send(topic, "", retain=True)


def start_observer(control: Control, config: MqttConfig) -> MqttObserver | None:
    """The observer for `edgeblur serve`, started; None when the config leaves MQTT off."""
    if not config.enabled:
        return None
    observer = MqttObserver(control, config)
    try:
        observer.start()
    except RuntimeError as error:  # paho-mqtt not installed: the cameras run without events
        log.error("mqtt: %s; running without MQTT events", error)
        return None
    return observer


def _without_counters(payload: str) -> str:
    if not payload:
        return ""
    document = json.loads(payload)
    for key in ("frames_in", "frames_out", "frames_withheld", "faces_redacted", "frames_dropped"):
        document.pop(key, None)
    return json.dumps(document, sort_keys=True)


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _paho_client(client_id: str) -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError as error:  # the `mqtt` extra is not installed
        raise RuntimeError(
            "mqtt.enabled needs paho-mqtt: pip install 'edgeblur[mqtt]'"
        ) from error
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
