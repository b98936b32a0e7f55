"""Sinks: segment recorder, retention, snapshot and live preview.

Real FFmpeg encode and decode through PyAV; every frame a sink sees comes from edge.redact.
The only fakes are faults that cannot be produced on demand (ENOSPC at a chosen frame, a file
that cannot be finished, a segment that cannot be deleted as root).
"""

from __future__ import annotations

import errno
import itertools
import os
import queue
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import MediaError, SinkError
from edge.media import EncodedPacket, H264PacketMuxer, H264Writer, probe, read_frames
from edge.redact import Redactor
from edge.sinks import segments
from edge.sinks.preview import MJPEG_BOUNDARY, PreviewSink, mjpeg_chunk
from edge.sinks.retention import SEGMENT_NAME, Retention
from edge.sinks.segments import SegmentRecorder
from edge.sinks.snapshot import SnapshotSink, snapshot_path
from edge.types import Detections, Frame, RedactedFrame, RedactionRecord

CAMERA = "cam1"
FPS = 10.0
HANG_GUARD_S = 60.0  # only ever reached when the code under test hangs
_redactor = Redactor()
_rng = np.random.default_rng(7)


def gray_frame(level: int, index: int, width: int = 64, height: int = 48) -> RedactedFrame:
    """A flat frame whose grey level identifies it after a lossy round trip."""
    image = np.full((height, width, 3), level, np.uint8)
    return _redactor.redact(Frame(image, index, index / FPS), Detections.empty())


def face_frame(index: int, timestamp: float, width: int = 64, height: int = 48) -> RedactedFrame:
    """A gradient frame with one masked 'face' box."""
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    image = np.ascontiguousarray(np.broadcast_to(ramp[None, :, None], (height, width, 3)))
    box = Detections(np.array([[4, 4, 20, 20]], np.float32), np.array([0.9], np.float32))
    return _redactor.redact(Frame(image, index, timestamp), box)


def noise_frame(index: int, width: int = 320, height: int = 240) -> RedactedFrame:
    """Incompressible frames, to fill a disk quickly."""
    image = _rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return _redactor.redact(Frame(image, index, index / FPS), Detections.empty())


def mean_level(image: np.ndarray) -> float:
    return float(image.mean())


def finished_segments(camera_dir: Path) -> list[Path]:
    """Final-named segments in recording order (by sequence number)."""
    found = [p for p in camera_dir.glob("*.mp4") if SEGMENT_NAME.match(p.name)]
    return sorted(found, key=lambda p: int(p.stem.rsplit("-", 1)[1]))


def hidden_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*")]


def make_recorder(root: Path, segment_s: float = 1.0, **retention: float) -> SegmentRecorder:
    keep = Retention(
        root, retention.get("max_age_s", 3600.0), int(retention.get("max_bytes", 10**9))
    )
    return SegmentRecorder(root, CAMERA, segment_s=segment_s, fps=FPS, retention=keep)


# --- only RedactedFrame reaches a sink ---------------------------------------------------------


def test_redacted_frame_cannot_be_constructed_outside_edge_redact() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(TypeError, match="only be created by edge.redact"):
        RedactedFrame(object(), image, 0, 0.0, RedactionRecord(0, False))


@pytest.mark.parametrize(
    "make_sink",
    [
        pytest.param(lambda root: make_recorder(root), id="segments"),
        pytest.param(lambda root: SnapshotSink(), id="snapshot"),
        pytest.param(lambda root: PreviewSink(), id="preview"),
    ],
)
def test_every_sink_refuses_a_raw_frame(tmp_path: Path, make_sink) -> None:
    sink = make_sink(tmp_path)
    sink.start()
    raw = Frame(np.zeros((48, 64, 3), np.uint8), 0, 0.0)
    try:
        with pytest.raises(TypeError, match="RedactedFrame"):
            sink.write(raw)
    finally:
        sink.stop()
    assert not list(tmp_path.rglob("*.mp4"))


