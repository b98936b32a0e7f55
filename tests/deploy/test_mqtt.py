"""The MQTT observer (service/mqtt.py) against Debian's mosquitto on loopback.

- Home Assistant discovery payloads are checked against the configuration variables Home
  Assistant documents for MQTT sensors and binary sensors (strict: an undocumented key fails)
  and its discovery topic format.
- Events: the observer reads a scripted `Control` (the camera state sequences a test needs,
  including a fail-closed episode and a full disk, on cue) and publishes to a real broker.
- The real service: `edgeblur serve` with a demo camera publishes to mosquitto; the broker is
  killed, the camera keeps running and recording; the broker comes back and the service
  reconnects and says it is online again.
"""

from __future__ import annotations

import re
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from fleet_support import TOKEN, EdgeblurService, Mosquitto, Subscriber, service_config
from waiting import wait_until

from edge.config import EdgeblurConfig, MqttConfig
from edge.control import CameraStatus
from service import mqtt as mqtt_module
from service.mqtt import MqttObserver

needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="mosquitto is not installed (scripts/install.sh --test-system installs it)",
)

# Home Assistant's documented configuration variables (integrations sensor.mqtt and
# binary_sensor.mqtt, "MQTT Discovery" in integrations/mqtt): the keys edgeblur may send.
_COMMON_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "device", "enabled_by_default", "encoding", "entity_category", "entity_picture",
    "expire_after", "force_update", "icon", "json_attributes_template",
    "json_attributes_topic", "name", "object_id", "default_entity_id", "origin",
    "payload_available", "payload_not_available", "qos", "state_topic", "unique_id",
    "value_template", "device_class",
}
SENSOR_KEYS = _COMMON_KEYS | {
    "last_reset_value_template", "options", "suggested_display_precision", "state_class",
    "unit_of_measurement",
}
BINARY_SENSOR_KEYS = _COMMON_KEYS | {"off_delay", "payload_off", "payload_on"}
DEVICE_KEYS = {
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
    "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device",
}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
BINARY_SENSOR_CLASSES = {
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
    "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
    "tamper", "update", "vibration", "window",
}
DISCOVERY_TOPIC = re.compile(
    r"^homeassistant/(?P<component>sensor|binary_sensor)/(?:[a-zA-Z0-9_-]+/)?"
    r"(?P<object_id>[a-zA-Z0-9_-]+)/config$"
)


def entity_schema(component: str) -> dict[str, Any]:
    keys = SENSOR_KEYS if component == "sensor" else BINARY_SENSOR_KEYS
    properties: dict[str, Any] = {key: {} for key in keys}
    properties["device"] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {key: {} for key in DEVICE_KEYS} | {
            "identifiers": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
        "required": ["identifiers"],
    }
    properties["origin"] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {key: {"type": "string"} for key in ORIGIN_KEYS},
        "required": ["name"],
    }
    properties["entity_category"] = {"enum": ["config", "diagnostic"]}
    properties["unique_id"] = {"type": "string", "pattern": r"^[a-zA-Z0-9_-]+$"}
    if component == "sensor":
        properties["state_class"] = {"enum": ["measurement", "total", "total_increasing"]}
    else:
        properties["device_class"] = {"enum": sorted(BINARY_SENSOR_CLASSES)}
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": ["state_topic", "unique_id", "device", "name"],
    }


def status(camera: str = "north", **changes: Any) -> CameraStatus:
    base = CameraStatus(
        id=camera, enabled=True, state="running", fps=9.5, ready=True, reason="",
        last_error="", recording="recording", frames_in=100, frames_out=100, frames_withheld=0,
        faces_redacted=0,
    )
    return replace(base, **changes)


class ScriptedControl:
    """The part of `edge.control.Control` the observer uses, with statuses a test sets."""

    def __init__(self, *statuses: CameraStatus) -> None:
        self._lock = threading.Lock()
        self._statuses = {s.id: s for s in statuses}

    def health(self) -> list[CameraStatus]:
        with self._lock:
            return list(self._statuses.values())

    def set(self, camera: str, **changes: Any) -> None:
        with self._lock:
            self._statuses[camera] = replace(self._statuses[camera], **changes)

    def add(self, camera: str, **changes: Any) -> None:
        with self._lock:
            current = self._statuses[camera]
            self._statuses[camera] = replace(
                current, **{key: getattr(current, key) + value for key, value in changes.items()}
            )

    def remove(self, camera: str) -> None:
        with self._lock:
            del self._statuses[camera]


