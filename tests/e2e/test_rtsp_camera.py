"""A camera on a real RTSP server (GStreamer, loopback) behind the real service: it records;
when the server dies the camera reports "reconnecting" and /readyz answers 503; when the
server comes back the camera is ready again and frames flow, with nothing raw stored."""

from __future__ import annotations

from e2e_support import (
    camera_config,
    decoded_images,
    finished_segments,
    sample,
    status_of,
    stored_files,
    visible_faces,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

from edge.pipeline import Pipeline


def test_rtsp_camera_reconnects_and_readiness_follows(
    tmp_path, running, serve_api, rtsp_server, leak_detectors
) -> None:
    source = {
        "type": "rtsp",
        "url": rtsp_server.url,
        "open_timeout_s": 5,
        "read_timeout_s": 2,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
    }
    config = camera_config(
        tmp_path, [{"id": "door", "source": source, "recording": {"segment_s": 1.0}}]
    )
    data_dir = config.storage.data_dir
    pipeline = running(Pipeline(config))
    api = serve_api(pipeline)

    wait_until(lambda: api.get("/readyz").status_code == 200, 60, "/readyz 200")
    wait_until(lambda: len(finished_segments(data_dir, "door")) >= 2, 30, "two recorded segments")

    rtsp_server.stop()  # the camera loses power
    wait_until(
        lambda: status_of(pipeline, "door").state == "reconnecting", 20, "state reconnecting"
    )
    response = api.get("/readyz")
    assert response.status_code == 503
    (not_ready,) = response.json()["not_ready"]
    assert not_ready["id"] == "door" and not_ready["state"] == "reconnecting"
    frames_before = status_of(pipeline, "door").frames_in

    rtsp_server.start()  # and comes back on the same address
    wait_until(lambda: api.get("/readyz").status_code == 200, 30, "/readyz 200 again")
    wait_until(
        lambda: status_of(pipeline, "door").frames_in >= frames_before + 10, 20,
        "frames flowing again",
    )
    assert sample(pipeline, "edgeblur_reconnects_total", camera="door") >= 1
    scraped = {
        s.name: s.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        for s in family.samples
        if s.labels.get("camera") == "door"
    }
    assert scraped["edgeblur_reconnects_total"] >= 1
    assert scraped["edgeblur_camera_up"] == 1
    pipeline.stop()

    files = stored_files(data_dir)
    assert len(finished_segments(data_dir, "door")) >= 3 and all(p.suffix == ".mp4" for p in files)
    for path in files:
        for image in decoded_images(path):
            assert visible_faces(leak_detectors, image) == 0, f"a face is detectable in {path}"
