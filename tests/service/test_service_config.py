"""Reading and changing the config over HTTP: validation, atomic file write, apply, audit,
and credentials that never leave the device and survive a GET -> PUT round trip."""

from __future__ import annotations

import json
from datetime import datetime

import httpx
import pytest
import yaml
from service_support import MJPEG_PASSWORD, RTSP_PASSWORD, RTSP_URL, TOKEN, FakeControl

from edge.config import EdgeblurConfig
from edge.configfile import load_config, save_config
from edge.errors import ConfigError
from service.audit import AuditLog

SECRETS = (RTSP_PASSWORD, MJPEG_PASSWORD, TOKEN)


def audit_lines(api) -> list[dict]:
    path = api.settings.audit_log
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_get_masks_credentials(api):
    response = api.client.get("/api/config")
    assert response.status_code == 200
    assert_no_secrets(response.text)
    cameras = {camera["id"]: camera for camera in response.json()["cameras"]}
    assert cameras["gate"]["source"]["url"] == "rtsp://***@192.0.2.10:554/stream1"
    assert cameras["spare"]["source"]["url"] == "http://***@192.0.2.11/video.mjpg"


def test_get_never_shows_the_token_and_a_round_trip_keeps_it(start_api, tmp_path):
    config = EdgeblurConfig.model_validate(
        {"storage": {"data_dir": str(tmp_path / "data")}, "service": {"token": TOKEN}}
    )
    path = tmp_path / "with-token.yaml"
    save_config(config, path)
    api = start_api(FakeControl(config), token=TOKEN, config_path=path)

    shown = api.client.get("/api/config").json()
    assert shown["service"]["token"] == "***"
    shown["tracking"]["hold_s"] = 3.0
    response = api.client.put("/api/config", json=shown)
    assert response.status_code == 200, response.text
    assert_no_secrets(response.text)
    assert load_config(path).service.token == TOKEN
    assert response.json()["restart_required"] == []


def test_schema_describes_the_config(api):
    schema = api.client.get("/api/config/schema").json()
    assert "cameras" in schema["properties"]
    assert schema == EdgeblurConfig.model_json_schema()


@pytest.mark.parametrize(
    ("edit", "loc"),
    [
        (lambda c: c["cameras"][0]["source"].update(url=123), ["cameras", 0, "source", "url"]),
        (lambda c: c["cameras"][0]["source"].pop("url"), ["cameras", 0, "source", "url"]),
        (lambda c: c["cameras"][1].update(id="bad id!"), ["cameras", 1, "id"]),
        (lambda c: c["tracking"].update(hold_s=-1), ["tracking", "hold_s"]),
        (lambda c: c.update(colour="red"), ["colour"]),
        (lambda c: c["cameras"][1].update(id="gate"), []),  # duplicate id: a whole-config rule
    ],
)
def test_put_invalid_names_the_field_and_changes_nothing(api, config_file, edit, loc):
    before = config_file.read_bytes()
    document = api.client.get("/api/config").json()
    edit(document)
    response = api.client.put("/api/config", json=document)
    assert response.status_code == 422, response.text
    assert loc in [item["loc"] for item in response.json()["detail"]]
    assert config_file.read_bytes() == before
    assert api.control.applied == []
    assert audit_lines(api) == []


