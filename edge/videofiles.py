"""Video files for `edgeblur video`: decode, detect (on every frame or every k-th, see
VideoConfig), mask every frame with the look-ahead's boxes, encode H.264.

Frame count and timestamps are kept; width and height are kept when even and otherwise rounded
down by one pixel (yuv420p H.264 needs even sizes, see H264Writer). The output appears only
when complete: a failed or interrupted run leaves neither the output nor a temporary file.
"""

from __future__ import annotations

import heapq
import io
import logging
import os
import queue
import tempfile
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TypeVar

import av
from av.container import InputContainer
from av.packet import Packet
from av.stream import Stream
from tqdm import tqdm

from edge.config import TrackingConfig
from edge.detectors.base import Detector
from edge.errors import MediaError
from edge.media import H264Writer, atomic_output, probe, read_frames
from edge.redact import Redactor
from edge.tracking import TemporalMasker
from edge.types import Detections, Frame, RedactedFrame

log = logging.getLogger(__name__)
T = TypeVar("T")

QUEUE_FRAMES = 2  # decoded / redacted frames waiting between threads (each W x H x 3 bytes)
_POLL_S = 0.1  # how often a blocked thread checks whether the other side stopped


@dataclass(frozen=True)
class VideoSummary:
    frames: int  # frames written (always every decoded frame)
    faces: int  # face boxes masked, summed over frames
    fully_masked: int  # frames masked entirely because detection failed on them
    seconds: float  # wall time of the whole run
    width: int
    height: int


def redact_video(
    source: Path,
    target: Path,
    detector: Detector,
    redactor: Redactor,
    *,
    tracking: TrackingConfig | None = None,
    keep_audio: bool = False,
    progress: bool = True,
) -> VideoSummary:
    """Write a redacted H.264 MP4 of `source` to `target`.

    `tracking` (default: detect on every frame, no look-ahead) sets how often the detector
    runs and how many frames the TemporalMasker holds back; `edgeblur video` passes
    VideoConfig.tracking(). The last frame is always detected, so every frame has a detection
    on both sides of it. The redactor's second look after masking (edge.redact.second_look),
    when its config has one, runs on the frames the detector runs on; `edgeblur video` turns
    it off unless asked (VideoConfig.second_look says why).

    Decoding, detection + redaction and encoding run on three threads joined by small
    bounded queues (OpenCV DNN, FFmpeg's decoder and x264 release the GIL); this thread owns
    the detector, the masker and the redactor.

    Fail closed: a frame on which the detector raises (first or second look) is written fully
    masked (mask_all) and counted in `fully_masked`, and so is every skipped frame next to a
    failed first look (it has no trusted detection on that side). Raises MediaError naming
    the file when the input cannot be decoded, is shorter than its container declares
    (truncated), or the output cannot be written; in every such case no output file is left.
    """
    source, target = Path(source), Path(target)
    started = time.monotonic()
    info = probe(source)
    if keep_audio and info.has_audio:
        _check_audio_fits_mp4(source)
    elif keep_audio:
        log.warning("%s has no audio stream; writing video only", source)
    with_audio = keep_audio and info.has_audio
    masker = _FailClosedMasker(detector, redactor, tracking or TrackingConfig(), source)
    with atomic_output(target) as tmp, ExitStack() as stack:
        # With audio, the video is encoded to a scratch file first, then both are muxed.
        video_path = stack.enter_context(_scratch_beside(target)) if with_audio else tmp
        frames = stack.enter_context(_prefetched(read_frames(source), QUEUE_FRAMES))
        first = next(frames, None)
        if first is None:
            raise MediaError(f"{source}: no video frames could be decoded (no output written)")
        # Sized from a decoded frame, not the container: read_frames turns rotated video upright.
        writer = stack.enter_context(
            H264Writer(video_path, first.width, first.height, info.fps)
        )
        bar = stack.enter_context(
            tqdm(total=info.frames or None, unit="frame", disable=not progress)
        )
        with _BackgroundWriter(writer, QUEUE_FRAMES) as encoder:
            frame = first
            for following in chain(frames, [None]):
                for redacted in masker.push(frame, last=following is None):
                    encoder.write(redacted)
                    bar.update()
                if following is None:
                    break
                frame = following
        if info.frames and writer.frames_written < info.frames:
            raise MediaError(
                f"{source}: decoded only {writer.frames_written} of the {info.frames} frames "
                "the file declares; it is truncated or corrupt (no output written)"
            )
        writer.close()
        if with_audio:
            _mux_with_audio(video_path, source, tmp, first.timestamp)
    return VideoSummary(
        frames=writer.frames_written,
        faces=masker.faces,
        fully_masked=masker.fully_masked,
        seconds=time.monotonic() - started,
        width=writer.width,
        height=writer.height,
    )