def test_discovery_payloads_match_home_assistants_schema() -> None:
    observer = MqttObserver(ScriptedControl(), MqttConfig(enabled=True, node_id="box1"))
    messages = observer.discovery_messages("high-street-north")
    state_keys = {"state", "ready", "reason", "recording", "failing_closed", "fps",
                  "frames_in", "frames_out", "frames_withheld", "faces_redacted",
                  "frames_dropped", "detections_per_s"}
    unique_ids = set()
    components = set()
    for topic, payload in messages.items():
        match = DISCOVERY_TOPIC.match(topic)
        assert match, topic
        component = match["component"]
        components.add(component)
        jsonschema.validate(payload, entity_schema(component))
        assert match["object_id"] == payload["unique_id"]  # HA's advice for unique_id entities
        unique_ids.add(payload["unique_id"])
        assert payload["device"]["identifiers"] == ["edgeblur_box1_high-street-north"]
        assert payload["availability_topic"] == "edgeblur/box1/status"
        fields = set(re.findall(r"value_json\.(\w+)", payload["value_template"]))
        if payload["state_topic"].endswith("/state"):
            assert fields <= state_keys, topic
        else:
            assert payload["state_topic"] == "edgeblur/box1/high-street-north/faces"
            assert fields == {"faces"}
    assert len(unique_ids) == len(messages) == 6
    assert components == {"sensor", "binary_sensor"}


def test_a_wrong_discovery_key_fails_the_schema() -> None:
    observer = MqttObserver(ScriptedControl(), MqttConfig(enabled=True, node_id="box1"))
    payload = next(iter(observer.discovery_messages("north").values()))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**payload, "state_topik": "x"}, entity_schema("sensor"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**payload, "device": {"name": "no identifiers"}},
                            entity_schema("sensor"))


def test_mqtt_is_off_by_default_and_refuses_unknown_keys() -> None:
    assert EdgeblurConfig().mqtt.enabled is False
    with pytest.raises(ValueError):
        MqttConfig.model_validate({"enabled": True, "password": "in the file"})
    with pytest.raises(ValueError):
        MqttConfig.model_validate({"topic_prefix": "edgeblur/#"})


@needs_mosquitto
def test_events_arrive_at_a_real_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt_module, "EPISODE_QUIET_S", 0.5)
    control = ScriptedControl(status("north"), status("south"))
    with Mosquitto(tmp_path) as broker:
        subscriber = Subscriber(broker.port, ["edgeblur/#", "homeassistant/#"])
        config = MqttConfig(enabled=True, port=broker.port, node_id="box1", poll_s=0.05,
                            face_count_interval_s=1.0)
        observer = MqttObserver(control, config)
        observer.start()
        try:
            base = "edgeblur/box1"
            wait_until(lambda: b"online" in subscriber.received(f"{base}/status"), 20,
                       "the box to say it is online")
            wait_until(lambda: subscriber.json(f"{base}/north/state"), 10, "north's state")
            first = subscriber.json(f"{base}/north/state")[-1]
            assert first["state"] == "running" and first["ready"] is True
            assert first["recording"] == "recording" and first["failing_closed"] is False
            wait_until(lambda: len({t for t in subscriber.topics()
                                    if t.startswith("homeassistant/")}) == 12, 10,
                       "two cameras' discovery messages")

            def events(camera: str = "north") -> list[dict[str, Any]]:
                return subscriber.json(f"{base}/{camera}/event")

            # Faces: counts per interval, nothing else.
            control.add("north", faces_redacted=7)
            wait_until(lambda: sum(m["faces"] for m in subscriber.json(f"{base}/north/faces"))
                       == 7, 10, "7 faces counted")
            for message in subscriber.json(f"{base}/north/faces"):
                assert set(message) == {"faces", "interval_s", "time"}

            # A fail-closed episode: start, more frames, quiet, end with the total.
            control.add("north", frames_withheld=5)
            wait_until(lambda: any(e["event"] == "fail_closed_start" for e in events()), 10,
                       "fail_closed_start")
            start = next(e for e in events() if e["event"] == "fail_closed_start")
            assert start["frames"] == 5 and start["camera"] == "north"
            wait_until(lambda: subscriber.json(f"{base}/north/state")[-1]["failing_closed"],
                       10, "the state to say failing_closed")
            control.add("north", frames_withheld=3)
            wait_until(lambda: any(e["event"] == "fail_closed_end" for e in events()), 10,
                       "fail_closed_end")
            end = next(e for e in events() if e["event"] == "fail_closed_end")
            assert end["frames"] == 8
            assert [e["event"] for e in events("south")] == []

            # Recording stops on a full disk; the camera goes down.
            control.set("north", recording="disk_full")
            wait_until(lambda: any(e["event"] == "recording" for e in events()), 10,
                       "a recording event")
            recording = next(e for e in events() if e["event"] == "recording")
            assert (recording["from"], recording["to"]) == ("recording", "disk_full")
            control.set("north", state="reconnecting", ready=False,
                        reason="source reconnecting: rtsp://***@10.0.0.1/x timed out")
            wait_until(lambda: any(e["event"] == "state" for e in events()), 10,
                       "a state event")
            change = next(e for e in events() if e["event"] == "state")
            assert (change["from"], change["to"]) == ("running", "reconnecting")
            wait_until(lambda: subscriber.json(f"{base}/north/state")[-1]["state"]
                       == "reconnecting", 10, "the retained state to follow")

            # A camera removed from the config leaves Home Assistant too.
            control.remove("south")
            south_configs = {
                t for t in subscriber.topics() if t.startswith("homeassistant/") and "_south_" in t
            }
            assert len(south_configs) == 6
            wait_until(lambda: all(b"" in subscriber.received(t) for t in south_configs), 10,
                       "south's discovery to be cleared")

            allowed = {"event", "camera", "time", "from", "to", "reason", "frames", "duration_s"}
            for event in events():
                assert set(event) <= allowed, event
        finally:
            observer.stop()
        wait_until(lambda: subscriber.received(f"{base}/status")[-1] == b"offline", 10,
                   "the box to say offline when it stops")
        subscriber.close()


