"""Live outputs for real: frames encoded once, served by GStreamer's RTSP server (a child
process of Debian's python3) to PyAV viewers, published to a GStreamer RECORD mount, and
recorded at the same time. Everything on 127.0.0.1; no timing assertions, only generous
lower bounds on what arrives while a test waits.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from edge.redact import Redactor
from edge.sinks.fanout import EncodedOutputsSink, PacketOutput, RecorderConsumer
from edge.sinks.retention import Retention
from edge.sinks.segments import SegmentRecorder
from edge.streaming.push import RtspPushConsumer, check_push_url, expand_push_url
from edge.streaming.rtsp_server import USER, RtspServer
from edge.types import Detections, Frame
from tests.rtsp import RtspRecordServer, counter_frame, free_port, read_counter, stamp_counter
from tests.waiting import wait_until

FPS = 15
TOKEN = "streaming-test-token-0123"
HANG_GUARD_S = 30.0  # only reached when something hangs
STALL_S = 30.0  # how long a viewer stops reading (the issue asks for 30 s)
_redactor = Redactor()


class Camera:
    """Feeds numbered, redacted frames into a sink at FPS from a thread, as a camera's output
    thread does, and records how long each write took (a write that blocks would show)."""

    def __init__(
        self, sink: EncodedOutputsSink, width: int = 320, height: int = 240, noise: bool = False
    ) -> None:
        self.sink = sink
        self.width, self.height = width, height
        # Noise does not compress: megabytes a second, to fill a stalled viewer's buffers.
        rng = np.random.default_rng(1)
        self._noise = [rng.integers(0, 256, (height, width, 3), np.uint8) for _ in range(5)]
        self.noise = noise
        self.clock_offset = 0.0  # set below 0 mid-run: timestamps jump back (source restarted)
        self.written = 0
        self.longest_write_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        began = time.monotonic()
        while not self._stop.is_set():
            if self.noise:
                image = self._noise[self.written % len(self._noise)].copy()
                stamp_counter(image, self.written % 4096)
            else:
                image = counter_frame(self.written % 4096, self.width, self.height)
            frame = _redactor.redact(
                Frame(image, self.written, time.monotonic() + self.clock_offset),
                Detections.empty(),
            )
            started = time.monotonic()
            self.sink.write(frame)
            self.longest_write_s = max(self.longest_write_s, time.monotonic() - started)
            self.written += 1
            self._stop.wait(max(0.0, began + self.written / FPS - time.monotonic()))

    def __enter__(self) -> Camera:
        self.sink.start()
        self._thread.start()
        # Every output has taken a packet: an RTSP mount exists only once its output runs
        # (a viewer earlier than that is answered 404, as by a camera still booting).
        wait_until(
            lambda: all(s.packets_sent for s in self.sink.stats()),
            HANG_GUARD_S,
            "the first packet at every output",
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(HANG_GUARD_S)
        self.sink.stop()


@pytest.fixture
def rtsp_server() -> Iterator[RtspServer]:
    server = RtspServer("127.0.0.1", free_port(), password=TOKEN, start_timeout_s=HANG_GUARD_S)
    server.start()
    assert server.state == "serving", server.status
    try:
        yield server
    finally:
        server.stop()


def make_recorder(root: Path) -> SegmentRecorder:
    return SegmentRecorder(root, "door", 1.0, FPS, Retention(root, 3600.0, 10**9))


def read_counters(url: str, frames: int) -> list[int]:
    """Open `url` over TCP and decode `frames` frames; their counters."""
    counters: list[int] = []
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=HANG_GUARD_S) as container:
        for frame in container.decode(video=0):
            counters.append(read_counter(frame.to_ndarray(format="bgr24")))
            if len(counters) >= frames:
                break
    return counters


def stream_url(server: RtspServer, camera: str, password: str | None = TOKEN) -> str:
    """The camera's URL, once the server answers for it."""
    if camera != "nobody":
        wait_until(lambda: server.is_mounted(camera), HANG_GUARD_S, f"/{camera} mounted")
    credentials = f"{USER}:{password}@" if password is not None else ""
    return f"rtsp://{credentials}127.0.0.1:{server.port}/{camera}"