def test_h264_writer_refuses_a_raw_frame(tmp_path: Path) -> None:
    with H264Writer(tmp_path / "x.mp4", 64, 48, FPS) as writer:
        with pytest.raises(TypeError, match="RedactedFrame"):
            writer.write(Frame(np.zeros((48, 64, 3), np.uint8), 0, 0.0))
        writer.write(face_frame(0, 0.0))


# --- segment recorder ----------------------------------------------------------------------------


def test_segments_roll_over_at_segment_s_and_each_decodes(tmp_path: Path) -> None:
    recorder = make_recorder(tmp_path, segment_s=1.0)
    recorder.start()
    levels = [8 * i for i in range(25)]  # 2.5 s at 10 fps
    try:
        for i, level in enumerate(levels):
            recorder.write(gray_frame(level, i))
    finally:
        recorder.stop()

    files = finished_segments(tmp_path / CAMERA)
    assert len(files) == 3
    decoded = [list(read_frames(path)) for path in files]
    assert [len(frames) for frames in decoded] == [10, 10, 5]
    flat = [frame for frames in decoded for frame in frames]
    for frame, level in zip(flat, levels, strict=True):
        assert (frame.width, frame.height) == (64, 48)
        assert abs(mean_level(frame.image) - level) < 4, "frames out of order or in wrong file"
    assert recorder.state == "stopped"
    assert recorder.segments_written == 3
    assert recorder.frames_written == 25
    assert recorder.frames_dropped == 0
    assert recorder.bytes_written == sum(p.stat().st_size for p in files)
    assert not hidden_files(tmp_path), "temporary files left behind"


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        # (width, height, timestamp) per frame -> (frames, width, height) per segment
        pytest.param(
            [(64, 48, 0.0), (64, 48, 0.1), (96, 64, 0.2), (96, 64, 0.3)],
            [(2, 64, 48), (2, 96, 64)],
            id="size-change",
        ),
        pytest.param(
            [(65, 49, 0.0), (65, 49, 0.1), (64, 48, 0.2)],
            [(2, 64, 48), (1, 64, 48)],  # odd sizes are rounded down to even for yuv420p
            id="odd-size-then-its-even-crop",
        ),
        pytest.param(
            [(64, 48, 5.0), (64, 48, 5.1), (64, 48, 0.0), (64, 48, 0.1)],
            [(2, 64, 48), (2, 64, 48)],
            id="timestamps-restart",
        ),
        pytest.param(
            [(64, 48, 0.0), (64, 48, 0.99), (64, 48, 1.0), (64, 48, 100.0)],
            [(2, 64, 48), (1, 64, 48), (1, 64, 48)],
            id="elapsed-and-gap",
        ),
    ],
)
def test_when_a_new_segment_starts(tmp_path: Path, frames, expected) -> None:
    recorder = make_recorder(tmp_path, segment_s=1.0)
    recorder.start()
    try:
        for index, (width, height, timestamp) in enumerate(frames):
            recorder.write(face_frame(index, timestamp, width, height))
    finally:
        recorder.stop()
    got = []
    for path in finished_segments(tmp_path / CAMERA):
        info = probe(path)
        got.append((len(list(read_frames(path))), info.width, info.height))
    assert got == expected


def test_recorder_lifecycle(tmp_path: Path) -> None:
    recorder = make_recorder(tmp_path)
    with pytest.raises(SinkError, match="not started"):
        recorder.write(face_frame(0, 0.0))
    recorder.start()
    recorder.write(face_frame(0, 0.0))
    recorder.stop()
    recorder.stop()  # idempotent
    assert recorder.segments_written == 1
    with pytest.raises(SinkError, match="stopped"):
        recorder.write(face_frame(1, 0.1))
    recorder.start()  # a new session keeps the earlier segment and adds one
    recorder.write(face_frame(2, 0.2))
    recorder.stop()
    assert len(finished_segments(tmp_path / CAMERA)) == 2