@needs_mosquitto
def test_broker_down_never_touches_the_cameras_and_the_service_reconnects(
    tmp_path: Path,
) -> None:
    with Mosquitto(tmp_path) as broker:
        subscriber = Subscriber(broker.port, ["edgeblur/#"])
        camera = {
            "id": "lobby",
            "source": {"type": "demo", "width": 320, "height": 240, "fps": 10},
            "recording": {"segment_s": 1.0},
        }
        mqtt = {"enabled": True, "port": broker.port, "node_id": "box1", "poll_s": 0.2,
                "discovery": False}
        config = service_config(tmp_path, [camera], mqtt=mqtt)
        with EdgeblurService(tmp_path, config) as service:
            wait_until(service.healthy, 60, "edgeblur to answer /healthz")
            state_topic = "edgeblur/box1/lobby/state"
            wait_until(lambda: any(m["state"] == "running" for m in subscriber.json(state_topic)),
                       60, "the camera's state on the broker")
            segments = tmp_path / "data" / "recordings" / "lobby"

            def finished() -> int:
                return len(list(segments.glob("*.mp4")))

            broker.stop()  # the broker vanishes
            out_at_stop = service.cameras()["lobby"]["counters"]["frames_out"]
            segments_at_stop = finished()
            wait_until(lambda: finished() >= segments_at_stop + 3, 30,
                       "three more recorded segments with the broker down")
            lobby = service.cameras()["lobby"]
            assert lobby["state"] == "running" and lobby["ready"] is True
            assert lobby["recording"] == "recording"
            assert lobby["counters"]["frames_out"] > out_at_stop
            assert service.get("/readyz").status_code == 200

            subscriber.clear()
            broker.start()  # back on the same port, with no retained messages
            wait_until(lambda: b"online" in subscriber.received("edgeblur/box1/status"), 45,
                       "the service to reconnect and say it is online")
            wait_until(lambda: any(m["state"] == "running" for m in subscriber.json(state_topic)),
                       20, "the camera's state re-published")

            # Where events go is the box owner's: the API may not point the broker (and the
            # password taken from an environment variable it names) anywhere else.
            written = service.config_path.read_text()
            response = httpx.patch(
                f"{service.url}/api/config",
                json={"mqtt": {"host": "broker.elsewhere.example", "password_env":
                               "EDGEBLUR_TOKEN", "username": "x"}},
                headers={"Authorization": f"Bearer {TOKEN}",
                         "Content-Type": "application/merge-patch+json"},
                timeout=10,
            )
            assert response.status_code == 403, response.text
            assert "mqtt" in response.json()["detail"]
            assert service.config_path.read_text() == written
        assert "mqtt: disconnected" in service.log.read_text()
        subscriber.close()