def test_put_valid_writes_applies_and_audits(api, config_file):
    document = api.client.get("/api/config").json()
    document["tracking"]["hold_s"] = 2.5
    document["cameras"][1]["enabled"] = False
    new_url = "rtsp://admin:n3w-pass@192.0.2.10:554/stream2"
    document["cameras"][0]["source"]["url"] = new_url

    response = api.client.put("/api/config", json=document)
    assert response.status_code == 200, response.text
    assert "n3w-pass" not in response.text
    assert_no_secrets(response.text)

    on_disk = load_config(config_file)
    assert on_disk.tracking.hold_s == 2.5
    assert on_disk.cameras[1].enabled is False
    assert on_disk.cameras[0].source.url == new_url  # type: ignore[union-attr]
    assert on_disk.cameras[2].source.url.endswith(f":{MJPEG_PASSWORD}@192.0.2.11/video.mjpg")  # type: ignore[union-attr]
    assert api.control.applied == [on_disk]

    changes = {c["path"]: c for c in response.json()["changes"]}
    assert set(changes) == {"tracking.hold_s", "cameras[hall].enabled", "cameras[gate].source.url"}
    assert changes["tracking.hold_s"] == {"path": "tracking.hold_s", "old": 1.0, "new": 2.5}
    assert changes["cameras[gate].source.url"]["new"] == "rtsp://***@192.0.2.10:554/stream2"

    [entry] = audit_lines(api)
    assert entry["method"] == "PUT"
    assert entry["client"] == "127.0.0.1"
    assert entry["forwarded_for"] is None
    assert entry["token"] == AuditLog(api.settings.audit_log).fingerprint(TOKEN)
    assert entry["weakens_privacy"] == []  # a longer hold_s is stronger, not weaker
    assert entry["time"].endswith("Z")
    datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    assert entry["changes"] == response.json()["changes"]
    audit_text = api.settings.audit_log.read_text()
    assert "n3w-pass" not in audit_text
    assert_no_secrets(audit_text)

    assert api.client.get("/api/config/audit").json() == [entry]


def test_round_trip_keeps_stored_credentials(api, config_file):
    document = api.client.get("/api/config").json()
    document["cameras"].reverse()  # matched by camera id, not position
    document["redaction"] = {**document["redaction"]}
    response = api.client.put("/api/config", json=document)
    assert response.status_code == 200, response.text
    cameras = load_config(config_file).cameras
    urls = {c.id: c.source.url for c in cameras if hasattr(c.source, "url")}
    assert urls["gate"] == RTSP_URL
    assert MJPEG_PASSWORD in urls["spare"]
    assert [c["path"] for c in response.json()["changes"]] == ["cameras (order)"]


def test_masked_credentials_are_not_moved_to_another_host(api, config_file):
    before = config_file.read_bytes()
    document = api.client.get("/api/config").json()
    document["cameras"][0]["source"]["url"] = "rtsp://***@203.0.113.66:554/stream1"
    response = api.client.put("/api/config", json=document)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["cameras", 0, "source", "url"]
    assert config_file.read_bytes() == before
    assert api.control.applied == []


def test_masked_credentials_for_a_new_camera_are_refused(api, config_file):
    document = api.client.get("/api/config").json()
    document["cameras"].append(
        {"id": "new", "source": {"type": "rtsp", "url": "rtsp://***@192.0.2.10:554/stream1"}}
    )
    response = api.client.put("/api/config", json=document)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["cameras", 3, "source", "url"]


@pytest.mark.parametrize("content_type", ["application/merge-patch+json", "application/json"])
def test_patch_merges_into_the_current_config(api, config_file, content_type):
    assert api.client.patch("/api/config", json={"storage": {"max_age_h": 5.0}}).is_success
    assert load_config(config_file).storage.max_age_h == 5.0
    patch = {"tracking": {"hold_s": 4.0}, "storage": {"max_age_h": None}}
    response = api.client.patch(
        "/api/config", content=json.dumps(patch), headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    on_disk = load_config(config_file)
    assert on_disk.tracking.hold_s == 4.0
    assert on_disk.tracking.iou_match == 0.2  # untouched sibling kept
    assert on_disk.storage.max_age_h == 24.0 * 30  # null: back to the default
    assert on_disk.cameras == api.control.config().cameras  # untouched, secrets included
    assert on_disk.cameras[0].source.url == RTSP_URL  # type: ignore[union-attr]
    assert {c["path"] for c in response.json()["changes"]} == {
        "tracking.hold_s",
        "storage.max_age_h",
    }
    assert [e["method"] for e in audit_lines(api)] == ["PATCH", "PATCH"]


def test_patch_invalid_names_the_field(api, config_file):
    before = config_file.read_bytes()
    response = api.client.patch("/api/config", json={"cameras": [{"id": "x", "source": {}}]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["cameras", 0, "source"]
    assert config_file.read_bytes() == before


def test_unchanged_config_is_not_rewritten_or_audited(api, config_file):
    before = config_file.read_bytes()
    response = api.client.put("/api/config", json=api.client.get("/api/config").json())
    assert response.status_code == 200
    assert response.json()["changes"] == []
    assert config_file.read_bytes() == before
    assert api.control.applied == []
    assert audit_lines(api) == []


def test_service_changes_say_they_need_a_restart(api):
    response = api.client.patch("/api/config", json={"service": {"port": 9090}})
    assert response.status_code == 200
    assert response.json()["restart_required"] == ["service.port"]


def test_refused_by_the_pipeline_restores_the_file(api, config_file):
    before = config_file.read_bytes()
    api.control.apply_error = ConfigError("camera gate: model yunet is not installed")
    response = api.client.patch("/api/config", json={"tracking": {"hold_s": 9.0}})
    assert response.status_code == 422
    assert "model yunet is not installed" in response.json()["detail"][0]["msg"]
    assert config_file.read_bytes() == before
    # Audited before it was tried, then recorded as failed: the trail shows the attempt.
    attempt, failure = audit_lines(api)
    assert "outcome" not in attempt
    assert failure["outcome"] == "failed, nothing changed"
    assert failure["changes"] == attempt["changes"]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 422),
        (b"[1, 2]", {"Content-Type": "application/json"}, 422),
        (b"tracking: {hold_s: 2}", {"Content-Type": "application/x-yaml"}, 415),
    ],
)
def test_bodies_that_are_not_a_json_object(api, config_file, body, headers, status):
    before = config_file.read_bytes()
    assert api.client.put("/api/config", content=body, headers=headers).status_code == status
    assert config_file.read_bytes() == before