def test_a_viewer_gets_the_recorded_frames_and_a_wrong_password_is_refused(
    tmp_path: Path, rtsp_server: RtspServer
) -> None:
    recorder = make_recorder(tmp_path)
    mount = rtsp_server.mount("door")
    stream = PacketOutput("rtsp", mount)
    sink = EncodedOutputsSink(
        "door", FPS, [PacketOutput("recording", RecorderConsumer(recorder)), stream]
    )
    with Camera(sink) as camera:
        counters = read_counters(stream_url(rtsp_server, "door"), 2 * FPS)
        for password in ("wrong-password-123456", None):
            with pytest.raises(av.HTTPUnauthorizedError):
                read_counters(stream_url(rtsp_server, "door", password), 1)
        with pytest.raises(av.FFmpegError):  # no such camera
            read_counters(stream_url(rtsp_server, "nobody"), 1)
        wait_until(lambda: recorder.segments_written >= 1, HANG_GUARD_S, "a recorded segment")
    # Decoded frames are the camera's, in order, from the last keyframe on.
    assert counters == list(range(counters[0], counters[0] + len(counters)))
    assert counters[0] <= camera.written
    assert recorder.frames_dropped == 0
    assert rtsp_server.url("door") == f"rtsp://127.0.0.1:{rtsp_server.port}/door"


def test_two_viewers_at_once_and_a_late_joiner_starts_at_the_last_keyframe(
    rtsp_server: RtspServer,
) -> None:
    sink = EncodedOutputsSink("door", FPS, [PacketOutput("rtsp", rtsp_server.mount("door"))])
    results: list[list[int]] = []
    with Camera(sink):
        viewers = [
            threading.Thread(
                target=lambda: results.append(read_counters(stream_url(rtsp_server, "door"), FPS))
            )
            for _ in range(2)
        ]
        for viewer in viewers:
            viewer.start()
        wait_until(lambda: rtsp_server.viewers("door") >= 1, HANG_GUARD_S, "a viewer counted")
        for viewer in viewers:
            viewer.join(HANG_GUARD_S)
        late = read_counters(stream_url(rtsp_server, "door"), 3)
    assert len(results) == 2
    for counters in [*results, late]:
        assert counters == list(range(counters[0], counters[0] + len(counters)))