def test_start_deletes_partial_segments_of_an_earlier_crash(tmp_path: Path) -> None:
    camera_dir = tmp_path / CAMERA
    camera_dir.mkdir()
    crashed = camera_dir / ".20240101-120000-3.part.mp4"
    crashed.write_bytes(b"\x00" * 100)
    unrelated = camera_dir / "notes.txt"
    unrelated.write_text("keep me")
    recorder = make_recorder(tmp_path)
    recorder.start()
    recorder.write(face_frame(0, 0.0))
    recorder.stop()
    assert not crashed.exists()
    assert unrelated.exists()
    assert len(finished_segments(camera_dir)) == 1


def test_a_folder_that_cannot_be_created_is_reported_by_write(tmp_path: Path) -> None:
    (tmp_path / CAMERA).write_text("a file where the camera's folder should be")
    recorder = make_recorder(tmp_path)
    recorder.start()  # the pipeline's start path never raises for I/O
    with pytest.raises(SinkError, match=CAMERA):
        recorder.write(face_frame(0, 0.0))
    assert recorder.state == "failed"
    recorder.write(face_frame(1, 0.1))
    assert recorder.frames_dropped == 2
    recorder.stop()


def test_recorder_applies_retention_after_each_segment(tmp_path: Path) -> None:
    camera_dir = tmp_path / CAMERA
    camera_dir.mkdir()
    expired = camera_dir / "20200101-000000-1.mp4"
    expired.write_bytes(b"\x00" * 100)
    old = 1_000_000_000.0
    os.utime(expired, (old, old))
    recorder = make_recorder(tmp_path, max_age_s=24 * 3600.0)
    recorder.start()
    try:
        recorder.write(face_frame(0, 0.0))
        assert expired.exists(), "retention runs when a segment closes, not per frame"
    finally:
        recorder.stop()
    assert not expired.exists()
    assert len(finished_segments(camera_dir)) == 1


# --- full disk ---------------------------------------------------------------------------------


def test_real_full_disk_stops_recording_cleanly(tiny_disk: Path) -> None:
    recorder = make_recorder(tiny_disk, segment_s=3600.0)
    recorder.start()
    raised: list[SinkError] = []
    index = 0
    for index in range(400):
        try:
            recorder.write(noise_frame(index))
        except SinkError as error:
            raised.append(error)
            break
    assert raised, "512 KiB should fill well within 400 noise frames"
    assert recorder.state == "disk_full"
    assert "disk full" in recorder.last_error
    for later in range(index + 1, index + 6):
        recorder.write(noise_frame(later))  # dropped, not raised
    assert len(raised) == 1
    assert recorder.frames_dropped == index + 6  # the partial segment's frames are lost too
    assert not list(tiny_disk.rglob("*.mp4")), "no partial file, final or temporary"

    recorder.resume()  # the partial file was deleted, so there is room for small frames again
    for i in range(3):
        recorder.write(face_frame(i, i / FPS))
    recorder.stop()
    files = finished_segments(tiny_disk / CAMERA)
    assert len(files) == 1
    assert len(list(read_frames(files[0]))) == 3