def test_too_large_bodies_are_refused(api, config_file):
    before = config_file.read_bytes()
    limit = api.settings.max_body_bytes
    padded = api.client.get("/api/config").json()
    padded["cameras"][1]["id"] = "x" * (limit + 1)
    declared = api.client.put("/api/config", json=padded)
    assert declared.status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"tracking": {"hold_s": 2.0}, "pad": "'
        for _ in range(limit // 1024 + 2):
            yield b"x" * 1024
        yield b'"}'

    chunked = httpx.put(
        f"{api.url}/api/config",
        content=chunks(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    assert config_file.read_bytes() == before
    assert api.control.applied == []
    # The server is still fine afterwards.
    assert api.client.get("/healthz").status_code == 200


def test_small_chunked_bodies_are_accepted(api, config_file):
    def chunks():
        yield b'{"tracking": '
        yield b'{"hold_s": 2.0}}'

    response = httpx.patch(
        f"{api.url}/api/config",
        content=chunks(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert load_config(config_file).tracking.hold_s == 2.0


def test_without_a_config_file_changes_are_refused(start_api, control):
    api = start_api(control, config_path=None)
    response = api.client.patch("/api/config", json={"tracking": {"hold_s": 2.0}})
    assert response.status_code == 409
    assert "config file" in response.json()["detail"]
    assert control.applied == []


def test_audit_lists_newest_last_with_a_limit(api):
    for hold in (2.0, 3.0, 4.0):
        assert api.client.patch("/api/config", json={"tracking": {"hold_s": hold}}).is_success
    entries = api.client.get("/api/config/audit").json()
    assert [e["changes"][0]["new"] for e in entries] == [2.0, 3.0, 4.0]
    last_two = api.client.get("/api/config/audit", params={"limit": 2}).json()
    assert [e["changes"][0]["new"] for e in last_two] == [3.0, 4.0]
    assert api.client.get("/api/config/audit", params={"limit": 0}).status_code == 422


def test_config_file_is_yaml_a_person_can_read(api, config_file):
    assert api.client.patch("/api/config", json={"tracking": {"hold_s": 2.0}}).is_success
    data = yaml.safe_load(config_file.read_text())
    assert data["tracking"]["hold_s"] == 2.0
    assert data["cameras"][0]["source"]["url"] == RTSP_URL


def test_audit_records_the_peer_not_a_claimed_forwarded_address(api):
    response = api.client.patch(
        "/api/config",
        json={"tracking": {"hold_s": 2.0}},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert response.status_code == 200
    [entry] = audit_lines(api)
    assert entry["client"] == "127.0.0.1"
    assert entry["forwarded_for"] == "203.0.113.9"