class StalledViewer:
    """An RTSP client that sets up TCP-interleaved playback, then never reads: its socket
    buffers fill and the server's writes to it back up. Speaks just enough RTSP (with Digest
    auth) by hand, since every client library reads what it is sent."""

    def __init__(self, url_path: str, port: int, password: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(HANG_GUARD_S)
        self.sock.connect(("127.0.0.1", port))
        self.url = f"rtsp://127.0.0.1:{port}/{url_path}"
        self.password = password
        self.cseq = 0
        self.auth = ""
        self.session = ""

    def request(self, method: str, url: str, headers: str = "") -> str:
        for _ in range(2):  # once more with credentials after a 401
            self.cseq += 1
            message = f"{method} {url} RTSP/1.0\r\nCSeq: {self.cseq}\r\n"
            if self.session:
                message += f"Session: {self.session}\r\n"
            if self.auth:
                message += self._authorization(method, url)
            self.sock.sendall((message + headers + "\r\n").encode())
            reply = self._reply()
            if " 401 " in reply.split("\r\n", 1)[0]:
                found = re.search(r"WWW-Authenticate: Digest (.*)", reply)
                assert found, reply
                self.auth = found.group(1)
                continue
            return reply
        raise AssertionError(f"{method} refused: {reply}")

    def _authorization(self, method: str, url: str) -> str:
        fields = dict(re.findall(r'(\w+)="([^"]*)"', self.auth))
        ha1 = hashlib.md5(f"{USER}:{fields['realm']}:{self.password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{method}:{url}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1}:{fields['nonce']}:{ha2}".encode()).hexdigest()
        return (
            f'Authorization: Digest username="{USER}", realm="{fields["realm"]}", '
            f'nonce="{fields["nonce"]}", uri="{url}", response="{response}"\r\n'
        )

    def _reply(self) -> str:
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(1)
        head = data.decode(errors="replace")
        length = re.search(r"Content-Length: (\d+)", head)
        if length:
            body = b""
            while len(body) < int(length.group(1)):
                body += self.sock.recv(int(length.group(1)) - len(body))
            head += body.decode(errors="replace")
        return head

    def play(self) -> None:
        sdp = self.request("DESCRIBE", self.url, "Accept: application/sdp\r\n")
        control = re.search(r"a=control:(\S+)", sdp.split("m=video", 1)[1])
        assert control, sdp
        track = control.group(1)
        track_url = track if track.startswith("rtsp://") else f"{self.url}/{track}"
        setup = self.request(
            "SETUP", track_url, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
        )
        session = re.search(r"Session: ([^;\r\n]+)", setup)
        assert session, setup
        self.session = session.group(1)
        self.request("PLAY", self.url, "Range: npt=0-\r\n")
        # From here on the socket is never read again.

    def close(self) -> None:
        self.sock.close()


class Viewer:
    """A PyAV viewer reading on a thread until closed; `counters` grows as frames decode."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.counters: list[int] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with av.open(self.url, options={"rtsp_transport": "tcp"}, timeout=HANG_GUARD_S) as c:
                for frame in c.decode(video=0):
                    self.counters.append(read_counter(frame.to_ndarray(format="bgr24")))
                    if self._stop.is_set():
                        return
        except Exception as error:  # reported by the test
            self.error = error

    def close(self) -> None:
        self._stop.set()
        self._thread.join(HANG_GUARD_S)


def test_a_viewer_stalled_for_30_s_holds_up_neither_the_camera_nor_the_other_viewer(
    tmp_path: Path, rtsp_server: RtspServer
) -> None:
    """One viewer connects and stops reading for STALL_S while another watches: the camera,
    its recording and the other viewer keep the frame rate throughout, and a viewer joining
    after the stall gets every frame in order."""
    recorder = make_recorder(tmp_path)
    stream = PacketOutput("rtsp", rtsp_server.mount("door"))
    recording = PacketOutput("recording", RecorderConsumer(recorder))
    sink = EncodedOutputsSink("door", FPS, [recording, stream])
    with Camera(sink, 480, 360, noise=True) as camera:
        stream_url(rtsp_server, "door")  # mounted
        stalled = StalledViewer("door", rtsp_server.port, TOKEN)
        watching: Viewer | None = None
        try:
            stalled.play()
            watching = Viewer(stream_url(rtsp_server, "door"))
            wait_until(lambda: len(watching.counters) >= 5, HANG_GUARD_S, "a viewer's frames")
            # Noise runs at megabytes a second: within a few seconds the stalled viewer's
            # socket buffers (a few MB on loopback) are full and the server's writes to it back
            # up; for the rest of the stall they stay full.
            began = (time.monotonic(), camera.written, recording.stats().packets_sent,
                     len(watching.counters))
            time.sleep(STALL_S)
            ended = (time.monotonic(), camera.written, recording.stats().packets_sent,
                     len(watching.counters))
            late = read_counters(stream_url(rtsp_server, "door"), 2 * FPS)
        finally:
            stalled.close()
            if watching is not None:
                watching.close()
    assert watching.error is None, watching.error
    seconds = ended[0] - began[0]
    written, recorded, watched = (
        after - before for after, before in zip(ended[1:], began[1:], strict=True)
    )
    # Lower bounds with room for a loaded machine; a camera held up by the stalled viewer
    # would write a handful of frames in the whole stall.
    assert written >= 0.8 * FPS * seconds
    assert recorded >= written - FPS and watched >= written - FPS
    assert watching.counters == list(range(watching.counters[0],
                                           watching.counters[0] + len(watching.counters)))
    assert late == list(range(late[0], late[0] + len(late)))
    assert recorder.frames_dropped == 0 and recording.stats().packets_dropped == 0
    # The stalled viewer missed frames once its queue was full, and /metrics counts them;
    # nobody else missed any (the watching viewer's counters run on without a gap).
    assert 0 < stream.stats().packets_dropped <= camera.written  # one viewer: a frame at most
    assert camera.longest_write_s < 1.0  # never held up


def test_a_viewer_too_slow_to_keep_up_misses_whole_stretches_and_what_it_gets_decodes(
    rtsp_server: RtspServer,
) -> None:
    """A viewer reading 2 frames a second of a 15 fps camera falls a queue's worth behind: it
    is skipped until it has room and resumes at a keyframe, so the frames it does get are the
    camera's, in order (a decoder fed a stream with holes shows wrong pictures: here, numbers
    going backwards), and the ones it missed are counted."""
    stream = PacketOutput("rtsp", rtsp_server.mount("door"))
    sink = EncodedOutputsSink("door", FPS, [stream])
    counters: list[int] = []
    with Camera(sink, 480, 360, noise=True):
        url = stream_url(rtsp_server, "door")
        with av.open(url, options={"rtsp_transport": "tcp"}, timeout=HANG_GUARD_S) as container:
            began = time.monotonic()
            for frame in container.decode(video=0):
                counters.append(read_counter(frame.to_ndarray(format="bgr24")))
                elapsed = time.monotonic() - began
                if elapsed < 8.0:
                    time.sleep(0.5)  # slow, then reading as fast as it comes
                elif elapsed > 14.0:
                    break
        dropped = stream.stats().packets_dropped
    steps = np.diff(counters)
    assert (steps >= 1).all(), f"frames out of order: {counters}"
    assert (steps > 1).any() and dropped > 0  # it did fall behind


@pytest.mark.parametrize("change", ["timestamps-restart", "frame-size"])
def test_viewers_go_on_when_the_camera_source_restarts(
    rtsp_server: RtspServer, change: str
) -> None:
    sink = EncodedOutputsSink("door", FPS, [PacketOutput("rtsp", rtsp_server.mount("door"))])
    with Camera(sink) as camera:
        viewer = Viewer(stream_url(rtsp_server, "door"))
        try:
            wait_until(lambda: len(viewer.counters) >= FPS, HANG_GUARD_S, "frames before")
            if change == "timestamps-restart":
                camera.clock_offset = -3600.0
            else:
                camera.width, camera.height = 352, 288
            restarted_at = camera.written
            wait_until(
                lambda: (
                    viewer.error or (viewer.counters and viewer.counters[-1] > restarted_at + FPS)
                ),
                HANG_GUARD_S,
                "frames after the source restarted",
            )
        finally:
            viewer.close()
    assert viewer.error is None, viewer.error


def test_push_reaches_a_record_server_and_resumes_after_it_restarts(tmp_path: Path) -> None:
    with RtspRecordServer(tmp_path) as server:
        push = RtspPushConsumer(server.url, min_backoff_s=0.2, max_backoff_s=0.5)
        output = PacketOutput("push-0", push)
        sink = EncodedOutputsSink("door", FPS, [output])
        with Camera(sink) as camera:
            wait_until(
                lambda: len(server.received_counters()) >= FPS,
                HANG_GUARD_S,
                "frames at the record server",
            )
            server.stop()  # killed outright
            down_at = camera.written
            wait_until(lambda: push.failures >= 1, HANG_GUARD_S, "the push noticing")
            wait_until(
                lambda: camera.written >= down_at + FPS,
                HANG_GUARD_S,
                "the camera going on while the target is down",
            )
            received_before = len(server.received_counters())
            server.start()
            wait_until(
                lambda: len(server.received_counters()) >= received_before + FPS,
                HANG_GUARD_S,
                "frames again after the restart",
            )
            wait_until(lambda: push.connects >= 2, HANG_GUARD_S, "a second connection")
    assert output.stats().packets_dropped > 0  # what was sent while it was down
    counters = server.received_counters()
    assert max(counters) > down_at, "frames captured after the restart arrived"


def test_a_push_target_that_stops_reading_holds_up_nothing_and_is_published_to_again(
    tmp_path: Path,
) -> None:
    """The record server frozen (SIGSTOP: its connections open, reading and answering
    nothing) for longer than the push's timeout: the camera keeps its rate, the push gives the
    connection up (FFmpeg alone would wait on it until TCP gave up, forever for a frozen
    process) and drops and counts frames; thawed, the server receives new frames again."""
    with RtspRecordServer(tmp_path) as server:
        push = RtspPushConsumer(server.url, timeout_s=2.0, min_backoff_s=0.2, max_backoff_s=0.5)
        output = PacketOutput("push-0", push)
        sink = EncodedOutputsSink("door", FPS, [output])
        with Camera(sink, 480, 360, noise=True) as camera:
            wait_until(lambda: len(server.received_counters()) >= FPS, HANG_GUARD_S,
                       "frames at the record server")
            server.pause()
            frozen_at, written_before = time.monotonic(), camera.written
            wait_until(lambda: push.failures >= 1, HANG_GUARD_S, "the push giving up")
            time.sleep(3.0)  # reconnecting to a server that does not answer, and giving up
            frozen_s = time.monotonic() - frozen_at
            written_frozen = camera.written - written_before
            server.resume()
            thawed_at = camera.written
            wait_until(lambda: max(server.received_counters()) > thawed_at, HANG_GUARD_S,
                       "frames captured after the thaw at the record server")
    assert written_frozen >= 0.8 * FPS * frozen_s  # the camera never waited for the push
    assert camera.longest_write_s < 1.0
    assert output.stats().packets_dropped > 0 and push.connects >= 2
    assert "connection given up" in push.last_error or push.state == "stopped"


def test_push_url_secrets_only_from_the_environment_and_only_in_the_userinfo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGEBLUR_CAM_PUSH_PASSWORD", "p@ss/word")
    template = "rtsp://edge:${EDGEBLUR_CAM_PUSH_PASSWORD}@nvr.local:8554/door"
    assert expand_push_url(template) == "rtsp://edge:p%40ss%2Fword@nvr.local:8554/door"
    for bad in (
        "rtsp://nvr.local/${EDGEBLUR_CAM_PUSH_PASSWORD}",
        "rtsp://edge:${HOME}@nvr.local/door",
        "http://nvr.local/door",
        "rtsp://a@b@c/x/@y",
    ):
        with pytest.raises(ValueError):
            check_push_url(bad)


def test_without_gstreamer_the_server_says_why_and_serves_nothing(tmp_path: Path) -> None:
    # Debian's python3 without its site packages: as on a machine without python3-gi.
    no_bindings = tmp_path / "python3"
    no_bindings.write_text('#!/bin/sh\nexec /usr/bin/python3 -S "$@"\n')
    no_bindings.chmod(0o755)
    server = RtspServer(
        "127.0.0.1", free_port(), python=str(no_bindings), start_timeout_s=HANG_GUARD_S
    )
    server.start()
    try:
        assert server.state == "unavailable"
        assert "gir1.2-gst-rtsp-server-1.0" in server.status
        # The camera's outputs go on; what reaches the mount is counted, not served.
        recorder = make_recorder(tmp_path)
        sink = EncodedOutputsSink(
            "door",
            FPS,
            [
                PacketOutput("recording", RecorderConsumer(recorder)),
                PacketOutput("rtsp", server.mount("door")),
            ],
        )
        with Camera(sink) as camera:
            wait_until(lambda: camera.written >= FPS, HANG_GUARD_S, "the camera running")
        assert recorder.frames_written == camera.written
        assert sink.stats()[1].packets_dropped == camera.written
    finally:
        server.stop()
    missing = RtspServer("127.0.0.1", free_port(), python="/nonexistent/python3")
    missing.start()
    assert missing.state == "unavailable" and "/nonexistent/python3" in missing.status


def test_without_a_token_only_a_loopback_bind_is_served() -> None:
    exposed = RtspServer("0.0.0.0", free_port(), password=None)
    exposed.start()
    assert exposed.state == "disabled" and "token" in exposed.status
    exposed.stop()
