"""Encode once, fan out: the live H.264 encoder, and outputs that drop their own packets only.

Real libx264 through PyAV; the only fake is a consumer that blocks (a stalled output), since a
stall at a chosen packet cannot be produced on demand.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from edge.media import EncodedPacket, H264Encoder, read_frames
from edge.redact import Redactor
from edge.sinks.fanout import EncodedOutputsSink, PacketOutput, RecorderConsumer
from edge.sinks.retention import Retention
from edge.sinks.segments import SegmentRecorder
from edge.types import Detections, Frame, RedactedFrame
from tests.rtsp import counter_frame, read_counter
from tests.waiting import wait_until

FPS = 10.0
HANG_GUARD_S = 30.0
_redactor = Redactor()


def frame(index: int, timestamp: float | None = None, size: tuple[int, int] = (320, 240)):
    image = counter_frame(index, *size)
    when = index / FPS if timestamp is None else timestamp
    return _redactor.redact(Frame(image, index, when), Detections.empty())


def nal_types(packet: EncodedPacket) -> list[int]:
    """NAL unit types in an Annex B access unit (7 SPS, 8 PPS, 5 IDR slice, 1 other slice)."""
    parts = packet.data.split(b"\x00\x00\x01")[1:]
    return [part[0] & 0x1F for part in parts if part]


def encode_all(encoder: H264Encoder, frames: list[RedactedFrame]) -> list[EncodedPacket]:
    packets = [packet for f in frames for packet in encoder.encode(f)]
    return packets + encoder.flush()


def test_keyframes_by_capture_time_each_with_its_parameter_sets() -> None:
    packets = encode_all(H264Encoder(FPS, keyframe_interval_s=1.0), [frame(i) for i in range(35)])
    assert [p.index for p in packets] == list(range(35)), "one packet per frame, in order"
    keyframes = [p.index for p in packets if p.keyframe]
    assert keyframes == [0, 10, 20, 30]
    for packet in packets:
        types = nal_types(packet)
        if packet.keyframe:
            assert {7, 8, 5} <= set(types), "an IDR with its SPS and PPS: a viewer can join here"
        else:
            assert 5 not in types and 7 not in types
    assert all(b.pts > a.pts for a, b in zip(packets, packets[1:], strict=False))


@pytest.mark.parametrize(
    ("timestamps", "keyframe_at"),
    [
        pytest.param([5.0, 5.1, 5.2, 0.0, 0.1], {0, 3}, id="source-restarted"),
        pytest.param([0.0, 0.1, 0.2, 60.0, 60.1], {0, 3}, id="long-gap"),
        pytest.param([0.0, 0.1, 0.1, 0.1, 0.2], {0}, id="equal-timestamps"),
    ],
)
def test_timeline_never_rewinds_or_stalls(timestamps: list[float], keyframe_at: set[int]) -> None:
    packets = encode_all(H264Encoder(FPS), [frame(i, t) for i, t in enumerate(timestamps)])
    assert {p.index for p in packets if p.keyframe} == keyframe_at
    steps = [b.pts - a.pts for a, b in zip(packets, packets[1:], strict=False)]
    assert all(0 < step <= 90000 for step in steps), steps


def test_a_new_frame_size_starts_a_new_encoder_at_a_keyframe() -> None:
    frames = [frame(0), frame(1), frame(2, size=(160, 120)), frame(3, size=(160, 120))]
    packets = encode_all(H264Encoder(FPS), frames)
    assert [(p.keyframe, p.width, p.generation) for p in packets] == [
        (True, 320, 1),
        (False, 320, 1),
        (True, 160, 2),
        (False, 160, 2),
    ]


def test_the_encoder_refuses_a_raw_frame() -> None:
    with pytest.raises(TypeError, match="RedactedFrame"):
        H264Encoder(FPS).encode(Frame(np.zeros((48, 64, 3), np.uint8), 0, 0.0))  # type: ignore[arg-type]


class BlockingConsumer:
    """An output that stops taking packets until released: a stalled viewer or target."""

    def __init__(self) -> None:
        self.packets_dropped = 0
        self.got: list[EncodedPacket] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def open(self) -> None: ...

    def consume(self, packet: EncodedPacket) -> None:
        self.entered.set()
        self.release.wait(HANG_GUARD_S)
        self.got.append(packet)

    def close(self) -> None: ...


def test_a_stalled_output_drops_its_own_packets_and_resumes_at_a_keyframe(tmp_path: Path) -> None:
    recorder = SegmentRecorder(tmp_path, "cam", 60.0, FPS, Retention(tmp_path, 3600.0, 10**9))
    recording = PacketOutput("recording", RecorderConsumer(recorder), depth=1000)
    stalled_consumer = BlockingConsumer()
    stalled = PacketOutput("stalled", stalled_consumer, depth=4)
    sink = EncodedOutputsSink("cam", FPS, [recording, stalled], keyframe_interval_s=1.0)
    sink.start()
    index = 0
    while not stalled_consumer.entered.is_set():  # until it holds its first packet
        sink.write(frame(index))
        index += 1
        assert index < 20, "the stalled output never got a packet"
        stalled_consumer.entered.wait(0.05)
    for i in range(index, 25):  # it holds 1 and queues 4; the rest are dropped
        sink.write(frame(i))
    stalled_consumer.release.set()
    wait_until(lambda: stalled.stats().queued == 0, HANG_GUARD_S, "the queue drained")
    for i in range(25, 40):
        sink.write(frame(i))
        # A consumer that keeps up: each packet leaves the queue before the next comes, so
        # only the encoder's last frames, flushed together at stop, arrive at once (fewer than
        # the queue holds). Without this wait the test raced the consumer's thread (1 run in 6
        # dropped frames 36-39 at the flush).
        wait_until(lambda: stalled.stats().queued == 0, HANG_GUARD_S, "the queue drained")
    sink.stop()

    files = sorted((tmp_path / "cam").glob("*.mp4"))
    assert len(files) == 1
    assert [read_counter(f.image) for f in read_frames(files[0])] == list(range(40))
    assert recording.stats().packets_dropped == 0

    got = [p.index for p in stalled_consumer.got]
    assert got[:5] == [0, 1, 2, 3, 4]
    # After the drop it starts again at a keyframe (frame 30, 3 s in): never mid-GOP.
    assert got[5:] == list(range(30, 40))
    assert stalled.stats().packets_dropped == 40 - len(got)


def test_outputs_only_start_at_a_keyframe_and_a_failing_output_is_counted(tmp_path) -> None:
    class Failing(BlockingConsumer):
        def consume(self, packet: EncodedPacket) -> None:
            raise OSError("target gone")

    failing = PacketOutput("failing", Failing())
    sink = EncodedOutputsSink("cam", FPS, [failing])
    sink.start()
    for i in range(5):
        sink.write(frame(i))
    sink.stop()
    assert failing.stats().errors == 5
    with pytest.raises(TypeError, match="RedactedFrame"):
        sink.write(Frame(np.zeros((48, 64, 3), np.uint8), 0, 0.0))  # type: ignore[arg-type]
