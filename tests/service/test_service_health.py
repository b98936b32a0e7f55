"""Probes and metrics over real HTTP."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def test_healthz_needs_no_token(api):
    response = api.anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_follows_camera_health(api):
    ready = api.anonymous.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    # The disabled camera counts for nothing either way.
    assert sorted(ready.json()["ready"]) == ["gate", "hall"]

    api.control.set_ready("gate", False, "model centerface not loaded")
    not_ready = api.client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["not_ready"] == [
        {"id": "gate", "state": "running", "reason": "model centerface not loaded"}
    ]
    # Without the token: ready or not, and why in general terms only.
    general = api.anonymous.get("/readyz")
    assert general.status_code == 503
    assert general.json()["not_ready"] == [
        {"id": "gate", "state": "running", "reason": "camera is running"}
    ]
    assert not_ready.json()["ready"] == ["hall"]

    api.control.set_ready("gate", True)
    assert api.anonymous.get("/readyz").status_code == 200


def test_readyz_is_not_ready_when_health_fails(api):
    api.control.health_error = RuntimeError("pipeline lock poisoned")
    response = api.client.get("/readyz")
    assert response.status_code == 503
    assert "pipeline lock poisoned" in response.json()["not_ready"][0]["reason"]
    general = api.anonymous.get("/readyz")
    assert general.status_code == 503
    assert general.json()["not_ready"][0]["reason"] == "health check failed"


def test_readyz_masks_credentials_in_reasons(api):
    api.control.set_ready(
        "gate", False, "cannot connect to rtsp://admin:s3cret pass@192.0.2.10/x: refused"
    )
    response = api.client.get("/readyz")
    assert response.status_code == 503
    assert "s3cret" not in response.text and "pass@" not in response.text
    assert "rtsp://***@192.0.2.10/x" in response.text
    # Without the token the address and path are not shown at all.
    general = api.anonymous.get("/readyz")
    assert "192.0.2.10" not in general.text and "refused" not in general.text


def test_metrics_pass_the_pipeline_exposition_through(api):
    assert api.anonymous.get("/metrics").status_code == 401
    response = api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert response.content.startswith(api.control.metrics())
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    samples = {s.labels["camera"]: s.value for s in families["edgeblur_frames_out"].samples
               if s.name == "edgeblur_frames_out_total"}
    assert samples == {"gate": 10.0, "hall": 10.0, "spare": 10.0}


def test_openapi_docs_are_served(api):
    docs = api.anonymous.get("/docs")
    assert docs.status_code == 200
    # Served by the box itself: nothing loaded from a CDN, and the assets are there.
    assert "cdn." not in docs.text and "jsdelivr" not in docs.text
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert asset in docs.text
        assert api.anonymous.get(asset).status_code == 200
    assert api.anonymous.get("/redoc").status_code == 404  # ReDoc has no offline copy
    spec = api.anonymous.get("/openapi.json").json()
    assert {"/api/config", "/api/cameras/{camera_id}/stream.mjpg"} <= set(spec["paths"])
