"""Redacted H.264 MP4 segments on disk, one file per `segment_s` seconds of frames.

The recorder muxes packets encoded once per camera (edge.media.H264Encoder), so the same
encode feeds the recording and the live streams; written as a Sink it encodes for itself.

Layout: `<directory>/<camera_id>/<YYYYmmdd-HHMMSS>-<seq>.mp4`, the time being the UTC wall
clock when the segment's first frame arrived. A segment is written under a hidden temporary
name (`.<YYYYmmdd-HHMMSS>-<seq>.part.mp4`) and renamed to its final name only once it has been
flushed and closed, so a file with a final name is always a complete, playable recording.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from edge.errors import MediaError, SinkError
from edge.media import EncodedPacket, H264Encoder, H264PacketMuxer
from edge.sinks.base import Sink
from edge.sinks.retention import Retention
from edge.types import RedactedFrame

log = logging.getLogger(__name__)

_CAMERA_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # as CameraConfig.id: safe as a folder name
_TEMP_NAME = re.compile(r"^\.\d{8}-\d{6}-\d+\.part\.mp4$")
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


@dataclass
class _OpenSegment:
    writer: H264PacketMuxer
    temp: Path
    stamp: str  # YYYYmmdd-HHMMSS, UTC, when the first frame arrived
    seq: int
    generation: int  # the encoder that made its packets (a new one per frame size)
    first_timestamp: float  # frame timestamps, seconds
    last_timestamp: float
    frames: int = 0


class SegmentRecorder(Sink):
    """Records encoded frames into MP4 segments of `segment_s` seconds (by frame timestamps).

    Two ways in: `write_packet()` with the packets of the camera's one encoder (encode once,
    fan out), or `write()` with RedactedFrames, which the recorder then encodes itself.

    A segment starts at a keyframe: the first one once `segment_s` has elapsed since the
    segment's first frame, or when the frame size changes, or when timestamps jump backwards
    (a source restarted); the encoder forces a keyframe for the last two. Packets before the
    first keyframe of a segment cannot be decoded alone and are dropped (counted).
    After each segment is finished, `retention.enforce()` runs.

    A full disk (ENOSPC/EDQUOT) or a storage quota that cannot be met puts the recorder in
    state "disk_full"; any other write error in state "failed". Either way the partial file
    is deleted, SinkError is raised once, and later frames are dropped (counted in
    `frames_dropped`) without raising until `resume()` or the next `start()`: the camera keeps
    running, only recording stops.

    Threads: write() or write_packet() is called from one thread (the camera's output thread,
    or the recorder's packet thread); start(), stop() and resume() may come from another
    thread (a lock serialises them). The counters and `state` may be
    read from any thread.
    """

    def __init__(
        self, directory: Path, camera_id: str, segment_s: float, fps: float, retention: Retention
    ) -> None:
        if not _CAMERA_ID.match(camera_id):
            raise ValueError(f"camera_id must match {_CAMERA_ID.pattern}, got {camera_id!r}")
        if segment_s <= 0 or fps <= 0:
            raise ValueError(f"segment_s and fps must be > 0, got {segment_s} and {fps}")
        self.camera_id = camera_id
        self.directory = Path(directory) / camera_id
        self.segment_s = float(segment_s)
        self.fps = float(fps)
        self.retention = retention
        # "idle" (not started) | "recording" | "disk_full" | "failed" | "stopped"
        self.state = "idle"
        self.last_error = ""
        self.segments_written = 0
        self.bytes_written = 0  # bytes of finished segments
        self.frames_written = 0  # frames in finished segments
        self.frames_dropped = 0  # frames lost to an error or a full disk, partial segments too
        self._segment: _OpenSegment | None = None
        self._encoder: H264Encoder | None = None  # only when written frames, not packets
        self._seq = 0
        self._folder_ready = False  # created, and cleared of an earlier run's partial files
        self._lock = threading.Lock()

    def start(self) -> None:
        """Begin recording; also clears "disk_full" or "failed". No-op while recording.
        Touches no files: a folder that cannot be created is reported by the first write()."""
        with self._lock:
            if self.state == "recording":
                return
            self.state = "recording"
            self._folder_ready = False
            self._encoder = None

    def resume(self) -> None:
        """Record again after "disk_full" or "failed" (e.g. once space has been freed)."""
        with self._lock:
            if self.state in ("disk_full", "failed"):
                self.state = "recording"

    def _write(self, frame: RedactedFrame) -> None:
        """Encode the frame with the recorder's own encoder, then record it."""
        with self._lock:
            if not self._accepting():
                self.frames_dropped += 1
                return
            if self._encoder is None:
                self._encoder = H264Encoder(self.fps)
            try:
                packets = self._encoder.encode(frame)
            except MediaError as error:
                self.frames_dropped += 1
                self._enter_error_state(error)
            for packet in packets:
                self._record(packet)

    def write_packet(self, packet: EncodedPacket) -> None:
        """Record one packet of the camera's encoder. Raises SinkError once per error
        episode (see the class docstring), like write()."""
        with self._lock:
            if not self._accepting():
                self.frames_dropped += 1
                return
            self._record(packet)

    def _accepting(self) -> bool:
        """False in an error state (the caller counts the frame as dropped); raises when the
        recorder is not started."""
        if self.state in ("disk_full", "failed"):
            return False
        if self.state != "recording":
            raise SinkError(f"camera {self.camera_id}: recorder is {self.state}, not started")
        return True

    def _record(self, packet: EncodedPacket) -> None:
        try:
            segment = self._segment
            if segment is not None and self._starts_new_segment(segment, packet):
                self._finish_segment()
            if self._segment is None:
                if not packet.keyframe:
                    self.frames_dropped += 1  # undecodable without its keyframe
                    return
                self._segment = self._open_segment(packet)
            segment = self._segment
            segment.writer.write(packet)
            self._check_segment_fits_quota(segment)
            segment.frames += 1
            segment.last_timestamp = packet.timestamp
        except (MediaError, OSError, _QuotaUnreachable) as error:
            self.frames_dropped += 1
            self._enter_error_state(error)

    def stop(self) -> None:
        """Flush and close the open segment and give it its final name. Idempotent.

        A segment that cannot be closed is deleted and SinkError raised."""
        with self._lock:
            try:
                encoder, self._encoder = self._encoder, None
                if encoder is not None and self._accepting():
                    for packet in encoder.flush():  # the frames still inside the encoder
                        self._record(packet)
                if self._segment is not None:
                    self._finish_segment()
            except (MediaError, OSError, _QuotaUnreachable) as error:
                self.last_error = _describe(self.camera_id, error)
                raise SinkError(self.last_error) from error
            finally:
                self._segment = None
                if self.state != "idle":
                    self.state = "stopped"

    def _starts_new_segment(self, segment: _OpenSegment, packet: EncodedPacket) -> bool:
        if packet.generation != segment.generation:
            return True  # a new encoder (frame size): its packets need their own file
        return packet.keyframe and (
            packet.timestamp - segment.first_timestamp >= self.segment_s
            or packet.timestamp < segment.last_timestamp
        )

    def _open_segment(self, packet: EncodedPacket) -> _OpenSegment:
        if not self._folder_ready:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temp_files()
            self._folder_ready = True
        stamp = datetime.fromtimestamp(time.time(), timezone.utc).strftime("%Y%m%d-%H%M%S")
        self._seq += 1
        temp = self.directory / f".{stamp}-{self._seq}.part.mp4"
        writer = H264PacketMuxer(temp, packet, format="mp4")
        return _OpenSegment(
            writer=writer,
            temp=temp,
            stamp=stamp,
            seq=self._seq,
            generation=packet.generation,
            first_timestamp=packet.timestamp,
            last_timestamp=packet.timestamp,
        )

    def _finish_segment(self) -> None:
        """Close the open segment, rename it into place, then apply retention.

        On any failure the temporary file is deleted: no half-written file survives."""
        segment, self._segment = self._segment, None
        assert segment is not None
        try:
            segment.writer.close()
            size = segment.temp.stat().st_size
            final = self._final_path(segment)
            os.replace(segment.temp, final)
        except BaseException:
            self.frames_dropped += segment.frames
            raise
        finally:
            segment.temp.unlink(missing_ok=True)  # no-op once renamed
        self.segments_written += 1
        self.bytes_written += size
        self.frames_written += segment.frames
        log.debug("segment %s: %d frames, %d bytes", final, segment.frames, size)
        self.retention.enforce()
        if not self.retention.quota_met:
            raise _QuotaUnreachable(
                f"recordings use {self.retention.usage_bytes} bytes after retention, over "
                f"storage.max_bytes {self.retention.max_bytes} (files could not be deleted)"
            )

    def _final_path(self, segment: _OpenSegment) -> Path:
        # A restarted recorder counts from 1 again: never overwrite an earlier segment.
        seq = segment.seq
        while (path := self.directory / f"{segment.stamp}-{seq}.mp4").exists():
            seq += 1
        self._seq = max(self._seq, seq)
        return path

    def _check_segment_fits_quota(self, segment: _OpenSegment) -> None:
        try:
            size = segment.temp.stat().st_size
        except FileNotFoundError:  # FFmpeg creates the file with the first encoded packet
            return
        if size > self.retention.max_bytes:
            raise _QuotaUnreachable(
                f"one segment grew to {size} bytes, over storage.max_bytes "
                f"{self.retention.max_bytes}: raise max_bytes or shorten recording.segment_s"
            )

    def _enter_error_state(self, error: Exception) -> NoReturn:
        """Delete the partial segment, stop recording and raise SinkError (once per episode)."""
        self._abort_segment()
        if self._encoder is not None:  # recording resumes with a fresh encoder, at a keyframe
            self.frames_dropped += self._encoder.frames_pending
            self._encoder = None
        disk_full = isinstance(error, _QuotaUnreachable) or _is_disk_full(error)
        self.state = "disk_full" if disk_full else "failed"
        self.last_error = _describe(self.camera_id, error)
        raise SinkError(self.last_error) from error

    def _abort_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        self.frames_dropped += segment.frames
        try:
            segment.writer.close()
        except (MediaError, OSError) as error:
            # Expected after a write error; the file is deleted below either way.
            log.debug("closing failed segment %s: %s", segment.temp, error)
        finally:
            segment.temp.unlink(missing_ok=True)

    def _remove_stale_temp_files(self) -> None:
        """Delete partial segments left by a crash or power cut (they have no index and
        cannot be played). Only this camera's recorder writes in this folder."""
        for path in self.directory.iterdir():
            if _TEMP_NAME.match(path.name):
                log.warning("deleting partial segment left by an earlier run: %s", path)
                path.unlink(missing_ok=True)


class _QuotaUnreachable(Exception):
    """The storage quota cannot be met; treated like a full disk."""


def _is_disk_full(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(camera_id: str, error: BaseException) -> str:
    if isinstance(error, _QuotaUnreachable):
        return f"camera {camera_id}: recording stopped, storage quota unreachable: {error}"
    if _is_disk_full(error):
        return (
            f"camera {camera_id}: recording stopped, disk full ({error}); free space or lower "
            "storage.max_bytes, then resume"
        )
    return f"camera {camera_id}: recording stopped: {error}"