@dataclass
class _Held:
    """A frame inside the look-ahead window and why it must be fully masked, if it must."""

    frame: Frame
    fail: str = ""
    detected: bool = False  # the detector ran on this frame


class _FailClosedMasker:
    """Detection on every `detect_every`-th frame (and the last), TemporalMasker look-ahead,
    then redaction, or mask_all for frames without a trusted detection on both sides.

    Owned by the processing thread of redact_video."""

    def __init__(
        self, detector: Detector, redactor: Redactor, tracking: TrackingConfig, source: Path
    ) -> None:
        self._detector = detector
        self._redactor = redactor
        self._every = tracking.detect_every
        self._masker = TemporalMasker(tracking)
        self._source = source
        self._held: deque[_Held] = deque()  # in push order, as the masker releases them
        self._skipped: list[_Held] = []  # skipped since the last detector run
        self._last_fail = ""  # why the last detector run failed ("" = it did not)
        self._pushed = 0
        self.faces = 0
        self.fully_masked = 0

    def push(self, frame: Frame, *, last: bool) -> list[RedactedFrame]:
        """Add the next frame; return the frames now ready to encode, in order (all of them
        when `last`)."""
        held = _Held(frame)
        self._held.append(held)
        detections: Detections | None = None
        if self._pushed % self._every == 0 or last:
            held.detected = True
            try:
                detections = self._detector.detect(frame.image)
                self._last_fail = ""
            except Exception as error:  # fail closed on anything: never output a frame raw
                detections = Detections.empty()
                self._last_fail = held.fail = f"detection failed: {error}"
                for skipped in self._skipped:
                    skipped.fail = skipped.fail or held.fail
            self._skipped.clear()
        elif self._last_fail:
            held.fail = self._last_fail
        else:
            self._skipped.append(held)
        self._pushed += 1
        ready = self._masker.push(frame, detections)
        if last:
            ready += self._masker.flush()
        return [self._redact(*item) for item in ready]

    def _redact(self, frame: Frame, boxes: Detections) -> RedactedFrame:
        held = self._held.popleft()
        if held.frame is not frame:  # a bug in the bookkeeping: trust nothing
            raise RuntimeError(f"look-ahead released frame {frame.index} out of order")
        if not held.fail:
            # The second look runs on the frames the detector ran on: on every frame it
            # would cost as much as detecting every frame, which detect_every avoids.
            look_again = self._detector if held.detected else None
            try:
                redacted = self._redactor.redact(frame, boxes, look_again=look_again)
            except Exception as error:  # the second look's detection failed: fail closed
                held.fail = f"detection failed: {error}"
            else:
                self.faces += redacted.record.regions
                return redacted
        self.fully_masked += 1
        # Once, not per frame: a broken detector would otherwise flood the log.
        report = log.warning if self.fully_masked == 1 else log.debug
        report(
            "%s frame %d: %s; frame fully masked (failed frames are counted)",
            self._source,
            frame.index,
            held.fail,
        )
        return self._redactor.mask_all(frame, held.fail)


_DONE = object()  # end of a queue's items


