"""Who may do what: bearer token, constant answers for missing/wrong tokens, no-token mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_support import TOKEN

from edge.config import EdgeblurConfig
from edge.errors import ConfigError
from service.app import AppSettings
from service.audit import AuditLog

READ_ROUTES = [
    "/metrics",
    "/api/config",
    "/api/config/schema",
    "/api/config/audit",
    "/api/cameras",
    "/api/cameras/gate/snapshot.jpg",
]


@pytest.mark.parametrize("path", READ_ROUTES)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}"])
def test_read_routes_refuse_a_missing_or_wrong_token(api, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = api.anonymous.get(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in response.text


@pytest.mark.parametrize("path", READ_ROUTES)
def test_read_routes_accept_the_token(api, path):
    assert api.client.get(path).status_code == 200


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_changes_without_the_token_are_refused_before_the_body_is_read(api, config_file, method):
    before = config_file.read_bytes()
    response = api.anonymous.request(method, "/api/config", content=b"{not json")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert config_file.read_bytes() == before
    assert api.control.applied == []


def test_query_token_works_only_for_media_routes(api):
    assert api.anonymous.get(f"/api/cameras/gate/snapshot.jpg?token={TOKEN}").status_code == 200
    assert api.anonymous.get("/api/cameras/gate/snapshot.jpg?token=wrong").status_code == 401
    assert api.anonymous.get(f"/api/config?token={TOKEN}").status_code == 401
    assert api.anonymous.get(f"/metrics?token={TOKEN}").status_code == 401


def test_without_a_token_reads_are_open_and_changes_refused(start_api, control, config_file):
    api = start_api(control, token=None, config_path=config_file)
    assert api.anonymous.get("/api/config").status_code == 200
    assert api.anonymous.get("/metrics").status_code == 200
    before = config_file.read_bytes()
    for method in ("PUT", "PATCH"):
        response = api.anonymous.request(method, "/api/config", json={"tracking": {"hold_s": 2}})
        assert response.status_code == 403
        assert "EDGEBLUR_TOKEN" in response.json()["detail"]
    # A token sent to a server that has none grants nothing.
    response = api.anonymous.put(
        "/api/config", json={}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 403
    assert config_file.read_bytes() == before
    assert control.applied == []


def test_settings_resolve_the_token(tmp_path: Path):
    from_file = EdgeblurConfig.model_validate({"service": {"token": TOKEN}})
    settings = AppSettings.from_config(from_file, None, environ={"EDGEBLUR_TOKEN": "x" * 20})
    assert settings.token == TOKEN  # the file wins over the environment

    default = EdgeblurConfig()
    assert AppSettings.from_config(default, None, environ={"EDGEBLUR_TOKEN": TOKEN}).token == TOKEN
    assert AppSettings.from_config(default, None, environ={"EDGEBLUR_TOKEN": ""}).token is None
    assert AppSettings.from_config(default, None, environ={}).token is None

    other_env = EdgeblurConfig.model_validate({"service": {"token_env": "CAM_API_TOKEN"}})
    settings = AppSettings.from_config(other_env, None, environ={"CAM_API_TOKEN": TOKEN})
    assert settings.token == TOKEN
    assert settings.token_env == "CAM_API_TOKEN"

    with pytest.raises(ConfigError, match="shorter than 16"):
        AppSettings.from_config(default, None, environ={"EDGEBLUR_TOKEN": "short"})


def test_settings_default_the_audit_log_to_the_data_dir(tmp_path: Path):
    config = EdgeblurConfig.model_validate({"storage": {"data_dir": str(tmp_path)}})
    assert AppSettings.from_config(config, None, environ={}).audit_log == tmp_path / "audit.log"
    explicit = EdgeblurConfig.model_validate({"service": {"audit_log": str(tmp_path / "a.jsonl")}})
    assert AppSettings.from_config(explicit, None, environ={}).audit_log == tmp_path / "a.jsonl"


def test_token_fingerprint_is_keyed_and_does_not_contain_the_token(tmp_path: Path):
    audit = AuditLog(tmp_path / "audit.log")
    fingerprint = audit.fingerprint(TOKEN)
    assert fingerprint.startswith("hmac:")
    assert TOKEN not in fingerprint
    assert fingerprint == audit.fingerprint(TOKEN)
    assert fingerprint != audit.fingerprint(TOKEN + "x")
    # The key stays with the box (0600) and across restarts; another box's key differs, so a
    # fingerprint cannot be checked against a guessed token without the key.
    assert audit.key_path.stat().st_mode & 0o077 == 0
    assert AuditLog(tmp_path / "audit.log").fingerprint(TOKEN) == fingerprint
    assert AuditLog(tmp_path / "other" / "audit.log").fingerprint(TOKEN) != fingerprint
