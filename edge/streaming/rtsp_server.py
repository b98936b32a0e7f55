"""The RTSP pull server: every camera's anonymised stream at rtsp://HOST:PORT/<camera-id>.

The server engine is GStreamer's gst-rtsp-server, run in a child process
(edge/streaming/rtsp_child.py) by Debian's python3, which has the GStreamer bindings the
service's venv lacks; this also keeps GLib's threads out of the service. The service encodes
each camera once (edge.sinks.fanout) and writes the H.264 packets down the child's stdin; the
child passes them to every viewer of that camera (no encode per viewer).

Where GStreamer is missing the cameras run on and `status` says why no stream is served. A
child that dies is restarted with back-off and the mounts are set up again.

Wire format on the child's stdin, per message: HEADER (kind, flags, name length, pts in 90 kHz
ticks, payload length), the camera id (ASCII), the payload (an H.264 access unit, Annex B).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import struct
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO

from edge.media import EncodedPacket

log = logging.getLogger(__name__)

SYSTEM_PYTHON = "/usr/bin/python3"
CHILD_SCRIPT = Path(__file__).with_name("rtsp_child.py")
# Debian packages the child needs at run time (scripts/install.sh --system installs them).
APT_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good"
)
USER = "edgeblur"  # the RTSP user name; the password is the service's token
HEADER = struct.Struct("!BBBqI")
MOUNT, UNMOUNT, PACKET = 1, 2, 3
KEYFRAME = 1
# How a child without the GStreamer bindings or typelibs ends (its last line on stderr).
_NO_BINDINGS = ("No module named 'gi'", "Namespace", "typelib", "gi.repository")
PIPE_BYTES = 1 << 20  # the stdin pipe's buffer: a few frames of 1080p, so a busy child is no stall


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RtspServer:
    """One per service process. Lifecycle: start() once (never raises for a missing engine:
    see `state` and `status`), mount() per camera, stop() once.

    Without a password the server runs only on a loopback address (state "disabled"
    otherwise); with one, viewers authenticate as user `edgeblur` with it (Digest).

    state: "stopped" | "starting" | "serving" | "restarting" | "unavailable" | "disabled".
    Thread-safe: mounts write packets from their own threads; counters read from any thread.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8554,
        password: str | None = None,
        python: str = SYSTEM_PYTHON,
        max_threads: int = 32,
        start_timeout_s: float = 15.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self._password = password or ""
        self.python = python
        self.max_threads = max_threads
        self.start_timeout_s = start_timeout_s
        self.max_backoff_s = max_backoff_s
        self.state = "stopped"
        self.status = "RTSP server not started"
        self.restarts = 0
        self._mounts: set[str] = set()
        self._viewers: dict[str, int] = {}
        self._viewer_drops: dict[str, int] = {}  # frames viewers missed, per camera, ever
        self._mounted: set[str] = set()  # mounts the child has confirmed
        self._lock = threading.Lock()  # state, mounts, viewers
        self._write_lock = threading.Lock()  # the child's stdin
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._stderr_tail: deque[str] = deque(maxlen=20)
        self._supervisor: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving, waiting up to start_timeout_s for the first start. Never raises for
        a missing engine or a port in use: `state` and `status` say what happened."""
        if self._supervisor is not None:
            return
        if not self._password and not is_loopback(self.host):
            self._set_state(
                "disabled",
                f"RTSP streams off: no token is configured and {self.host} is not a loopback "
                "address; set the service token to serve streams beyond this machine",
            )
            return
        if not os.access(self.python, os.X_OK):
            self._set_state("unavailable", self._missing_engine(f"{self.python} is missing"))
            return
        self._stopping.clear()
        self._set_state("starting", f"RTSP server starting on {self.host}:{self.port}")
        self._supervisor = threading.Thread(target=self._supervise, name="rtsp-server", daemon=True)
        self._supervisor.start()
        self._ready.wait(self.start_timeout_s)

    def stop(self) -> None:
        self._stopping.set()
        process = self._process
        if process is not None:
            self._end(process)
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.join(10)
        if self.state not in ("disabled", "unavailable"):
            self._set_state("stopped", "RTSP server stopped")

    # --- per camera ------------------------------------------------------------------------

    def mount(self, camera_id: str) -> RtspMount:
        """The packet consumer that serves `camera_id` at /<camera_id> (a PacketConsumer for
        edge.sinks.fanout.PacketOutput)."""
        return RtspMount(self, camera_id)

    def is_mounted(self, camera_id: str) -> bool:
        """True once the server answers for /<camera_id> (viewers earlier get 404)."""
        with self._lock:
            return camera_id in self._mounted

    def viewer_frames_dropped(self, camera_id: str) -> int:
        """Frames this camera's viewers missed (each viewer counted), since the server began:
        a viewer too far behind is skipped until it can take a keyframe."""
        with self._lock:
            return self._viewer_drops.get(camera_id, 0)

    def viewers(self, camera_id: str) -> int:
        with self._lock:
            return self._viewers.get(camera_id, 0)

    def url(self, camera_id: str, host: str | None = None) -> str:
        """The stream's URL without credentials; `host` for a server bound to all addresses."""
        shown = host or self.host
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        return f"rtsp://{shown}:{self.port}/{camera_id}"

    @property
    def serving(self) -> bool:
        return self.state == "serving"

    def _add_mount(self, camera_id: str) -> None:
        with self._lock:
            self._mounts.add(camera_id)
        self._send(MOUNT, camera_id)

    def _remove_mount(self, camera_id: str) -> None:
        with self._lock:
            self._mounts.discard(camera_id)
            self._mounted.discard(camera_id)
            self._viewers.pop(camera_id, None)
        self._send(UNMOUNT, camera_id)

    def _send_packet(self, camera_id: str, packet: EncodedPacket) -> bool:
        return self._send(
            PACKET, camera_id, packet.data, KEYFRAME if packet.keyframe else 0, packet.pts
        )

    def _send(
        self, kind: int, camera_id: str, payload: bytes = b"", flags: int = 0, pts: int = 0
    ) -> bool:
        """Write one message to the child; False when no child is serving. Blocks while the
        child's pipe is full (the mount's own thread, behind its own queue)."""
        name = camera_id.encode("ascii")
        message = HEADER.pack(kind, flags, len(name), pts, len(payload)) + name + payload
        with self._write_lock:
            process = self._process
            if process is None or process.stdin is None or not self._ready.is_set():
                return False
            try:
                process.stdin.write(message)
                process.stdin.flush()
            except (OSError, ValueError):  # the child died (its supervisor restarts it)
                return False
        return True

    # --- the child -------------------------------------------------------------------------

    def _supervise(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            began = time.monotonic()
            self._run_child()
            if self._stopping.is_set():
                return
            if time.monotonic() - began > 60:
                backoff = 1.0  # it served a good while: a fresh fault, retry soon
            self.restarts += 1
            if self.state != "unavailable":
                self._set_state(
                    "restarting",
                    f"RTSP server exited ({self._last_error()}); restarting in {backoff:g} s",
                )
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    def _run_child(self) -> None:
        """Run one child until it exits."""
        env = dict(os.environ, EDGEBLUR_RTSP_PASSWORD=self._password)
        command = [self.python, str(CHILD_SCRIPT), self.host, str(self.port), str(self.max_threads)]
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
        except OSError as error:
            self._set_state("unavailable", self._missing_engine(str(error)))
            self._ready.set()
            return
        _grow_pipe(process.stdin)
        stderr = threading.Thread(
            target=self._read_stderr, args=(process.stderr,), name="rtsp-server-log", daemon=True
        )
        stderr.start()
        with self._write_lock:
            self._process = process
        try:
            assert process.stdout is not None
            for line in process.stdout:
                self._handle_event(line)
        finally:
            with self._write_lock:
                self._ready.clear()
                self._process = None
            self._end(process)
            stderr.join(5)
            with self._lock:
                self._viewers.clear()
                self._mounted.clear()
            if self.state == "starting" and not self._stopping.is_set():
                reason = self._last_error()
                if any(sign in reason for sign in _NO_BINDINGS):
                    self._set_state("unavailable", self._missing_engine(reason))
                self._ready.set()  # start() stops waiting; state says why

    def _handle_event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            log.warning("RTSP server said: %r", line[:200])
            return
        if event.get("event") == "ready":
            self.port = int(event.get("port", self.port))
            self._set_state("serving", f"serving rtsp://{self.host}:{self.port}/<camera-id>")
            self._ready.set()
            with self._lock:
                mounts = sorted(self._mounts)
            for camera_id in mounts:  # again, after a restart
                self._send(MOUNT, camera_id)
        elif event.get("event") == "mounted":
            with self._lock:
                if str(event.get("mount")) in self._mounts:
                    self._mounted.add(str(event.get("mount")))
        elif event.get("event") == "viewers":
            with self._lock:
                self._viewers[str(event.get("mount"))] = int(event.get("count", 0))
        elif event.get("event") == "dropped":
            mount = str(event.get("mount"))
            with self._lock:
                self._viewer_drops[mount] = self._viewer_drops.get(mount, 0) + int(
                    event.get("count", 0)
                )
        elif event.get("event") == "failed":
            self._stderr_tail.append(str(event.get("reason", "failed")))

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._stderr_tail.append(line)
                log.debug("rtsp child: %s", line)

    def _last_error(self) -> str:
        return self._stderr_tail[-1] if self._stderr_tail else "no message"

    def _missing_engine(self, reason: str) -> str:
        return (
            f"RTSP streams off: GStreamer's RTSP server cannot run ({reason}); install "
            f"{APT_PACKAGES} (scripts/install.sh --system)"
        )

    def _set_state(self, state: str, status: str) -> None:
        with self._lock:
            changed = status != self.status
            self.state, self.status = state, status
        if changed:
            level = (
                logging.WARNING
                if state in ("unavailable", "disabled", "restarting")
                else (logging.INFO)
            )
            log.log(level, "%s", status)

    @staticmethod
    def _end(process: subprocess.Popen[bytes]) -> None:
        try:
            if process.stdin is not None:
                process.stdin.close()
        except OSError:
            pass  # the child is gone already
        try:
            process.wait(2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class RtspMount:
    """One camera's mount as an output of its encoder (edge.sinks.fanout.PacketConsumer).
    `packets_dropped`: packets sent while the server was down, and frames its viewers missed
    (each viewer counted) since this mount was made (its camera started)."""

    def __init__(self, server: RtspServer, camera_id: str) -> None:
        self.server = server
        self.camera_id = camera_id
        self.packets_undelivered = 0
        self._viewer_drops_before = server.viewer_frames_dropped(camera_id)

    @property
    def packets_dropped(self) -> int:
        viewer_drops = self.server.viewer_frames_dropped(self.camera_id)
        return self.packets_undelivered + viewer_drops - self._viewer_drops_before

    @property
    def viewers(self) -> int:
        return self.server.viewers(self.camera_id)

    def open(self) -> None:
        self.server._add_mount(self.camera_id)

    def consume(self, packet: EncodedPacket) -> None:
        if not self.server._send_packet(self.camera_id, packet):
            self.packets_undelivered += 1

    def close(self) -> None:
        self.server._remove_mount(self.camera_id)


def _grow_pipe(pipe: IO[bytes] | None) -> None:
    """Enlarge a pipe's kernel buffer where Linux allows (else keep the default 64 KiB)."""
    if pipe is None:
        return
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, or over /proc/sys/fs/pipe-max-size: the default works, just smaller
