"""The RTSP server process: GStreamer's gst-rtsp-server serving one mount per camera.

Run by edge.streaming.rtsp_server with Debian's python3, which has the GStreamer bindings
(python3-gi, gir1.2-gst-rtsp-server-1.0); the service's venv does not, and this keeps GLib and
its threads out of the service process. Uses the standard library and gi only.

    python3 rtsp_child.py HOST PORT MAX_THREADS     (password in $EDGEBLUR_RTSP_PASSWORD)

stdin carries framed messages from the service (see edge.streaming.rtsp_server: MOUNT,
UNMOUNT, PACKET with an H.264 access unit already encoded from redacted frames); stdout carries
JSON lines back ("ready", viewer counts); stderr is the log. The process exits when stdin
closes, so it never outlives the service.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import threading
import time
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

HEADER = struct.Struct("!BBBqI")  # kind, flags, name length, pts (90 kHz), payload length
MOUNT, UNMOUNT, PACKET = 1, 2, 3
KEYFRAME = 1
USER = "edgeblur"
MAX_GOP_PACKETS = 600  # packets kept since the last keyframe, for a viewer who starts the media
MAX_QUEUED_BYTES = 2_000_000  # per viewer: seconds of 1080p; a viewer further behind loses frames
DROPS_REPORT_S = 1.0  # report a mount's dropped frames to the service at most this often
# Live H.264 in, RTP out: no parser or decoder (the encoder repeats SPS/PPS with every keyframe,
# and the payloader also sends them before each keyframe and in the SDP).
LAUNCH = (
    "( appsrc name=src is-live=true format=time do-timestamp=true block=false "
    f"max-bytes={MAX_QUEUED_BYTES} leaky-type=downstream "
    "caps=video/x-h264,stream-format=byte-stream,alignment=au "
    "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
)


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class Mount:
    """One camera's mount. The service encodes once; each viewer gets its own small pipeline
    (appsrc, payloader) fed the same packets, starting at the last keyframe. Not one shared
    media: with that, a viewer that stopped reading backed up the shared pipeline, and a new
    viewer got no frames. A viewer whose queue holds MAX_QUEUED_BYTES (it stopped reading, or
    its network is too slow) is skipped, and then until a keyframe, so that what it gets next
    decodes; it costs at most that much memory and holds up nobody. The frames it missed are
    reported to the service (its /metrics), a second's worth at a time."""

    def __init__(self, name: str, permissions: Any | None) -> None:
        self.name = name
        self.factory = GstRtspServer.RTSPMediaFactory()
        self.factory.set_launch(LAUNCH)
        self.factory.set_shared(False)
        if permissions is not None:
            self.factory.set_permissions(permissions)
        self.factory.connect("media-configure", self._configure)
        self._lock = threading.Lock()
        self._sources: dict[Any, str] = {}  # appsrc -> "new", "in-sync" or "resync"
        self._gop: list[bytes] = []  # since the last keyframe
        self._dropped = 0  # frames viewers missed since the last report
        self._reported_at = time.monotonic()

    def _configure(self, _factory: Any, media: Any) -> None:
        source = media.get_element().get_child_by_name("src")
        with self._lock:
            # The new media starts at the last keyframe, not the next one.
            for data in self._gop:
                source.emit("push-buffer", Gst.Buffer.new_wrapped(data))
            self._sources[source] = "in-sync" if self._gop else "new"
        media.connect("unprepared", self._unprepared, source)

    def _unprepared(self, _media: Any, source: Any) -> None:
        with self._lock:
            self._sources.pop(source, None)

    def push(self, data: bytes, keyframe: bool) -> None:
        """Pass one access unit to every viewer (never blocks: appsrc block=false, leaky)."""
        with self._lock:
            if keyframe:
                self._gop = [data]
            elif self._gop and len(self._gop) < MAX_GOP_PACKETS:
                self._gop.append(data)
            else:
                self._gop = []
            for source, state in self._sources.items():
                if state != "in-sync" and not keyframe:  # nothing a decoder cannot start from
                    self._dropped += state == "resync"
                    continue
                queued = source.get_property("current-level-bytes")
                if queued and queued + len(data) > MAX_QUEUED_BYTES:  # an empty queue takes any
                    self._sources[source] = "resync"
                    self._dropped += 1
                    continue
                self._sources[source] = "in-sync"
                source.emit("push-buffer", Gst.Buffer.new_wrapped(data))
            now = time.monotonic()
            if self._dropped and now - self._reported_at >= DROPS_REPORT_S:
                emit({"event": "dropped", "mount": self.name, "count": self._dropped})
                self._dropped, self._reported_at = 0, now


