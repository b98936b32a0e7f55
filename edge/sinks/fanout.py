"""Encode once per camera, fan the packets out to every output (recorder, RTSP mount, pushes).

    recorder = SegmentRecorder(...)
    sink = EncodedOutputsSink("door", fps=15, outputs=[
        PacketOutput("recording", RecorderConsumer(recorder), depth=64),
        PacketOutput("rtsp", rtsp_server.mount("door")),
        PacketOutput("push-0", RtspPushConsumer(url)),
    ])
    sink.start(); sink.write(redacted_frame) ...; sink.stop()

Each output has its own bounded queue and thread: a stalled output (a full disk's slow
writes, a viewer who stopped reading, a push target that vanished) drops its own packets
(counted), never blocks the encoder or the other outputs. After a drop an output skips to the
next keyframe, since the packets between cannot be decoded without the one that was lost.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from edge.errors import MediaError, SinkError
from edge.media import EncodedPacket, H264Encoder
from edge.sinks.base import Sink
from edge.sinks.segments import SegmentRecorder
from edge.types import RedactedFrame

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0  # an output thread still busy after this is left behind (daemon)


class PacketConsumer(Protocol):
    """One output of the encoded stream. open(), consume() and close() are called from the
    output's own thread only; consume() may block (disk, network) without harming others.
    `packets_dropped`: packets it took but could not deliver (target down, full disk)."""

    @property
    def packets_dropped(self) -> int: ...

    def open(self) -> None: ...

    def consume(self, packet: EncodedPacket) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class OutputStats:
    """Counters of one output, for /metrics. Packets are frames (one packet per frame)."""

    name: str
    packets_sent: int  # handed to the consumer
    packets_dropped: int  # queue full (then until a keyframe) or undeliverable by the consumer
    errors: int  # consume() raised
    queued: int


class PacketOutput:
    """A bounded queue and a thread in front of one PacketConsumer.

    offer() never blocks: with the queue full the packet is dropped and so is every packet
    after it until a keyframe fits. Counters may be read from any thread.
    """

    def __init__(self, name: str, consumer: PacketConsumer, depth: int = 32) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.name = name
        self.consumer = consumer
        self.depth = depth
        self.packets_sent = 0
        self.packets_dropped = 0
        self.errors = 0
        self._queue: deque[EncodedPacket] = deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._resync = True  # until a keyframe: a consumer must start at one
        self._thread: threading.Thread | None = None

    def start(self, thread_name: str) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    def offer(self, packet: EncodedPacket) -> bool:
        """Queue the packet for the consumer; False when it was dropped. Never blocks."""
        with self._ready:
            if self._resync and not packet.keyframe:
                self.packets_dropped += 1
                return False
            if len(self._queue) >= self.depth or self._stopping:
                self.packets_dropped += 1
                self._resync = True
                return False
            self._resync = False
            self._queue.append(packet)
            self._ready.notify()
            return True

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Let the consumer finish what is queued, then close it (on its thread)."""
        thread, self._thread = self._thread, None
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.error("output %s did not stop within %.0f s; left behind", self.name, timeout_s)
        with self._ready:
            self._resync = True

    def stats(self) -> OutputStats:
        with self._ready:
            queued = len(self._queue)
        dropped = self.packets_dropped + self.consumer.packets_dropped
        return OutputStats(self.name, self.packets_sent, dropped, self.errors, queued)

    def _run(self) -> None:
        try:
            self.consumer.open()
        except Exception:  # reported; the consumer retries on its packets
            self.errors += 1
            log.exception("output %s failed to open", self.name)
        try:
            while True:
                with self._ready:
                    while not self._queue and not self._stopping:
                        self._ready.wait()
                    if not self._queue:
                        return
                    packet = self._queue.popleft()
                try:
                    self.consumer.consume(packet)
                    self.packets_sent += 1
                except Exception as error:  # one output's fault stays its own
                    self.errors += 1
                    log.error("output %s: %s", self.name, error)
        finally:
            try:
                self.consumer.close()
            except Exception:  # reported, and the other outputs go on
                self.errors += 1
                log.exception("output %s failed to close", self.name)


class RecorderConsumer:
    """The segment recorder as an output of the shared encoder. Its own state
    ("recording", "disk_full", ...) and counters stay on the recorder; a SinkError (raised
    once per error episode) is logged by PacketOutput and counted in its errors."""

    def __init__(self, recorder: SegmentRecorder) -> None:
        self.recorder = recorder

    @property
    def packets_dropped(self) -> int:
        return self.recorder.frames_dropped

    def open(self) -> None:
        self.recorder.start()

    def consume(self, packet: EncodedPacket) -> None:
        self.recorder.write_packet(packet)

    def close(self) -> None:
        self.recorder.stop()


class EncodedOutputsSink(Sink):
    """Encodes a camera's RedactedFrames to H.264 once and offers every packet to each output.

    Threads: write() from the one thread the engine gives this sink (it encodes there, a few
    ms a frame at 720p); each output runs on its own thread; start()/stop() from the engine's
    control thread. An encoder error raises SinkError from write(); the next frame starts a
    fresh encoder (a keyframe).
    """

    def __init__(
        self,
        camera_id: str,
        fps: float,
        outputs: Sequence[PacketOutput],
        keyframe_interval_s: float = 1.0,
    ) -> None:
        self.camera_id = camera_id
        self.fps = fps
        self.keyframe_interval_s = keyframe_interval_s
        self.outputs = list(outputs)
        self.frames_encoded = 0
        self._encoder: H264Encoder | None = None
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        self._encoder = H264Encoder(self.fps, self.keyframe_interval_s)
        for output in self.outputs:
            output.start(f"{self.camera_id}-{output.name}")
        self._started = True

    def _write(self, frame: RedactedFrame) -> None:
        if not self._started or self._encoder is None:
            raise SinkError(f"camera {self.camera_id}: encoded outputs not started")
        try:
            packets = self._encoder.encode(frame)
        except MediaError as error:
            self._encoder = H264Encoder(self.fps, self.keyframe_interval_s)
            raise SinkError(f"camera {self.camera_id}: {error}") from error
        self.frames_encoded += 1
        self._offer(packets)

    def stop(self) -> None:
        """Flush the encoder to the outputs, then stop each (it finishes its queue). Idempotent."""
        if not self._started:
            return
        self._started = False
        encoder, self._encoder = self._encoder, None
        try:
            if encoder is not None:
                self._offer(encoder.flush())
        except MediaError as error:
            log.error("camera %s: %s", self.camera_id, error)
        finally:
            for output in self.outputs:
                output.stop()

    def stats(self) -> list[OutputStats]:
        return [output.stats() for output in self.outputs]

    def _offer(self, packets: list[EncodedPacket]) -> None:
        for packet in packets:
            for output in self.outputs:
                output.offer(packet)