def _chained(cause: OSError) -> MediaError:
    """What H264Writer raises: MediaError with the OS error as its cause."""
    error = MediaError(f"encode failed: {cause}")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "state"),
    [
        pytest.param(OSError(errno.ENOSPC, "No space left on device"), "disk_full", id="ENOSPC"),
        pytest.param(
            _chained(OSError(errno.ENOSPC, "No space left on device")),
            "disk_full",
            id="ENOSPC-via-MediaError",
        ),
        pytest.param(OSError(errno.EDQUOT, "Disk quota exceeded"), "disk_full", id="EDQUOT"),
        pytest.param(_chained(OSError(errno.EIO, "I/O error")), "failed", id="EIO"),
    ],
)
def test_write_error_mid_segment(tmp_path: Path, monkeypatch, error, state) -> None:
    """ENOSPC at a chosen frame cannot be produced on demand: the muxer raises it after
    three real frames."""

    class FailingWriter(H264PacketMuxer):
        def write(self, packet: EncodedPacket) -> None:
            if self.packets_written == 3:
                raise error
            super().write(packet)

    recorder = make_recorder(tmp_path, segment_s=1.0)
    recorder.start()
    for i in range(10):  # the first segment (0.0-0.9 s) closes normally
        recorder.write(gray_frame(100, i))
    monkeypatch.setattr(segments, "H264PacketMuxer", FailingWriter)
    for i in range(10, 13):
        recorder.write(gray_frame(100, i))
    with pytest.raises(SinkError) as raised:
        recorder.write(gray_frame(100, 13))
    assert raised.value.__cause__ is error
    assert recorder.state == state
    assert CAMERA in recorder.last_error
    for i in range(14, 20):
        recorder.write(gray_frame(100, i))  # dropped without raising
    assert recorder.frames_dropped == 3 + 1 + 6
    recorder.stop()
    assert recorder.state == "stopped"
    files = finished_segments(tmp_path / CAMERA)
    assert len(files) == 1, "only the segment that closed before the error"
    assert len(list(read_frames(files[0]))) == 10
    assert not hidden_files(tmp_path)

    monkeypatch.setattr(segments, "H264PacketMuxer", H264PacketMuxer)
    recorder.start()  # the next start records again
    recorder.write(gray_frame(100, 30))
    recorder.stop()
    assert len(finished_segments(tmp_path / CAMERA)) == 2


def test_segment_that_fails_to_close_is_deleted_and_reported(tmp_path: Path, monkeypatch) -> None:
    """A file whose index cannot be written (disk full at close) must not keep a final name."""

    class UnfinishableWriter(H264PacketMuxer):
        def close(self) -> None:
            super().close()
            raise _chained(OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(segments, "H264PacketMuxer", UnfinishableWriter)
    recorder = make_recorder(tmp_path)
    recorder.start()
    for i in range(3):
        recorder.write(face_frame(i, i / FPS))
    with pytest.raises(SinkError, match="disk full"):
        recorder.stop()
    assert recorder.state == "stopped"
    assert recorder.segments_written == 0
    assert recorder.frames_dropped == 3
    assert not list(tmp_path.rglob("*.mp4"))
    recorder.stop()  # nothing left to close: no second error


def test_segment_larger_than_the_quota_stops_recording(tmp_path: Path) -> None:
    recorder = make_recorder(tmp_path, segment_s=3600.0, max_bytes=20_000)
    recorder.start()
    raised = []
    for index in range(200):
        try:
            recorder.write(noise_frame(index, 160, 120))
        except SinkError as error:
            raised.append(error)
    recorder.stop()
    assert len(raised) == 1
    assert "quota" in str(raised[0]) and "max_bytes" in str(raised[0])
    assert recorder.state == "stopped"
    assert recorder.frames_dropped == 200
    assert not list(tmp_path.rglob("*.mp4"))


def test_quota_unreachable_when_old_segments_cannot_be_deleted(tmp_path: Path, monkeypatch) -> None:
    """As root nothing refuses deletion, so the refusal is simulated."""
    camera_dir = tmp_path / CAMERA
    camera_dir.mkdir()
    stuck = camera_dir / "20200101-000000-1.mp4"
    stuck.write_bytes(b"\x00" * 50_000)
    real_unlink = os.unlink

    def refuse_segments(path, *args, **kwargs):
        if SEGMENT_NAME.match(Path(path).name):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refuse_segments)
    recorder = make_recorder(tmp_path, max_bytes=40_000)
    recorder.start()
    recorder.write(face_frame(0, 0.0))
    with pytest.raises(SinkError, match="quota unreachable"):
        recorder.write(face_frame(1, 5.0))  # closes the first segment
    assert recorder.state == "disk_full"
    recorder.write(face_frame(2, 5.1))
    assert recorder.frames_dropped == 2
    recorder.stop()
    assert stuck.exists()


# --- retention -----------------------------------------------------------------------------------

NOW = 1_700_000_000.0
DAY = 24 * 3600.0


def put(root: Path, name: str, size: int, age_s: float) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00" * size)
    os.utime(path, (NOW - age_s, NOW - age_s))
    return path


