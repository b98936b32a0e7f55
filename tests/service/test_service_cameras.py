"""Camera status, snapshots and the MJPEG preview over real HTTP."""

from __future__ import annotations

import threading

import cv2
import httpx
import numpy as np
from service_support import TOKEN, wait_until


def test_cameras_list_status_and_counters(api):
    response = api.client.get("/api/cameras")
    assert response.status_code == 200
    cameras = {camera["id"]: camera for camera in response.json()}
    assert set(cameras) == {"gate", "hall", "spare"}
    assert cameras["gate"] == {
        "id": "gate",
        "enabled": True,
        "state": "running",
        "fps": 15.0,
        "detections_per_s": 4.5,
        "ready": True,
        "reason": "",
        "last_error": "",
        "recording": "recording",
        "stream_url": "rtsp://127.0.0.1:8554/gate",
        "stream": "serving (1 viewers)",
        "counters": {"frames_in": 12, "frames_out": 10, "frames_withheld": 2,
                     "frames_dropped": 3, "faces_redacted": 7},
    }
    assert cameras["spare"]["enabled"] is False
    assert cameras["spare"]["ready"] is False


def test_snapshot_is_the_pipelines_jpeg(api):
    response = api.client.get("/api/cameras/gate/snapshot.jpg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "no-store"
    assert response.content == api.control.jpegs[0]
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (48, 64, 3)


def test_snapshot_unknown_camera_is_404_and_no_frame_yet_is_503(api):
    assert api.client.get("/api/cameras/nope/snapshot.jpg").status_code == 404
    api.control.snapshots["hall"] = None
    response = api.client.get("/api/cameras/hall/snapshot.jpg")
    assert response.status_code == 503
    assert "no redacted frame yet" in response.json()["detail"]


class MultipartReader:
    """Parses a multipart/x-mixed-replace stream as a browser would.

    Holds one byte iterator for the whole response: dropping a half-read httpx iterator closes
    the connection, which would end the stream under test.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.boundary = response.headers["content-type"].split("boundary=")[1].encode()
        self.chunks = response.iter_bytes()
        self.buffer = b""

    def read(self, count: int) -> list[tuple[dict[str, str], bytes]]:
        parts: list[tuple[dict[str, str], bytes]] = []
        while len(parts) < count:
            part = self._parse_one()
            if part is None:
                self.buffer += next(self.chunks)
            else:
                parts.append(part)
        return parts

    def _parse_one(self) -> tuple[dict[str, str], bytes] | None:
        start = self.buffer.find(b"--" + self.boundary + b"\r\n")
        header_end = self.buffer.find(b"\r\n\r\n", start)
        if start < 0 or header_end < 0:
            return None
        lines = self.buffer[start + len(self.boundary) + 4 : header_end].decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        body_start = header_end + 4
        body_end = body_start + int(headers["Content-Length"])
        if len(self.buffer) < body_end + 2:
            return None
        assert self.buffer[body_end : body_end + 2] == b"\r\n"
        body = self.buffer[body_start:body_end]
        self.buffer = self.buffer[body_end + 2 :]
        return headers, body


def test_stream_yields_multipart_jpeg_parts(api):
    with api.client.stream("GET", "/api/cameras/gate/stream.mjpg") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("multipart/x-mixed-replace")
        parts = MultipartReader(response).read(4)
    assert [headers["Content-Type"] for headers, _ in parts] == ["image/jpeg"] * 4
    jpegs = api.control.jpegs
    assert [body for _, body in parts] == [jpegs[0], jpegs[1], jpegs[2], jpegs[0]]
    for _, body in parts:
        assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR) is not None


def test_stream_accepts_the_query_token_for_img_tags(api):
    with api.anonymous.stream("GET", f"/api/cameras/gate/stream.mjpg?token={TOKEN}") as response:
        assert response.status_code == 200
        assert len(MultipartReader(response).read(1)) == 1
    assert api.anonymous.get("/api/cameras/gate/stream.mjpg").status_code == 401


def test_stream_of_unknown_camera_is_404(api):
    # FakeControl.preview_jpegs is a generator: its KeyError would come after the headers.
    assert api.client.get("/api/cameras/nope/stream.mjpg").status_code == 404


def test_stream_closes_the_preview_when_the_client_leaves(api):
    with api.client.stream("GET", "/api/cameras/gate/stream.mjpg") as response:
        reader = MultipartReader(response)  # kept: see MultipartReader
        reader.read(2)
        assert api.control.open_previews == 1
    wait_until(lambda: api.control.open_previews == 0, 10, "the preview to be closed")


def test_silent_previews_do_not_block_other_routes(start_api, control, config_file):
    """Previews waiting for frames hold threads of their own, not the ones routes run in."""
    api = start_api(control, config_path=config_file, max_streams=3, worker_threads=2)
    control.silent.add("hall")
    opened = []
    stop = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with client.stream("GET", "/api/cameras/hall/stream.mjpg", headers=headers) as r:
                opened.append(r.status_code)
                stop.wait(30)

    watchers = [threading.Thread(target=watch, daemon=True) for _ in range(3)]
    for watcher in watchers:
        watcher.start()
    wait_until(lambda: len(opened) == 3 and control.open_previews == 3, 20, "3 open previews")
    assert opened == [200, 200, 200]
    # A fourth preview is refused, and every other route still answers.
    assert api.client.get("/api/cameras/gate/stream.mjpg").status_code == 503
    for path in ("/readyz", "/api/config", "/api/cameras", "/api/cameras/gate/snapshot.jpg"):
        assert api.client.get(path).status_code == 200, path
    stop.set()
    for watcher in watchers:
        watcher.join(20)
    control.stop()  # the silent previews return only now; then they are closed
    wait_until(lambda: control.open_previews == 0, 10, "the silent previews to be closed")
