"""The hostile probe's findings replayed against the real pipeline behind real uvicorn: each gets
a clear 4xx (503 for a broken audit log), and nothing changes in force, on disk, or in the
running cameras (no camera restarted)."""

from __future__ import annotations

from e2e_support import camera_config, demo_camera, wait_until

from edge.configfile import config_to_dict, load_config, save_config
from edge.pipeline import Pipeline

SMALL = {"type": "demo", "width": 320, "height": 180, "fps": 10.0}

FINDINGS: list[tuple[bytes, int]] = [
    (b'{"detector": {"type": "centerface", "threshold": 1.0}}', 422),
    (b'{"detector": {"type": "centerface", "min_face_px": 100000}}', 422),
    (b'{"detector": {"type": "centerface", "min_face_px": Infinity}}', 422),
    (b'{"detector": {"type": "centerface", "max_face_px": 0.001}}', 422),
    (b'{"redaction": {"method": "pixelate", "pixelate_blocks": 64}}', 422),
    (b'{"redaction": {"method": "blur", "blur_strength": 1e-6}}', 422),
    (b'{"detector": {"type": "centerface", "threshold": 0.3}, "tracking": {"hold_s": "\\ud800"}}',
     422),
    (b'{"service": {"token_env": "\\ud800"}}', 422),
    (b'{"service": {"token": null, "token_env": "NOT_SET_ANYWHERE"}}', 403),
    (b'{"service": {"audit_log": "/tmp/elsewhere.log"}}', 403),
    (b'{"storage": {"data_dir": "/tmp/anywhere"}}', 403),
    (b"[" * 5000 + b"]" * 5000, 422),
]


def test_replayed_findings_change_nothing(tmp_path, running, serve_api) -> None:
    path = tmp_path / "edgeblur.yaml"
    cameras = [demo_camera("a", source=SMALL)]
    save_config(camera_config(tmp_path, cameras), path)
    pipeline = running(Pipeline(load_config(path), config_path=path))
    api = serve_api(pipeline, config_path=path)
    wait_until(lambda: api.get("/readyz").status_code == 200, 60, "/readyz 200")
    worker = pipeline.worker("a")
    before, in_force = path.read_bytes(), config_to_dict(pipeline.config())

    for body, status in FINDINGS:
        response = api.patch(
            "/api/config", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status, (body[:60], response.text)
    # A camera sending secrets to a host of the caller's choosing.
    current = api.get("/api/config").json()["cameras"]
    probe = {"id": "probe", "source": {"type": "mjpeg",
                                       "url": "http://u:${EDGEBLUR_TOKEN}@127.0.0.1:9/x"}}
    assert api.patch("/api/config", json={"cameras": [*current, probe]}).status_code == 422
    # Any audit-write failure: the change is refused, not applied unaudited.
    audit_log = tmp_path / "audit.log"
    audit_log.mkdir()
    response = api.patch("/api/config", json={"tracking": {"hold_s": 2.0}})
    assert response.status_code == 503

    assert path.read_bytes() == before
    assert config_to_dict(pipeline.config()) == in_force
    assert pipeline.worker("a") is worker  # never restarted
    assert api.get("/readyz").status_code == 200
    assert api.get("/api/config").status_code == 200