def test_retention_by_age_touches_only_finished_segments(tmp_path: Path) -> None:
    expired = put(tmp_path, "cam1/20231101-000000-1.mp4", 10, 40 * DAY)
    fresh = put(tmp_path, "cam1/20231114-000000-2.mp4", 10, 1 * DAY)
    others = [
        put(tmp_path, "cam1/.20231101-000000-3.part.mp4", 10, 40 * DAY),  # in progress
        put(tmp_path, "cam1/holiday.mp4", 10, 40 * DAY),  # not ours
        put(tmp_path, "snapshots/cam1/20231101-000000-000.jpg", 10, 40 * DAY),
        put(tmp_path, "cam1/20231101-000000-4.mp4.bak", 10, 40 * DAY),
    ]
    retention = Retention(tmp_path, max_age_s=30 * DAY, max_bytes=10**9)
    assert retention.enforce(now=NOW) == [expired]
    assert fresh.exists()
    assert all(p.exists() for p in others)
    assert retention.usage_bytes == 10
    assert retention.quota_met


def test_retention_by_bytes_removes_oldest_first(tmp_path: Path) -> None:
    # Written out of order; b and c share an mtime, so the name decides.
    d = put(tmp_path, "cam2/20231110-000000-4.mp4", 100, 1000)
    a = put(tmp_path, "cam1/20231110-000000-1.mp4", 100, 4000)
    c = put(tmp_path, "cam1/20231110-000000-3.mp4", 100, 3000)
    b = put(tmp_path, "cam1/20231110-000000-2.mp4", 100, 3000)
    e = put(tmp_path, "cam2/20231110-000000-5.mp4", 100, 500)
    retention = Retention(tmp_path, max_age_s=30 * DAY, max_bytes=300)
    assert retention.enforce(now=NOW) == [a, b]
    assert c.exists() and d.exists() and e.exists()
    assert retention.usage_bytes == 300
    retention.max_bytes = 150
    assert retention.enforce(now=NOW) == [c, d]
    assert retention.enforce(now=NOW) == []


def test_retention_on_a_missing_root_is_a_no_op(tmp_path: Path) -> None:
    retention = Retention(tmp_path / "not-yet", max_age_s=1.0, max_bytes=1)
    assert retention.enforce(now=NOW) == []
    assert retention.quota_met


@pytest.mark.parametrize(("max_age_s", "max_bytes"), [(0, 1), (1, 0), (-1, 1)])
def test_retention_refuses_meaningless_limits(tmp_path: Path, max_age_s, max_bytes) -> None:
    with pytest.raises(ValueError):
        Retention(tmp_path, max_age_s, max_bytes)


# --- snapshot ------------------------------------------------------------------------------------


def decode_jpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


def test_snapshot_returns_the_latest_frame_as_jpeg(tmp_path: Path) -> None:
    sink = SnapshotSink()
    sink.start()
    assert sink.jpeg() is None
    assert sink.save(tmp_path / "none.jpg") is None
    assert not (tmp_path / "none.jpg").exists()
    sink.write(gray_frame(40, 0, 80, 60))
    sink.write(gray_frame(200, 1, 80, 60))
    data = sink.jpeg(quality=90)
    assert data is not None
    image = decode_jpeg(data)
    assert image.shape == (60, 80, 3)
    assert abs(mean_level(image) - 200) < 3

    target = snapshot_path(tmp_path, CAMERA, when=NOW)
    assert target == tmp_path / "snapshots" / CAMERA / "20231114-221320-000.jpg"
    assert sink.save(target) == target
    assert abs(mean_level(decode_jpeg(target.read_bytes())) - 200) < 3
    assert not hidden_files(tmp_path)
    sink.stop()


# --- live preview --------------------------------------------------------------------------------


