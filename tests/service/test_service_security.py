"""The hostile probe's findings (issue 16), each replayed against the real app under uvicorn:
nothing may change in force or on disk, and each gets a clear 4xx (or 503 for a broken disk)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import TOKEN, FakeControl, config_dict

from edge.config import MAX_CAMERAS, EdgeblurConfig
from edge.configfile import config_to_dict, save_config
from edge.errors import ConfigError
from service.deps import AppSettings
from service.server import mask_query_token


def audit_lines(api: Any) -> list[dict[str, Any]]:
    path = api.settings.audit_log
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_nothing_changed(api: Any, config_file: Path, before: bytes) -> None:
    assert config_file.read_bytes() == before
    assert api.control.applied == []
    assert audit_lines(api) == []


def test_an_audit_write_failure_changes_nothing(api, config_file):
    """The change was applied and saved before the audit line, which then failed: a 500, the
    change live and unaudited."""
    before = config_file.read_bytes()
    in_force = api.control.config()
    api.settings.audit_log.parent.mkdir(parents=True, exist_ok=True)
    api.settings.audit_log.mkdir()  # a directory where the log should be: every write fails
    response = api.client.patch("/api/config", json={"tracking": {"hold_s": 3.0}})
    assert response.status_code == 503
    assert "audit log" in response.json()["detail"]
    assert config_file.read_bytes() == before
    assert api.control.config() is in_force and api.control.applied == []


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b'{"tracking": {"hold_s": 2.0}, "cameras": [{"id": "x", "source": '
         b'{"type": "file", "path": "\\ud800"}}]}', "surrogate"),
        (b'{"detector": {"threshold": 0.3, "type": "centerface", "x\\udfff": 1}}', "surrogate"),
        (b'{"tracking": {"hold_s": "\xff\xfe"}}', "UTF-8"),
        (b'{"detector": {"type": "centerface", "min_face_px": Infinity}}', "Infinity"),
        (b'{"detector": {"type": "centerface", "min_face_px": NaN}}', "NaN"),
        (b'{"tracking": {"hold_s": 1e999}}', "finite"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested"),
        (b"[" * 20000 + b"]" * 20000, "nested"),
    ],
)
def test_bodies_that_could_not_be_audited_are_refused(api, config_file, body, what):
    before = config_file.read_bytes()
    response = api.client.patch(
        "/api/config", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert what in json.dumps(response.json()), response.text
    assert_nothing_changed(api, config_file, before)
    assert api.client.get("/api/config").status_code == 200


@pytest.mark.parametrize(
    ("patch", "floor"),
    [
        ({"detector": {"type": "centerface", "threshold": 1.0}}, "detector_threshold_max"),
        ({"detector": {"type": "centerface", "small_face_threshold": 0.99}},
         "detector_threshold_max"),
        ({"detector": {"type": "centerface", "min_face_px": 100000}}, "min_face_px_max"),
        ({"detector": {"type": "centerface", "max_face_px": 0.001}}, "max_face_px_min"),
        ({"detector": {"type": "centerface", "input_long_side": 32}}, "input_long_side_min"),
        ({"detector": {"type": "centerface", "max_long_side": 32}}, "input_long_side_min"),
        ({"detector": {"type": "centerface", "scales": [0.05]}}, "largest_scale_min"),
        ({"redaction": {"method": "pixelate", "pixelate_blocks": 64}}, "pixelate_blocks_max"),
        ({"redaction": {"method": "blur", "blur_strength": 1e-6}}, "blur_strength_min"),
        ({"redaction": {"mask_scale": 1.0}}, "mask_scale_min"),
    ],
)
def test_changes_below_the_privacy_floor_get_422_naming_it(api, config_file, patch, floor):
    before = config_file.read_bytes()
    response = api.client.patch("/api/config", json=patch)
    assert response.status_code == 422, response.text
    assert f"privacy_floor.{floor}" in response.text
    assert {item["type"] for item in response.json()["detail"]} == {"privacy_floor"}
    assert_nothing_changed(api, config_file, before)
    metrics = api.client.get("/metrics").text
    assert 'edgeblur_config_changes_refused_total{reason="privacy_floor"} 1.0' in metrics


def test_a_camera_override_and_motion_only_are_held_to_the_floor(api, config_file):
    before = config_file.read_bytes()
    cameras = api.client.get("/api/config").json()["cameras"]
    cameras[1]["detector"] = {"type": "yunet", "threshold": 1.0}
    assert api.client.patch("/api/config", json={"cameras": cameras}).status_code == 422
    cameras[1]["detector"] = None
    cameras[1]["motion"] = {"mode": "only", "min_area_px": 10**9}
    response = api.client.patch("/api/config", json={"cameras": cameras})
    assert response.status_code == 422
    assert "motion_min_area_px_max" in response.text
    assert_nothing_changed(api, config_file, before)


def api_with_file_section(
    tmp_path: Path, start_api: Callable[..., Any], section: str, value: dict[str, Any]
) -> tuple[Any, FakeControl, Path]:
    """A running API over a config file whose `section` is `value` (file-only sections)."""
    data = config_dict(tmp_path)
    data[section] = value
    control = FakeControl(EdgeblurConfig.model_validate(data))
    path = tmp_path / f"{section}.yaml"
    save_config(control.config(), path)
    return start_api(control, config_path=path), control, path


def test_a_camera_searching_smaller_frames_than_the_floor_allows_is_refused(
    tmp_path: Path, start_api: Callable[..., Any]
):
    """A camera's detect_long_side becomes its detector's max_long_side, held to the floor's
    input_long_side_min like the detector's own sizes; lowering it within the floor counts as
    weakening."""
    api, control, path = api_with_file_section(
        tmp_path, start_api, "privacy_floor", {"input_long_side_min": 960}
    )
    before = path.read_bytes()
    cameras = api.client.get("/api/config").json()["cameras"]
    cameras[0]["detect_long_side"] = 640
    response = api.client.patch("/api/config", json={"cameras": cameras})
    assert response.status_code == 422, response.text
    assert "privacy_floor.input_long_side_min" in response.text
    assert path.read_bytes() == before and control.applied == []
    cameras[0]["detect_long_side"] = 1280
    response = api.client.patch("/api/config", json={"cameras": cameras})
    assert response.status_code == 200, response.text
    camera_id = cameras[0]["id"]
    assert response.json()["weakens_privacy"] == [f"cameras[{camera_id}].detector.max_long_side"]
    control.stop()


def test_weakening_within_the_floor_is_allowed_logged_and_counted(api, config_file, caplog):
    response = api.client.patch(
        "/api/config", json={"redaction": {"method": "blur"}, "tracking": {"hold_s": 0.5}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["weakens_privacy"] == ["redaction.method", "tracking.hold_s"]
    [entry] = audit_lines(api)
    assert entry["weakens_privacy"] == ["redaction.method", "tracking.hold_s"]
    assert any("PRIVACY WEAKENED" in record.getMessage() for record in caplog.records)
    metrics = api.client.get("/metrics").text
    assert 'edgeblur_privacy_weakened_total{setting="redaction.method"} 1.0' in metrics
    # Strengthening is not counted.
    api.client.patch("/api/config", json={"redaction": {"method": "noise"}})
    assert 'setting="redaction.method"} 1.0' in api.client.get("/metrics").text


def test_the_floor_comes_from_the_file_and_the_api_cannot_change_it(
    tmp_path: Path, start_api: Callable[..., Any]
):
    api, control, path = api_with_file_section(
        tmp_path, start_api, "privacy_floor", {"methods": ["noise", "solid"]}
    )
    before = path.read_bytes()
    response = api.client.patch("/api/config", json={"redaction": {"method": "blur"}})
    assert response.status_code == 422 and "privacy_floor.methods" in response.text
    for patch in ({"privacy_floor": None}, {"privacy_floor": {"methods": ["blur"]}}):
        response = api.client.patch("/api/config", json=patch)
        assert response.status_code == 403, response.text
        assert "config file on the box" in response.json()["detail"]
    assert path.read_bytes() == before and control.applied == []
    control.stop()


@pytest.mark.parametrize(
    "patch",
    [
        {"service": {"token": "attacker-token-0123456789"}},
        {"service": {"token_env": "HOME"}},
        {"service": {"host": "0.0.0.0"}},
        {"service": {"audit_log": "/tmp/elsewhere.log"}},
        {"storage": {"data_dir": "/etc"}},
        {"models": {"cache_dir": "/tmp/models"}},
        # The RTSP server runs this program: an API caller must not choose it.
        {"service": {"rtsp": {"python": "/bin/sh"}}},
        {"service": {"rtsp": {"port": 9554}}},
    ],
)
def test_the_service_section_is_file_only(api, config_file, patch):
    before = config_file.read_bytes()
    response = api.client.patch("/api/config", json=patch)
    assert response.status_code == 403, response.text
    assert "config file on the box" in response.json()["detail"]
    assert_nothing_changed(api, config_file, before)


def secret_camera_control(tmp_path: Path) -> FakeControl:
    data = config_dict(tmp_path)
    data["cameras"].append(
        {
            "id": "door",
            "enabled": False,
            "source": {
                "type": "rtsp",
                "url": "rtsp://${EDGEBLUR_CAM_1_USER}:${EDGEBLUR_CAM_1_PASSWORD}@192.0.2.20/live",
            },
        }
    )
    return FakeControl(EdgeblurConfig.model_validate(data))


@pytest.mark.parametrize(
    ("url", "status"),
    [
        # Another host for a secret the file binds to 192.0.2.20.
        ("http://${EDGEBLUR_CAM_1_USER}:${EDGEBLUR_CAM_1_PASSWORD}@127.0.0.1:9/x", 403),
        ("rtsp://${EDGEBLUR_CAM_1_USER}:${EDGEBLUR_CAM_1_PASSWORD}@127.0.0.1/live", 403),
        # Anything outside the camera prefix, and placeholders outside the credentials.
        ("http://u:p@127.0.0.1:9/${EDGEBLUR_TOKEN}", 422),
        ("http://${EDGEBLUR_TOKEN}@127.0.0.1:9/x", 422),
        ("${EDGEBLUR_CAM_1_URL}", 422),
    ],
)
def test_camera_secrets_stay_with_their_host(tmp_path, start_api, url, status):
    control = secret_camera_control(tmp_path)
    path = tmp_path / "secrets.yaml"
    save_config(control.config(), path)
    api = start_api(control, config_path=path)
    before = path.read_bytes()
    cameras = api.client.get("/api/config").json()["cameras"]
    kind = "mjpeg" if url.startswith("http") else "rtsp"
    cameras.append({"id": "probe", "source": {"type": kind, "url": url}})
    response = api.client.patch("/api/config", json={"cameras": cameras})
    assert response.status_code == status, response.text
    assert path.read_bytes() == before and control.applied == []
    # The same secrets may still be used where the file sends them.
    cameras[-1]["source"] = {
        "type": "rtsp",
        "url": "rtsp://${EDGEBLUR_CAM_1_USER}:${EDGEBLUR_CAM_1_PASSWORD}@192.0.2.20/live",
    }
    assert api.client.patch("/api/config", json={"cameras": cameras}).status_code == 200
    control.stop()


def test_camera_secrets_are_not_pushed_to_another_host(tmp_path, start_api):
    """A push of the anonymised stream carries ${EDGEBLUR_CAM_*} credentials too: an API
    change may not send them anywhere the file does not."""
    control = secret_camera_control(tmp_path)
    path = tmp_path / "secrets.yaml"
    save_config(control.config(), path)
    api = start_api(control, config_path=path)
    before = path.read_bytes()
    cameras = api.client.get("/api/config").json()["cameras"]
    cameras[-1]["stream"] = {"push": [{
        "url": "rtsp://${EDGEBLUR_CAM_1_USER}:${EDGEBLUR_CAM_1_PASSWORD}@127.0.0.1:9/steal"
    }]}
    response = api.client.patch("/api/config", json={"cameras": cameras})
    assert response.status_code == 403, response.text
    assert path.read_bytes() == before and control.applied == []
    control.stop()


def test_passwords_with_spaces_are_masked(tmp_path, start_api):
    data = config_dict(tmp_path)
    data["cameras"][0]["source"]["url"] = "rtsp://admin:pa ss word@192.0.2.10/x"
    control = FakeControl(EdgeblurConfig.model_validate(data))
    path = tmp_path / "spaces.yaml"
    save_config(control.config(), path)
    api = start_api(control, config_path=path)
    shown = api.client.get("/api/config").text
    assert "pa ss" not in shown and "word@" not in shown and "rtsp://***@192.0.2.10/x" in shown
    response = api.client.patch("/api/config", json={"tracking": {"hold_s": 2.0}})
    assert response.status_code == 200 and "pa ss" not in response.text
    assert "pa ss" not in api.settings.audit_log.read_text()
    control.stop()


def test_too_many_cameras_are_refused(api, config_file):
    before = config_file.read_bytes()
    cameras = [
        {"id": f"c{i}", "source": {"type": "demo", "width": 320, "height": 240}}
        for i in range(MAX_CAMERAS + 1)
    ]
    assert api.client.patch("/api/config", json={"cameras": cameras}).status_code == 422
    assert_nothing_changed(api, config_file, before)


def test_start_up_refuses_open_reads_when_the_token_variable_is_missing():
    named = EdgeblurConfig.model_validate({"service": {"token_env": "EDGEBLUR_TOKEN"}})
    with pytest.raises(ConfigError, match="EDGEBLUR_TOKEN, which is not set"):
        AppSettings.from_config(named, None, environ={})
    assert AppSettings.from_config(named, None, environ={"EDGEBLUR_TOKEN": TOKEN}).token == TOKEN
    # A file that names no token variable runs open on purpose (the demo).
    assert AppSettings.from_config(EdgeblurConfig(), None, environ={}).token is None


@pytest.mark.parametrize(
    "path",
    [
        f"/api/cameras/gate/snapshot.jpg?token={TOKEN}",
        f"/api/cameras/gate/snapshot.jpg?%74oken={TOKEN}",
        f"/api/cameras/gate/snapshot.jpg?a=1&tok%65n={TOKEN}&b=2",
        f"/api/cameras/gate/snapshot.jpg?TOKEN={TOKEN}",
    ],
)
def test_query_tokens_are_masked_however_the_key_is_spelled(api, path):
    assert TOKEN not in mask_query_token(path)
    assert "%74oken" not in path or api.anonymous.get(path).status_code == 200


def test_the_preview_limit_holds_under_concurrent_requests(start_api, control, config_file):
    api = start_api(control, config_path=config_file, max_streams=2, worker_threads=3)
    control.silent.add("gate")
    statuses: list[int] = []
    lock = threading.Lock()
    release = threading.Event()

    def open_preview() -> None:
        with httpx.Client(base_url=api.url, timeout=10) as client:
            with client.stream(
                "GET", "/api/cameras/gate/stream.mjpg", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as response:
                with lock:
                    statuses.append(response.status_code)
                release.wait(5)

    threads = [threading.Thread(target=open_preview) for _ in range(8)]
    for thread in threads:
        thread.start()
    for _ in range(100):
        with lock:
            if len(statuses) == 8:
                break
        threading.Event().wait(0.05)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(statuses) == 8
    assert statuses.count(200) <= 2 and statuses.count(503) >= 6, statuses


def test_config_in_force_is_what_is_on_disk_after_refusals(api, config_file):
    """Every refusal above leaves the file describing what runs."""
    api.client.patch("/api/config", json={"detector": {"type": "centerface", "threshold": 1.0}})
    assert config_to_dict(api.control.config()) == config_to_dict(
        EdgeblurConfig.model_validate(__import__("yaml").safe_load(config_file.read_text()))
    )


def test_a_camera_id_that_is_not_a_string_is_a_422(api, config_file):
    """Found by the fuzz: a list as a camera id made restoring masked secrets raise (500)."""
    before = config_file.read_bytes()
    cameras = api.client.get("/api/config").json()["cameras"]
    cameras[0]["id"] = ["gate"]
    assert api.client.patch("/api/config", json={"cameras": cameras}).status_code == 422
    assert_nothing_changed(api, config_file, before)


def test_camera_hosts_stay_in_the_configured_networks(tmp_path, start_api):
    api, control, path = api_with_file_section(
        tmp_path, start_api, "service", {"camera_networks": ["192.0.2.0/24", "2001:db8::/32"]}
    )
    before = path.read_bytes()
    cameras = api.client.get("/api/config").json()["cameras"]
    for url, status in [
        ("http://127.0.0.1:22/x", 422),  # a port scan of the box itself
        ("http://cams.example/x", 422),  # a name could resolve anywhere
        ("http://[2001:db9::1]/x", 422),
        ("http://[2001:db8::7]:8080/x", 200),
        ("http://u:p@192.0.2.99/x", 200),
    ]:
        probe = {"id": "probe", "source": {"type": "mjpeg", "url": url}}
        response = api.client.patch("/api/config", json={"cameras": [*cameras, probe]})
        assert response.status_code == status, (url, response.text)
        if status != 200:
            assert path.read_bytes() == before
    response = api.client.patch("/api/config", json={"service": {"camera_networks": None}})
    assert response.status_code == 403
    control.stop()


def test_the_audit_log_and_its_key_are_not_world_readable(api):
    assert api.client.patch("/api/config", json={"tracking": {"hold_s": 2.0}}).status_code == 200
    assert api.settings.audit_log.stat().st_mode & 0o027 == 0  # 0640 at most
    key = api.settings.audit_log.with_name("audit.log.key")
    assert key.stat().st_mode & 0o077 == 0