@contextmanager
def _prefetched(items: Generator[T, None, None], depth: int) -> Iterator[Iterator[T]]:
    """`items`, produced on a thread of its own at most `depth` ahead of the consumer.

    An exception raised by `items` is raised in the consumer where the item would have been.
    Leaving the block stops the producer and closes `items` (on the producer's thread)."""
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            with closing(items):
                for item in items:
                    if not offer(item):
                        return
        except BaseException as error:  # handed to the consumer, which raises it
            offer(_Raised(error))
            return
        offer(_DONE)

    def consume() -> Iterator[T]:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item  # type: ignore[misc]

    thread = threading.Thread(target=produce, name="decode", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True)
class _Raised:
    error: BaseException


class _BackgroundWriter:
    """Feeds an H264Writer from a thread of its own through a queue of at most `depth` frames.

    `write` raises the writer's error (if it failed) instead of queueing more; leaving the
    block without an exception waits until every queued frame is written, and raises the
    writer's error if there was one. The writer is not closed here."""

    def __init__(self, writer: H264Writer, depth: int) -> None:
        self._writer = writer
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="encode", daemon=True)

    def __enter__(self) -> _BackgroundWriter:
        self._thread.start()
        return self

    def write(self, frame: RedactedFrame) -> None:
        while True:
            self._raise_error()
            try:
                self._queue.put(frame, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(_DONE, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        self._thread.join()
        if kind is None:
            self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while (frame := self._queue.get()) is not _DONE:
                self._writer.write(frame)  # type: ignore[arg-type]
        except BaseException as error:  # raised on the processing thread
            self._error = error
            while self._queue.get() is not _DONE:  # unblock the producer until it stops
                pass


@contextmanager
def _scratch_beside(target: Path) -> Iterator[Path]:
    """A temporary file in the output's directory (not /tmp, which may be a small RAM disk)."""
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".video.mp4", dir=target.parent)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _check_audio_fits_mp4(source: Path) -> None:
    """Fail before the long video pass if the audio codec cannot be copied into MP4."""
    try:
        with av.open(str(source)) as container:
            audio = container.streams.audio[0]
            with av.open(io.BytesIO(), mode="w", format="mp4") as trial:
                trial.add_stream_from_template(audio)
                trial.start_encoding()
    except av.FFmpegError as error:
        raise MediaError(
            f"{source}: its audio cannot be copied into MP4 ({error}); "
            "run without --keep-audio or convert the audio first"
        ) from None


def _mux_with_audio(video: Path, source: Path, target: Path, video_start: float) -> None:
    """Copy the encoded video and the source's first audio stream, packet for packet, into
    `target`, interleaved by time. Audio is shifted by the same `video_start` (seconds) that
    H264Writer took off the video, so the two stay in sync."""
    try:
        with (
            av.open(str(video)) as video_in,
            av.open(str(source)) as audio_in,
            av.open(str(target), mode="w", format="mp4") as output,
        ):
            video_stream = video_in.streams.video[0]
            audio_stream = audio_in.streams.audio[0]
            video_out = output.add_stream_from_template(video_stream)
            audio_out = output.add_stream_from_template(audio_stream)
            merged = heapq.merge(
                _timed_packets(video_in, video_stream, video_out, 0.0),
                _timed_packets(audio_in, audio_stream, audio_out, video_start),
                key=lambda item: item[0],
            )
            for _, packet in merged:
                output.mux(packet)
    except av.FFmpegError as error:
        raise MediaError(f"{source}: cannot copy its audio into the output: {error}") from None


def _timed_packets(
    container: InputContainer, stream: Stream, out_stream: Stream, shift_s: float
) -> Iterator[tuple[float, Packet]]:
    """Packets of `stream` moved `shift_s` seconds earlier and addressed to `out_stream`, each
    with its decode time in seconds for interleaving."""
    for packet in container.demux(stream):
        if packet.dts is None or packet.time_base is None:  # the end-of-stream marker
            continue
        offset = round(shift_s / packet.time_base)
        packet.dts -= offset
        if packet.pts is not None:
            packet.pts -= offset
        seconds = float(packet.dts * packet.time_base)
        packet.stream = out_stream
        yield seconds, packet