def test_mjpeg_chunk() -> None:
    chunk = mjpeg_chunk(b"\xff\xd8JPEG\xff\xd9", MJPEG_BOUNDARY)
    assert chunk == (
        b"--edgeblur-frame\r\nContent-Type: image/jpeg\r\nContent-Length: 8\r\n\r\n"
        b"\xff\xd8JPEG\xff\xd9\r\n"
    )
    with pytest.raises(ValueError):
        mjpeg_chunk(b"x", "bad\r\nInjected: header")


def wait_for_subscribers(sink: PreviewSink, count: int) -> None:
    for _ in range(int(HANG_GUARD_S / 0.01)):
        if sink.subscribers == count:
            return
        time.sleep(0.01)
    pytest.fail(f"expected {count} subscribers, have {sink.subscribers}")


def consume(sink: PreviewSink, into: queue.Queue, pause: threading.Event | None = None) -> None:
    """Decode each JPEG to its grey level; after the first, wait for `pause` if given.
    Puts None when iteration ends."""
    try:
        for count, jpeg in enumerate(sink.frames(timeout=HANG_GUARD_S)):
            into.put(round(mean_level(decode_jpeg(jpeg))))
            if pause is not None and count == 0:
                pause.wait(HANG_GUARD_S)
    finally:
        into.put(None)


def test_preview_fans_out_new_frames_and_a_slow_client_skips() -> None:
    ticks = itertools.count()
    sink = PreviewSink(max_fps=10, clock=lambda: float(next(ticks)))  # 1 s per frame: no limit
    sink.start()
    fast_got: queue.Queue = queue.Queue()
    slow_got: queue.Queue = queue.Queue()
    release_slow = threading.Event()
    threads = [
        threading.Thread(target=consume, args=(sink, fast_got), daemon=True),
        threading.Thread(target=consume, args=(sink, slow_got, release_slow), daemon=True),
    ]
    for thread in threads:
        thread.start()
    wait_for_subscribers(sink, 2)

    sink.write(gray_frame(0, 0))
    assert fast_got.get(timeout=HANG_GUARD_S) == 0
    assert slow_got.get(timeout=HANG_GUARD_S) == 0
    # The slow client now sits on its first frame. The writer must not wait for it, and
    # the fast client gets every new frame (lock-step: each one before the next is written).
    for k in range(1, 6):
        sink.write(gray_frame(40 * k, k))
        assert fast_got.get(timeout=HANG_GUARD_S) == 40 * k
    assert slow_got.empty()
    release_slow.set()
    assert slow_got.get(timeout=HANG_GUARD_S) == 200, "a slow client skips to the newest frame"
    assert sink.frames_encoded == 6  # once per frame, shared by both clients

    sink.stop()
    assert fast_got.get(timeout=HANG_GUARD_S) is None
    assert slow_got.get(timeout=HANG_GUARD_S) is None
    for thread in threads:
        thread.join(HANG_GUARD_S)
        assert not thread.is_alive()
    assert sink.subscribers == 0


def test_preview_encodes_only_for_subscribers_and_at_most_max_fps() -> None:
    now = [0.0]
    sink = PreviewSink(max_fps=2, clock=lambda: now[0])
    sink.start()
    sink.write(gray_frame(10, 0))
    assert sink.frames_encoded == 0, "nobody is watching"

    got: queue.Queue = queue.Queue()
    thread = threading.Thread(target=consume, args=(sink, got), daemon=True)
    thread.start()
    wait_for_subscribers(sink, 1)
    for i, t in enumerate([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 3.0, 3.25, 3.5]):
        now[0] = t
        sink.write(gray_frame(10, i))
    # at 0, 0.5, 1.0 (on schedule), 3.0 (after a pause: restart, no catch-up burst), 3.5
    assert sink.frames_encoded == 5
    sink.stop()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive()


def test_preview_iteration_ends_on_stop_and_on_timeout() -> None:
    sink = PreviewSink()
    sink.start()
    assert list(sink.frames(timeout=0.01)) == []  # no new frame in time: the client reconnects
    sink.stop()
    assert list(sink.frames(timeout=HANG_GUARD_S)) == []  # stopped: ends at once
    assert sink.subscribers == 0
