"""Video files for `edgeblur video`: decode, detect, redact every frame, encode H.264.

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
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import av
from av.container import InputContainer
from av.packet import Packet
from av.stream import Stream
from tqdm import tqdm

from edge.detectors.base import Detector
from edge.errors import MediaError
from edge.media import H264Writer, atomic_output, probe, read_frames
from edge.redact import Redactor
from edge.types import Frame, RedactedFrame

log = logging.getLogger(__name__)


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
    keep_audio: bool = False,
    progress: bool = True,
) -> VideoSummary:
    """Write a redacted H.264 MP4 of `source` to `target`.

    Fail closed: a frame on which the detector raises is written fully masked (mask_all) and
    counted in `fully_masked`. Raises MediaError naming the file when the input cannot be
    decoded, is shorter than its container declares (truncated), or the output cannot be
    written; in every such case no output file is left.
    """
    source, target = Path(source), Path(target)
    started = time.monotonic()
    info = probe(source)
    if keep_audio and info.has_audio:
        _check_audio_fits_mp4(source)
    elif keep_audio:
        log.warning("%s has no audio stream; writing video only", source)
    with_audio = keep_audio and info.has_audio
    faces = fully_masked = 0
    with atomic_output(target) as tmp, ExitStack() as stack:
        # With audio, the video is encoded to a scratch file first, then both are muxed.
        video_path = stack.enter_context(_scratch_beside(target)) if with_audio else tmp
        frames = stack.enter_context(closing(read_frames(source)))
        first = next(frames, None)
        if first is None:
            raise MediaError(f"{source}: no video frames could be decoded (no output written)")
        # Sized from a decoded frame, not the container: read_frames turns rotated video upright.
        with (
            H264Writer(video_path, first.width, first.height, info.fps) as writer,
            tqdm(total=info.frames or None, unit="frame", disable=not progress) as bar,
        ):
            for frame in chain([first], frames):
                redacted = _redact_or_mask(frame, detector, redactor)
                faces += redacted.record.regions
                if redacted.record.fully_masked:
                    fully_masked += 1
                    # Once, not per frame: a broken detector would otherwise flood the log.
                    report = log.warning if fully_masked == 1 else log.debug
                    report(
                        "%s frame %d: %s; frame fully masked (failed frames are counted)",
                        source,
                        frame.index,
                        redacted.record.reason,
                    )
                writer.write(redacted)
                bar.update()
        if info.frames and writer.frames_written < info.frames:
            raise MediaError(
                f"{source}: decoded only {writer.frames_written} of the {info.frames} frames "
                "the file declares; it is truncated or corrupt (no output written)"
            )
        if with_audio:
            _mux_with_audio(video_path, source, tmp, first.timestamp)
    return VideoSummary(
        frames=writer.frames_written,
        faces=faces,
        fully_masked=fully_masked,
        seconds=time.monotonic() - started,
        width=writer.width,
        height=writer.height,
    )


def _redact_or_mask(frame: Frame, detector: Detector, redactor: Redactor) -> RedactedFrame:
    try:
        boxes = detector.detect(frame.image)
    except Exception as error:  # fail closed on anything: an unchecked frame is never output raw
        return redactor.mask_all(frame, f"detection failed: {error}")
    return redactor.redact(frame, boxes)


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
