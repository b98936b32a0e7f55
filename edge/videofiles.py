"""Video files for `edgeblur video`: decode, then the camera service's engine (edge.engine:
detect on every frame or every k-th, see VideoConfig; mask every frame with the look-ahead's
boxes), encode H.264.

Frame count and timestamps are kept; width and height are kept when even and otherwise rounded
down by one pixel (yuv420p H.264 needs even sizes, see H264Writer). The output appears only
when complete: a failed or interrupted run leaves neither the output nor a temporary file.
"""

from __future__ import annotations

import heapq
import io
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import av
import numpy as np
from av.container import InputContainer
from av.packet import Packet
from av.stream import Stream
from tqdm import tqdm

from edge.detectors.base import Detector
from edge.detectors.shared import DetectionResult, DetectionSeat, SharedDetector
from edge.engine import FrameEngine, FrameProcessor, Output, Released, StreamSettings, second_look
from edge.errors import MediaError
from edge.media import H264Writer, atomic_output, probe, read_frames
from edge.redact import Redactor
from edge.sinks.base import Sink
from edge.tracking.settings import TrackingConfig
from edge.types import Detections, Frame, RedactedFrame

log = logging.getLogger(__name__)

QUEUE_FRAMES = 2  # redacted frames waiting for the encoder (each W x H x 3 bytes)


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
    """Write a redacted H.264 MP4 of `source` to `target`, through the same engine as the
    camera service (edge.engine), with a file's policy: every frame kept (the reader waits for
    the engine), detection on every `tracking.detect_every`-th frame and the last, no latency
    budget.

    `tracking` (default: detect on every frame, no look-ahead) sets how often the detector
    runs and the look-ahead; `edgeblur video` passes VideoConfig.tracking(). The redactor's
    second look after masking, when its config has one, runs on the frames the detector runs
    on; `edgeblur video` turns it off unless asked (VideoConfig.second_look says why).

    Decoding (this thread), the engine and encoding run on their own threads, joined by
    small bounded queues (FFmpeg's decoder, the detector and x264 release the GIL).

    Fail closed: a frame whose detection raised (first or second look), and every frame next
    to it with no trusted detection on that side, is written fully masked (mask_all) and
    counted in `fully_masked`. Raises MediaError naming the file when the input cannot be
    decoded, is shorter than its container declares (truncated), or the output cannot be
    written; in every such case no output file is left.
    """
    source, target = Path(source), Path(target)
    started = time.monotonic()
    tracking = tracking or TrackingConfig(detect_every=1)
    # A file has no newest frame to search: 0 (the cameras' schedule) means every frame here.
    every = tracking.detect_every or 1
    info = probe(source)
    if keep_audio and info.has_audio:
        _check_audio_fits_mp4(source)
    elif keep_audio:
        log.warning("%s has no audio stream; writing video only", source)
    with_audio = keep_audio and info.has_audio
    settings = StreamSettings(
        detect_every=every,
        budget_s=None,
        live=False,
        second_look=redactor.config.second_look_threshold is not None,
        fail_policy="mask",
    )
    with atomic_output(target) as tmp, ExitStack() as stack:
        # With audio, the video is encoded to a scratch file first, then both are muxed.
        video_path = stack.enter_context(_scratch_beside(target)) if with_audio else tmp
        frames = stack.enter_context(closing(read_frames(source)))
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
        report = _Report(source, bar)
        shared = SharedDetector(lambda _settings, _store: _Borrowed(detector), None)
        stack.callback(shared.close)
        output = Output("video", _WriterSink(writer), depth=QUEUE_FRAMES)

        def processor(
            request: Callable[[Frame, float], None], seat: DetectionSeat | None
        ) -> FrameProcessor:
            look_again = second_look(redactor, seat) if settings.second_look and seat else None
            return FrameProcessor(settings, tracking, redactor, request, look_again)

        engine = FrameEngine(
            str(source),
            processor,
            lambda on_result: shared.seat(str(source), _VideoDetector(detector), on_result),
            [output],
            report,
            capacity=tracking.lookahead_frames + 2 * every + QUEUE_FRAMES,
        )
        engine.start()
        try:
            for frame in chain([first], frames):
                if output.error is not None or not engine.offer(frame):
                    break
        except BaseException:  # interrupted or unreadable: no output, stop at once
            engine.stop()
            engine.join()
            raise
        engine.end()
        engine.join()
        if engine.error is not None:
            raise engine.error
        if output.error is not None:
            raise output.error
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
        faces=report.faces,
        fully_masked=report.fully_masked,
        seconds=time.monotonic() - started,
        width=writer.width,
        height=writer.height,
    )


class _VideoDetector:
    """The detector settings of a file's stream: one detector, whatever its config."""

    def __init__(self, detector: Detector) -> None:
        self.type = getattr(detector, "name", type(detector).__name__)
        self._key = f"video:{id(detector)}"

    def model_dump_json(self) -> str:
        return self._key


class _Borrowed(Detector):
    """The caller's detector, lent to the shared detector: closing it is the caller's job."""

    def __init__(self, detector: Detector) -> None:
        self.name = getattr(detector, "name", "borrowed")
        self._detector = detector

    def detect(self, image: np.ndarray) -> Detections:
        return self._detector.detect(image)


class _WriterSink(Sink):
    """The output file as an engine output."""

    def __init__(self, writer: H264Writer) -> None:
        self._writer = writer

    def _write(self, frame: RedactedFrame) -> None:
        self._writer.write(frame)


class _Report:
    """Counts what the engine releases and moves the progress bar (EngineEvents)."""

    def __init__(self, source: Path, bar: tqdm) -> None:
        self._source = source
        self._bar = bar
        self._failure = ""  # the last detection error, for the log
        self.faces = 0
        self.fully_masked = 0

    def detection(self, result: DetectionResult) -> None:
        if result.failure:
            self._failure = result.error

    def released(self, item: Released) -> None:
        self._bar.update()
        if item.redacted is not None and not item.reason:
            self.faces += item.redacted.record.regions
            return
        self.fully_masked += 1
        # Once, not per frame: a broken detector would otherwise flood the log.
        report = log.warning if self.fully_masked == 1 else log.debug
        report(
            "%s frame %d: %s (%s); frame fully masked (failed frames are counted)",
            self._source,
            item.index,
            item.reason,
            self._failure,
        )

    def output_failed(self, name: str, error: Exception) -> None:
        pass  # raised by redact_video from the output


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
