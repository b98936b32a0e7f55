"""Frame sources against real servers and files: a GStreamer RTSP server on loopback, an HTTP
MJPEG server in a thread, H.264 files encoded here. Counter frames (tests/rtsp.py) carry their
own number, so order and freshness are checked on the decoded pixels, not on our bookkeeping.

No assertion is about speed; sleeps only make a consumer slow or wait for a server."""

from __future__ import annotations

import base64
import http.server
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
from pydantic import ValidationError
from rtsp import RtspServer, counter_frame, free_port, make_counter_video, read_counter

from edge.errors import SourceError
from edge.sources.base import expand_env, mask_url
from edge.sources.demo import DemoSource, DemoSourceConfig
from edge.sources.file import FileSource, FileSourceConfig
from edge.sources.live import MAX_CAPTURE_LAG_S, CaptureClock, NewestFrameSlot, _Arrival
from edge.sources.mjpeg import MjpegSource, MjpegSourceConfig
from edge.sources.registry import build_source
from edge.sources.rtsp import RtspSource, RtspSourceConfig
from edge.sources.usb import UsbSource, UsbSourceConfig
from edge.types import Frame

FPS = 15
FAST = {"open_timeout_s": 5.0, "read_timeout_s": 2.0, "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0}


def read_until(source, accept: Callable[[Frame], bool], attempts: int = 40) -> Frame:
    """Read until a frame satisfies `accept`, tolerating retryable errors (an outage)."""
    for _ in range(attempts):
        try:
            frame = source.read()
        except SourceError as error:
            assert error.retryable, error
            continue
        if frame is not None and accept(frame):
            return frame
    raise AssertionError(f"no accepted frame in {attempts} reads")


def read_outage(source, attempts: int = 40) -> SourceError:
    """Read until the source reports an outage; frames buffered before it are skipped."""
    for _ in range(attempts):
        try:
            source.read()
        except SourceError as error:
            return error
    raise AssertionError(f"no outage reported in {attempts} reads")


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 s of 320x240 H.264 at 15 fps: longer than any test holds a stream open."""
    return make_counter_video(tmp_path_factory.mktemp("video") / "counter.mp4", 60 * FPS, FPS)


@pytest.fixture
def rtsp_server(counter_video: Path) -> Iterator[RtspServer]:
    with RtspServer(counter_video) as server:
        yield server


@pytest.fixture
def opened():
    """Open sources and close them at the end of the test, whatever happens."""
    sources = []

    def open_source(source):
        sources.append(source)
        source.open()
        return source

    yield open_source
    for source in sources:
        source.close()


# --- RTSP -------------------------------------------------------------------------------


def test_rtsp_reads_frames_in_order(rtsp_server: RtspServer, opened) -> None:
    source = opened(RtspSource(RtspSourceConfig(url=rtsp_server.url, **FAST)))
    assert source.fps_hint == pytest.approx(FPS)
    frames = [source.read() for _ in range(10)]
    for frame in frames:
        assert frame is not None
        assert frame.image.shape == (240, 320, 3) and frame.image.dtype == np.uint8
    numbers = [read_counter(frame.image) for frame in frames]
    assert numbers == sorted(numbers) and numbers[-1] > numbers[0], numbers
    indexes = [frame.index for frame in frames]
    assert indexes == sorted(set(indexes))
    # Colour order: the counter video's red channel is the row number (BGR, not RGB).
    assert frames[-1].image[200, 200, 2] == pytest.approx(200, abs=12)
    assert source.state == "streaming" and source.reconnects == 0


def test_rtsp_reports_outage_and_recovers_after_server_restart(
    rtsp_server: RtspServer, opened
) -> None:
    source = opened(RtspSource(RtspSourceConfig(url=rtsp_server.url, **FAST)))
    read_until(source, lambda frame: read_counter(frame.image) >= 3)
    rtsp_server.stop()

    error = read_outage(source)
    assert error.retryable
    assert source.state == "reconnecting"
    # Still down: read() keeps reporting instead of hanging or returning stale frames.
    with pytest.raises(SourceError) as still_down:
        source.read()
    assert still_down.value.retryable

    rtsp_server.start()
    # The restarted server plays the file from its start: small counters mean new frames.
    frame = read_until(source, lambda frame: read_counter(frame.image) < 3 * FPS)
    assert source.reconnects == 1
    assert source.state == "streaming"
    assert frame.image.shape == (240, 320, 3)


def test_rtsp_stall_is_detected_and_reconnected(rtsp_server: RtspServer, opened) -> None:
    source = opened(RtspSource(RtspSourceConfig(
        url=rtsp_server.url, open_timeout_s=1.0, read_timeout_s=1.0, reconnect_min_s=0.2,
        reconnect_max_s=0.5,
    )))
    read_until(source, lambda frame: True)
    rtsp_server.pause()  # the connection stays open but nothing arrives: a frozen camera
    try:
        errors: list[SourceError] = []
        while len(errors) < 10 and source.state != "reconnecting":
            errors.append(read_outage(source))
        assert all(error.retryable for error in errors)
        # The watchdog gave the silent connection up (not just a read that timed out).
        assert source.state == "reconnecting", [str(error) for error in errors]
    finally:
        rtsp_server.resume()
    # The frozen connection was given up, so the frames that follow come from a new one.
    read_until(source, lambda frame: source.reconnects >= 1)


def test_rtsp_wrong_port_fails_open_with_a_clear_retryable_error() -> None:
    port = free_port()
    source = RtspSource(RtspSourceConfig(url=f"rtsp://127.0.0.1:{port}/cam", open_timeout_s=2))
    with pytest.raises(SourceError) as caught:
        source.open()
    source.close()
    assert caught.value.retryable
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "refused" in str(caught.value).lower()


def test_rtsp_open_timeout_bounds_a_server_that_never_answers() -> None:
    with socket.socket() as silent:  # accepts TCP connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        source = RtspSource(RtspSourceConfig(url=f"rtsp://127.0.0.1:{port}/cam",
                                             open_timeout_s=1.0))
        outcome: list[BaseException] = []

        def open_source() -> None:
            try:
                source.open()
            except BaseException as error:  # handed to the test thread
                outcome.append(error)

        opener = threading.Thread(target=open_source, daemon=True)
        opener.start()
        opener.join(30)  # a liveness bound, far above the 1 s timeout: open() must not hang
        assert not opener.is_alive(), "open() ignored open_timeout_s"
    source.close()
    assert len(outcome) == 1 and isinstance(outcome[0], SourceError), outcome
    assert "no answer within 1 s" in str(outcome[0])
    assert outcome[0].retryable


def test_rtsp_missing_variable_is_named_and_no_value_leaks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGEBLUR_CAM_TEST_USER", "user-value-7731")
    monkeypatch.delenv("EDGEBLUR_CAM_TEST_PASS", raising=False)
    source = RtspSource(RtspSourceConfig(
        url="rtsp://${EDGEBLUR_CAM_TEST_USER}:${EDGEBLUR_CAM_TEST_PASS}@127.0.0.1:9/cam"
    ))
    with pytest.raises(SourceError) as caught:
        source.open()
    source.close()
    assert not caught.value.retryable
    assert "EDGEBLUR_CAM_TEST_PASS" in str(caught.value)
    assert "user-value-7731" not in str(caught.value)


def test_rtsp_credentials_from_environment(
    counter_video: Path, opened, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "s3cr@t-4417"
    with RtspServer(counter_video, credentials=f"admin:{password}") as server:
        url = server.url.replace("rtsp://", "rtsp://admin:${EDGEBLUR_CAM_TEST_PASS}@")
        monkeypatch.setenv("EDGEBLUR_CAM_TEST_PASS", password)
        source = opened(RtspSource(RtspSourceConfig(url=url, **FAST)))
        assert source.read() is not None

        monkeypatch.setenv("EDGEBLUR_CAM_TEST_PASS", "wrong-9182")
        refused = RtspSource(RtspSourceConfig(url=url, **FAST))
        with pytest.raises(SourceError) as caught:
            refused.open()
        refused.close()
    assert not caught.value.retryable  # retrying a refused password could lock the account
    assert "401" in str(caught.value)
    for text in [str(caught.value), source.label, caplog.text]:
        assert password not in text and "wrong-9182" not in text


def test_rtsp_slow_consumer_gets_newest_frames_only(rtsp_server: RtspServer, opened) -> None:
    source = opened(RtspSource(RtspSourceConfig(url=rtsp_server.url, **FAST)))
    read_until(source, lambda frame: True)
    numbers = []
    for _ in range(4):
        time.sleep(0.5)  # the camera sends about 7 frames meanwhile
        frame = source.read()
        assert frame is not None
        numbers.append(read_counter(frame.image))
    assert source.dropped > 0
    assert all(b > a for a, b in zip(numbers, numbers[1:], strict=False)), numbers
    # Each read returns a frame that arrived during the sleep, not the one after the last read.
    assert all(b - a > 1 for a, b in zip(numbers, numbers[1:], strict=False)), numbers


# --- newest-frame mailbox ----------------------------------------------------------------


def test_newest_frame_slot_keeps_one_frame_and_reports_outage_once() -> None:
    slot: NewestFrameSlot[str] = NewestFrameSlot()
    assert slot.put(_Arrival("a", 0, 0.0)) is False
    assert slot.put(_Arrival("b", 1, 0.1)) is True  # "a" was never taken: dropped
    taken = slot.take(0.0)
    assert taken is not None and taken.payload == "b"
    assert slot.take(0.0) is None
    slot.post_outage(SourceError("down"))
    with pytest.raises(SourceError, match="down"):
        slot.take(0.0)
    assert slot.take(0.0) is None  # reported once; later reads time out instead


# --- file -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_counter_video(tmp_path_factory.mktemp("short") / "short.mp4", 20, FPS)


def test_file_once_delivers_every_frame_then_none(short_video: Path, opened) -> None:
    source = opened(FileSource(FileSourceConfig(path=short_video, realtime=False)))
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    assert [read_counter(frame.image) for frame in frames] == list(range(20))
    assert [frame.index for frame in frames] == list(range(20))
    assert source.read() is None
    assert source.fps_hint == pytest.approx(FPS)
    assert frames[1].timestamp - frames[0].timestamp == pytest.approx(1 / FPS, abs=1e-3)


def test_file_loop_restarts_and_keeps_time_increasing(short_video: Path, opened) -> None:
    source = opened(FileSource(FileSourceConfig(path=short_video, loop=True, realtime=False)))
    frames = [source.read() for _ in range(45)]
    assert all(frame is not None for frame in frames)
    numbers = [read_counter(frame.image) for frame in frames]
    assert numbers == list(range(20)) * 2 + list(range(5))
    assert [frame.index for frame in frames] == list(range(45))
    gaps = np.diff([frame.timestamp for frame in frames])
    assert np.allclose(gaps, 1 / FPS, atol=1e-3), gaps


def _truncated(source: Path, target: Path, fraction: float, faststart: bool) -> Path:
    if faststart:  # index first, as streaming-friendly files are: the damage shows mid-file
        moved = target.with_suffix(".fs.mp4")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-c", "copy",
                        "-movflags", "+faststart", str(moved)], check=True, timeout=60)
        source = moved
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda v, p: _truncated(v, p, 0.6, faststart=False), id="truncated"),
        pytest.param(lambda v, p: _truncated(v, p, 0.6, faststart=True), id="truncated-faststart"),
        pytest.param(lambda v, p: _written(p, os.urandom(4096)), id="garbage"),
        pytest.param(lambda v, p: _written(p, b""), id="empty"),
        pytest.param(lambda v, p: p, id="missing"),
        pytest.param(lambda v, p: (p.mkdir(), p)[1], id="directory"),
    ],
)
def test_bad_file_is_a_non_retryable_error_naming_it(
    make, short_video: Path, tmp_path: Path
) -> None:
    path = make(short_video, tmp_path / "bad input.mp4")
    source = FileSource(FileSourceConfig(path=path, realtime=False))
    delivered = 0
    with pytest.raises(SourceError) as caught:
        source.open()
        while source.read() is not None:
            delivered += 1
    source.close()
    assert not caught.value.retryable
    assert "bad input.mp4" in str(caught.value)
    assert delivered < 20


# --- MJPEG ------------------------------------------------------------------------------


class MjpegServer:
    """multipart/x-mixed-replace JPEG counter frames over HTTP on 127.0.0.1, ~30 fps.

    Each connection counts from 0. disconnect_after=N closes connections after N frames;
    content_length=False omits Content-Length (parts end at the next boundary); corrupt_every=N
    sends garbage instead of every N-th frame; auth="user:pass" demands Basic auth; status and
    content_type replace the normal answer."""

    def __init__(self, *, disconnect_after: int | None = None, content_length: bool = True,
                 corrupt_every: int | None = None, auth: str | None = None, status: int = 200,
                 content_type: str = "multipart/x-mixed-replace; boundary=frame") -> None:
        self.connections = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.connections += 1
                expected = "Basic " + base64.b64encode(auth.encode()).decode() if auth else None
                if expected and self.headers.get("Authorization") != expected:
                    self.send_error(401)
                    return
                if status != 200:
                    self.send_error(status)
                    return
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.end_headers()
                number = 0
                try:
                    while disconnect_after is None or number < disconnect_after:
                        ok, jpeg = cv2.imencode(".jpg", counter_frame(number))
                        corrupt = corrupt_every and number % corrupt_every == 0
                        body = b"\x00not a jpeg" * 50 if corrupt else jpeg.tobytes()
                        headers = b"--frame\r\nContent-Type: image/jpeg\r\n"
                        if content_length:
                            headers += f"Content-Length: {len(body)}\r\n".encode()
                        self.wfile.write(headers + b"\r\n" + body + b"\r\n")
                        number += 1
                        time.sleep(1 / 30)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client went away

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/stream"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> MjpegServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


def mjpeg(url: str, **overrides: float) -> MjpegSource:
    return MjpegSource(MjpegSourceConfig(url=url, **{**FAST, **overrides}))


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "boundaries"])
def test_mjpeg_reads_frames_in_order(content_length: bool, opened) -> None:
    with MjpegServer(content_length=content_length) as server:
        source = opened(mjpeg(server.url))
        frames = [source.read() for _ in range(8)]
    numbers = [read_counter(frame.image) for frame in frames]
    assert numbers == sorted(set(numbers)), numbers
    assert frames[0].image.shape == (240, 320, 3) and frames[0].image.dtype == np.uint8


def test_mjpeg_server_disconnect_is_reported_then_reconnected(opened) -> None:
    with MjpegServer(disconnect_after=10) as server:
        source = opened(mjpeg(server.url))
        error = read_outage(source)
        assert error.retryable
        read_until(source, lambda frame: source.reconnects >= 1)
        assert server.connections >= 2


def test_mjpeg_corrupt_parts_are_skipped_with_a_retryable_error(opened) -> None:
    with MjpegServer(corrupt_every=2) as server:  # every even-numbered part is garbage
        source = opened(mjpeg(server.url))
        errors: list[SourceError] = []
        numbers: list[int] = []
        while len(numbers) + len(errors) < 12:
            try:
                numbers.append(read_counter(source.read().image))
            except SourceError as error:
                errors.append(error)
    assert errors and all(error.retryable for error in errors)
    assert all("not a valid JPEG" in str(error) for error in errors)
    assert numbers and all(number % 2 == 1 for number in numbers), numbers


def test_mjpeg_basic_auth_from_environment(opened, monkeypatch: pytest.MonkeyPatch) -> None:
    with MjpegServer(auth="viewer:p@ss/word") as server:
        url = server.url.replace("http://", "http://viewer:${EDGEBLUR_CAM_TEST_MJPEG_PASS}@")
        monkeypatch.setenv("EDGEBLUR_CAM_TEST_MJPEG_PASS", "p%40ss%2Fword")  # URL-encoded
        source = opened(mjpeg(url))
        assert source.read() is not None
        monkeypatch.setenv("EDGEBLUR_CAM_TEST_MJPEG_PASS", "nope")
        with pytest.raises(SourceError) as caught:
            mjpeg(url).open()
    assert not caught.value.retryable and "401" in str(caught.value)
    assert "nope" not in str(caught.value)


@pytest.mark.parametrize(
    ("server_options", "expected"),
    [
        ({"status": 404}, "404"),
        ({"content_type": "image/jpeg"}, "not an MJPEG stream"),
    ],
)
def test_mjpeg_wrong_endpoint_is_non_retryable(server_options, expected: str) -> None:
    with MjpegServer(**server_options) as server:
        with pytest.raises(SourceError, match=expected) as caught:
            mjpeg(server.url).open()
    assert not caught.value.retryable


def test_mjpeg_unreachable_is_retryable() -> None:
    with pytest.raises(SourceError, match="cannot connect") as caught:
        mjpeg(f"http://127.0.0.1:{free_port()}/stream").open()
    assert caught.value.retryable


# --- USB --------------------------------------------------------------------------------


def test_usb_missing_device_is_a_clear_retryable_error() -> None:
    device = "/dev/video97"
    assert not os.path.exists(device)
    source = UsbSource(UsbSourceConfig(device=device))
    with pytest.raises(SourceError, match="no such device") as caught:
        source.open()
    source.close()
    assert caught.value.retryable  # it may be plugged in later
    assert device in str(caught.value)


def test_usb_path_that_is_not_a_camera_is_refused() -> None:
    source = UsbSource(UsbSourceConfig(device="/dev/null"))
    with pytest.raises(SourceError, match="not a V4L2 video device") as caught:
        source.open()
    assert not caught.value.retryable


@pytest.mark.skipif(not os.path.exists("/dev/video0"), reason="no USB camera at /dev/video0")
def test_usb_camera_delivers_frames(opened) -> None:
    source = opened(UsbSource(UsbSourceConfig(device="/dev/video0")))
    frame = source.read()
    assert frame is not None and frame.image.ndim == 3 and frame.image.dtype == np.uint8


# --- demo -------------------------------------------------------------------------------


def test_demo_frames_have_the_configured_size_and_are_reproducible(opened) -> None:
    config = DemoSourceConfig(width=640, height=360, fps=10, realtime=False)
    source = opened(DemoSource(config))
    frames = [source.read() for _ in range(3)]
    assert [frame.image.shape for frame in frames] == [(360, 640, 3)] * 3
    assert [frame.index for frame in frames] == [0, 1, 2]
    assert frames[1].timestamp - frames[0].timestamp == pytest.approx(0.1)
    assert not np.array_equal(frames[0].image, frames[2].image)  # it moves
    again = opened(DemoSource(config))
    assert np.array_equal(again.read().image, frames[0].image)


def test_demo_in_real_time_skips_frames_a_late_reader_missed(opened) -> None:
    source = opened(DemoSource(DemoSourceConfig(width=320, height=180, fps=20)))
    first = source.read()
    time.sleep(0.5)  # ten frame periods
    second = source.read()
    assert second.index - first.index > 1
    assert source.dropped == second.index - first.index - 1


DEMO_FRAMES = (0, 37, 111, 200)


def test_demo_faces_are_found_by_the_default_detector(opened) -> None:
    from edge.detectors.centerface import CenterFaceConfig
    from edge.detectors.registry import build_detector
    from edge.models import ModelStore

    detector = build_detector(CenterFaceConfig(), ModelStore())
    source = opened(DemoSource(DemoSourceConfig(realtime=False)))
    for index in DEMO_FRAMES:
        found = detector.detect(source.render(index))
        # The four portraits; the default's low small-face threshold may add small boxes on
        # the background, which only mask more.
        portraits = found.heights[found.heights >= 60]
        assert len(portraits) == 4, (index, found.heights)
        assert portraits.max() <= 300, found.heights


@pytest.mark.shared
def test_demo_faces_are_found_by_yunet(shared_dir: Path, opened) -> None:
    source = opened(DemoSource(DemoSourceConfig(realtime=False)))
    detector = cv2.FaceDetectorYN.create(
        str(shared_dir / "models" / "yunet_n_dynamic.onnx"), "", (1280, 720), 0.6
    )
    for index in DEMO_FRAMES:
        _, faces = detector.detect(source.render(index))
        heights = [] if faces is None else sorted(faces[:, 3])
        assert len(heights) == 4, (index, heights)
        assert 60 <= heights[0] and heights[-1] <= 260, heights


# --- registry and config ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        (RtspSourceConfig(url="rtsp://cam/x"), RtspSource),
        (UsbSourceConfig(), UsbSource),
        (FileSourceConfig(path=Path("x.mp4")), FileSource),
        (MjpegSourceConfig(url="http://cam/x"), MjpegSource),
        (DemoSourceConfig(), DemoSource),
    ],
)
def test_build_source_picks_the_plugin(config, kind) -> None:
    source = build_source(config)
    assert type(source) is kind
    source.close()  # closing an unopened source is fine


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (RtspSourceConfig, {"url": "http://cam/x"}),
        (RtspSourceConfig, {"url": "rtsp://cam/x", "reconnect_min_s": 5, "reconnect_max_s": 1}),
        (RtspSourceConfig, {"url": "rtsp://cam/x", "transport": "udp"}),
        (MjpegSourceConfig, {"url": "rtsp://cam/x"}),
        (UsbSourceConfig, {"device": "video0"}),
        (DemoSourceConfig, {"fps": 0}),
    ],
)
def test_bad_source_config_is_refused(model, fields) -> None:
    with pytest.raises(ValidationError):
        model(**fields)


def test_expand_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEBLUR_CAM_TEST_A", "alpha")
    assert expand_env("rtsp://${EDGEBLUR_CAM_TEST_A}@h/x") == "rtsp://alpha@h/x"
    assert expand_env("rtsp://h/$EDGEBLUR_CAM_TEST_A") == "rtsp://h/$EDGEBLUR_CAM_TEST_A"  # braces
    monkeypatch.delenv("EDGEBLUR_CAM_TEST_B", raising=False)
    with pytest.raises(SourceError, match="EDGEBLUR_CAM_TEST_B is not set"):
        expand_env("rtsp://u:${EDGEBLUR_CAM_TEST_B}@h/")


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://${EDGEBLUR_CAM_TEST_A}@h/${EDGEBLUR_CAM_TEST_A}",  # path
        "rtsp://u:p@${EDGEBLUR_CAM_TEST_A}/x",  # host
        "rtsp://u:p@h:${EDGEBLUR_CAM_TEST_A}/x",  # port
        "${EDGEBLUR_CAM_TEST_A}",  # the whole URL, scheme included
        "rtsp://u:${EDGEBLUR_TOKEN}@h/x",  # a variable outside the camera prefix
        "rtsp://u:${HOME}@h/x",
    ],
)
def test_placeholders_expand_only_in_credentials_from_the_camera_prefix(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """A camera URL could send any environment variable (the API token) to any host."""
    monkeypatch.setenv("EDGEBLUR_CAM_TEST_A", "attacker.example")
    monkeypatch.setenv("EDGEBLUR_TOKEN", "the-api-token-0123456789")
    with pytest.raises(ValidationError):
        RtspSourceConfig(url=url)
    with pytest.raises(SourceError):
        expand_env(url)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("p@ss", "p%40ss"),
        ("a/b?c#d", "a%2Fb%3Fc%23d"),
        ("with space", "with%20space"),
        ("p%40ss", "p%40ss"),  # already encoded values keep working
    ],
)
def test_a_secret_cannot_move_the_host(
    monkeypatch: pytest.MonkeyPatch, value: str, encoded: str
) -> None:
    monkeypatch.setenv("EDGEBLUR_CAM_TEST_P", value + "@evil.example/")
    expanded = expand_env("rtsp://admin:${EDGEBLUR_CAM_TEST_P}@10.0.0.5:554/live")
    assert expanded == f"rtsp://admin:{encoded}%40evil.example%2F@10.0.0.5:554/live"
    assert urlsplit(expanded).hostname == "10.0.0.5"


@pytest.mark.parametrize(
    ("model", "url"),
    [
        (RtspSourceConfig, "http://cam/x"),  # the scheme must match the source type
        (RtspSourceConfig, "file:///etc/passwd"),
        (MjpegSourceConfig, "rtsp://cam/x"),
        (MjpegSourceConfig, "${EDGEBLUR_CAM_TEST_URL}"),
    ],
)
def test_scheme_matches_the_source_type(model: Any, url: str) -> None:
    with pytest.raises(ValidationError):
        model(url=url)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtsp://admin:pa ss@10.0.0.5/x", "rtsp://***@10.0.0.5/x"),
        ("rtsp://admin:p@ss/w@10.0.0.5/x", "rtsp://***@10.0.0.5/x"),
        ("http://10.0.0.5/video.mjpg", "http://10.0.0.5/video.mjpg"),
        ("cannot open rtsp://a:b c d@h/x: refused", "cannot open rtsp://***@h/x: refused"),
    ],
)
def test_credentials_are_masked_by_parsing_the_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


class _HostileMjpeg:
    """One MJPEG connection on 127.0.0.1 that sends the given raw body after the headers."""

    def __init__(self, body: Callable[[socket.socket], None]) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/stream"
        self._body = body
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\n"
                         b"Content-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n")
            try:
                self._body(conn)
            except OSError:
                pass

    def close(self) -> None:
        self._listener.close()


@pytest.mark.parametrize("length", [b"-1", b"abc", b"+5", b"99999999999"])
def test_mjpeg_bad_content_length_is_a_retryable_error(length: bytes) -> None:
    """-1 once read the whole stream into memory; a non-numeric one failed the camera for good."""
    def body(conn: socket.socket) -> None:
        conn.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + length
                     + b"\r\n\r\n" + b"x" * 4096)
        time.sleep(2)

    server = _HostileMjpeg(body)
    source = mjpeg(server.url, max_frame_bytes=1024)
    connection = source._connect()
    try:
        with pytest.raises(SourceError) as caught:
            next(iter(connection.payloads()))
    finally:
        connection.close()
        server.close()
    assert caught.value.retryable


def test_mjpeg_watchdog_counts_frames_not_bytes() -> None:
    """A sender trickling bytes without ever finishing a frame is given up on."""
    def body(conn: socket.socket) -> None:
        conn.sendall(b"--frame\r\n")
        for _ in range(200):
            conn.sendall(b"X-Padding: 1\r\n")
            time.sleep(0.05)

    server = _HostileMjpeg(body)
    source = mjpeg(server.url, read_timeout_s=0.5)
    connection = source._connect()
    started = time.monotonic()
    try:
        with pytest.raises(SourceError, match="no whole frame"):
            next(iter(connection.payloads()))
    finally:
        connection.close()
        server.close()
    assert time.monotonic() - started < 5


def test_capture_clock_keeps_the_cameras_frame_spacing_through_arrival_jitter() -> None:
    """Frames 40 ms apart on the camera's clock arrive in bursts (a busy box decodes late):
    their timestamps keep the camera's spacing, on the monotonic clock of the least delayed."""
    clock = CaptureClock()
    arrivals = [100.0, 100.2, 100.21, 100.22, 100.23, 100.2 + 0.04 * 5, 100.25]
    stamps = [clock.timestamp(5.0 + 0.04 * i, arrival) for i, arrival in enumerate(arrivals)]
    offset = min(a - (5.0 + 0.04 * i) for i, a in enumerate(arrivals))
    # Each timestamp is camera time plus the smallest offset seen so far.
    assert stamps[-1] == pytest.approx(5.0 + 0.04 * 6 + offset)
    assert np.diff(stamps[3:]) == pytest.approx([0.04] * 3)
    assert all(s <= a + 1e-9 for s, a in zip(stamps, arrivals, strict=True))


def test_capture_clock_re_anchors_when_the_camera_clock_jumps_or_is_missing() -> None:
    clock = CaptureClock()
    assert clock.timestamp(50.0, 10.0) == 10.0
    assert clock.timestamp(50.04, 10.04) == pytest.approx(10.04)
    # The camera restarted its clock: far behind, so the arrival time takes over.
    assert clock.timestamp(0.0, 10.08) == pytest.approx(10.08)
    assert clock.timestamp(0.04, 10.12 + MAX_CAPTURE_LAG_S / 2) == pytest.approx(10.12)
    assert clock.timestamp(None, 11.0) == 11.0
