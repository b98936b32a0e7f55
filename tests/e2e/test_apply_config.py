"""apply_config restarts exactly the cameras whose settings changed; the rest keep running
(same worker, counters carrying on)."""

from __future__ import annotations

from e2e_support import camera_config, demo_camera, sample, status_of, wait_until

from edge.pipeline import Pipeline

SMALL = {"type": "demo", "width": 320, "height": 180, "fps": 10.0}


def two_cameras(tmp_path, **b_extra):
    cameras = [demo_camera("a", source=SMALL), demo_camera("b", source=SMALL, **b_extra)]
    return camera_config(tmp_path, cameras)


def test_only_the_changed_camera_restarts(tmp_path, running) -> None:
    config = two_cameras(tmp_path)
    pipeline = running(Pipeline(config))
    wait_until(lambda: all(s.ready for s in pipeline.health()), 60, "both cameras ready")
    a, b = pipeline.worker("a"), pipeline.worker("b")
    a_frames = status_of(pipeline, "a").frames_in

    # One camera's own setting: its detector override (here: a stricter threshold).
    changed = two_cameras(tmp_path, detector={"type": "centerface", "threshold": 0.6})
    pipeline.apply_config(changed)
    assert pipeline.config() == changed
    assert pipeline.worker("a") is a, "an unchanged camera was restarted"
    assert pipeline.worker("b") is not b, "the changed camera kept its old settings"
    assert status_of(pipeline, "a").frames_in >= a_frames  # kept counting, never reset
    wait_until(lambda: status_of(pipeline, "b").ready, 30, "camera b ready after restart")

    # Applying the same config again changes nothing.
    b = pipeline.worker("b")
    pipeline.apply_config(changed.model_copy(deep=True))
    assert pipeline.worker("a") is a and pipeline.worker("b") is b


def test_global_settings_restart_every_camera_they_affect(tmp_path, running) -> None:
    config = two_cameras(tmp_path, detector={"type": "centerface", "threshold": 0.6})
    pipeline = running(Pipeline(config))
    wait_until(lambda: all(s.ready for s in pipeline.health()), 60, "both cameras ready")
    a, b = pipeline.worker("a"), pipeline.worker("b")

    # The top-level detector is used by a only (b overrides it).
    pipeline.apply_config(config.model_copy(update={"detector": config.detector.model_copy(
        update={"threshold": 0.3})}))
    assert pipeline.worker("a") is not a and pipeline.worker("b") is b
    a = pipeline.worker("a")

    # Redaction applies to every camera.
    redaction = config.redaction.model_copy(update={"method": "solid"})
    pipeline.apply_config(pipeline.config().model_copy(update={"redaction": redaction}))
    assert pipeline.worker("a") is not a and pipeline.worker("b") is not b
    wait_until(lambda: all(s.ready for s in pipeline.health()), 30, "both cameras ready again")


def test_cameras_added_removed_and_disabled(tmp_path, running) -> None:
    config = camera_config(tmp_path, [demo_camera("a", source=SMALL)])
    pipeline = running(Pipeline(config))
    wait_until(lambda: status_of(pipeline, "a").ready, 60, "camera a ready")
    a = pipeline.worker("a")

    added = camera_config(
        tmp_path, [demo_camera("a", source=SMALL), demo_camera("b", source=SMALL)]
    )
    pipeline.apply_config(added)
    assert pipeline.worker("a") is a
    wait_until(lambda: status_of(pipeline, "b").ready, 30, "camera b ready")

    disabled = camera_config(
        tmp_path, [demo_camera("a", source=SMALL), demo_camera("b", source=SMALL, enabled=False)]
    )
    pipeline.apply_config(disabled)
    assert pipeline.worker("b") is None and pipeline.worker("a") is a
    b_status = status_of(pipeline, "b")
    assert not b_status.enabled and not b_status.ready and b_status.reason == "disabled"

    pipeline.apply_config(camera_config(tmp_path, [demo_camera("a", source=SMALL)]))
    assert [s.id for s in pipeline.health()] == ["a"]
    assert sample(pipeline, "edgeblur_frames_in_total", camera="a") > 0
    assert pipeline.registry.get_sample_value("edgeblur_frames_in_total", {"camera": "b"}) is None
    assert pipeline.worker("a") is a


def test_config_change_over_http_restarts_only_that_camera(
    tmp_path, running, serve_api
) -> None:
    from edge.configfile import load_config, save_config

    path = tmp_path / "edgeblur.yaml"
    save_config(two_cameras(tmp_path), path)
    pipeline = running(Pipeline(load_config(path), config_path=path))
    api = serve_api(pipeline, config_path=path)
    wait_until(lambda: api.get("/readyz").status_code == 200, 60, "/readyz 200")
    a, b = pipeline.worker("a"), pipeline.worker("b")

    cameras = api.get("/api/config").json()["cameras"]
    cameras[1]["fail_policy"] = "mask"
    response = api.patch("/api/config", json={"cameras": cameras})
    assert response.status_code == 200, response.text
    assert pipeline.worker("a") is a and pipeline.worker("b") is not b
    assert load_config(path).cameras[1].fail_policy == "mask"  # the service saved it
    wait_until(lambda: api.get("/readyz").status_code == 200, 30, "/readyz 200 again")