class Viewers:
    """Counts playing clients per mount and reports changes on stdout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._playing: dict[object, str] = {}

    def attach(self, _server: Any, client: Any) -> None:
        client.connect("play-request", self._play)
        client.connect("teardown-request", self._gone)
        client.connect("closed", self._closed)

    def _play(self, client: Any, context: Any) -> None:
        mount = context.uri.abspath.strip("/")
        with self._lock:
            self._playing[client] = mount
        self._report(mount)

    def _gone(self, client: Any, _context: Any) -> None:
        self._closed(client)

    def _closed(self, client: Any) -> None:
        with self._lock:
            mount = self._playing.pop(client, None)
        if mount is not None:
            self._report(mount)

    def _report(self, mount: str) -> None:
        with self._lock:
            count = sum(1 for name in self._playing.values() if name == mount)
        emit({"event": "viewers", "mount": mount, "count": count})


def read_exactly(stream: Any, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def serve_stdin(server: Any, mounts: dict[str, Mount], permissions: Any, loop: Any) -> None:
    """Apply the service's messages until stdin closes, then stop the main loop."""
    points = server.get_mount_points()
    stdin = sys.stdin.buffer
    try:
        while (header := read_exactly(stdin, HEADER.size)) is not None:
            kind, flags, name_length, _pts, length = HEADER.unpack(header)
            name_bytes = read_exactly(stdin, name_length)
            payload = read_exactly(stdin, length) if length else b""
            if name_bytes is None or payload is None:
                break
            name = name_bytes.decode("ascii")
            if kind == MOUNT and name not in mounts:
                mounts[name] = Mount(name, permissions)
                points.add_factory(f"/{name}", mounts[name].factory)
                emit({"event": "mounted", "mount": name})
            elif kind == UNMOUNT and name in mounts:
                points.remove_factory(f"/{name}")
                del mounts[name]
            elif kind == PACKET and name in mounts:
                mounts[name].push(payload, bool(flags & KEYFRAME))
    finally:
        GLib.idle_add(loop.quit)


def main() -> int:
    host, port, max_threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    password = os.environ.pop("EDGEBLUR_RTSP_PASSWORD", "")
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(host)
    server.set_service(str(port))
    # More than one thread, or a viewer waiting for its first frame holds up every other.
    server.get_thread_pool().set_max_threads(max_threads)
    permissions = None
    if password:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        # Digest only: the password never crosses the network in the clear. (The bindings
        # cannot OR the method flags to offer Basic beside it.)
        auth.add_digest(USER, password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        for permission in ("ACCESS", "CONSTRUCT"):
            name = getattr(GstRtspServer, f"RTSP_PERM_MEDIA_FACTORY_{permission}")
            permissions.add_permission_for_role("viewer", name, True)
    viewers = Viewers()
    server.connect("client-connected", viewers.attach)
    if server.attach(None) == 0:
        emit({"event": "failed", "reason": f"cannot listen on {host}:{port}"})
        return 1
    loop = GLib.MainLoop()
    mounts: dict[str, Mount] = {}
    threading.Thread(
        target=serve_stdin, args=(server, mounts, permissions, loop), daemon=True
    ).start()
    emit({"event": "ready", "port": server.get_bound_port()})
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
