"""A real RTSP server on loopback for tests, and test videos whose frames carry their number.

The server is GStreamer's gst-rtsp-server (tests/rtsp_server.py) in a subprocess of Debian's
/usr/bin/python3, which has the `gi` bindings the venv lacks. Packages: gir1.2-gst-rtsp-server-1.0
python3-gi gstreamer1.0-plugins-good gstreamer1.0-plugins-bad (see .ci/run).

    video = make_counter_video(tmp_path / "cam.mp4", frames=300)
    with RtspServer(video) as server:
        source = RtspSource(RtspSourceConfig(url=server.url))
        ...
        server.stop()      # the camera dies (SIGKILL)
        server.start()     # and comes back on the same port

Each connection plays the file once from its start, in real time; at the end the stream ends
and a LiveSource reconnects (counted in `reconnects`), so make the video longer than the test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
APT_PACKAGES = (
    "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
)

# Frame numbers are drawn as a row of black/white blocks, big enough to survive H.264 and JPEG.
COUNTER_BITS = 12
COUNTER_BLOCK_PX = 16


def stamp_counter(image: np.ndarray, number: int) -> None:
    """Draw `number` (0..4095) into the top-left COUNTER_BITS blocks of a BGR image, in place."""
    for bit in range(COUNTER_BITS):
        value = 255 if (number >> bit) & 1 else 0
        x = bit * COUNTER_BLOCK_PX
        image[:COUNTER_BLOCK_PX, x : x + COUNTER_BLOCK_PX] = value


def read_counter(image: np.ndarray) -> int:
    """The number stamp_counter drew, read back from a decoded (lossy) frame."""
    number = 0
    for bit in range(COUNTER_BITS):
        x = bit * COUNTER_BLOCK_PX
        # The block's centre only: codecs smear its edges into the neighbours.
        centre = image[4 : COUNTER_BLOCK_PX - 4, x + 4 : x + COUNTER_BLOCK_PX - 4]
        if centre.mean() > 127:
            number |= 1 << bit
    return number


def counter_frame(number: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A BGR uint8 (height, width, 3) frame: a moving gradient with its number stamped on."""
    columns = (np.arange(width, dtype=np.int32) * 2 + number * 4) % 256
    image = np.empty((height, width, 3), np.uint8)
    image[:, :, 0] = columns.astype(np.uint8)
    image[:, :, 1] = 128
    image[:, :, 2] = (np.arange(height, dtype=np.int32)[:, None] % 256).astype(np.uint8)
    stamp_counter(image, number)
    return image


def write_h264(path: Path, images: Iterable[np.ndarray], fps: int = 15) -> Path:
    """Encode BGR uint8 images (all the same even size) as an H.264 MP4 at `path`, with a
    keyframe every second and no B-frames, as cameras stream. E.g. faces for an e2e test:
    write_h264(path, (demo.render(i) for i in range(150)), 15)."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(fps), "bf": "0"}
        for number, image in enumerate(images):
            if number == 0:
                stream.height, stream.width = image.shape[:2]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, "bgr24")))
        container.mux(stream.encode(None))
    return path


def make_counter_video(
    path: Path, frames: int, fps: int = 15, width: int = 320, height: int = 240
) -> Path:
    """`frames` counter frames (numbered from 0) as an H.264 MP4 at `path`."""
    images = (counter_frame(number, width, height) for number in range(frames))
    return write_h264(path, images, fps)


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RtspServer:
    """gst-rtsp-server serving `video` at `url` (rtsp://127.0.0.1:PORT/cam), in a subprocess.

    start() returns once the server accepts connections; stop() kills it outright (SIGKILL,
    like a camera losing power); restart() does both on the same port; pause()/resume()
    freeze and thaw it (SIGSTOP/SIGCONT: a camera that stalls with the connection open).
    `credentials` ("user:password") makes the server demand Basic auth.
    """

    def __init__(self, video: Path, port: int | None = None, credentials: str | None = None):
        self.video = Path(video)
        self.port = port or free_port()
        self.credentials = credentials
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    def start(self, timeout_s: float = 15.0) -> None:
        if self._process is not None:
            raise RuntimeError("RTSP server already running")
        if not os.access(SYSTEM_PYTHON, os.X_OK):
            raise RuntimeError(f"{SYSTEM_PYTHON} is missing; apt-get install {APT_PACKAGES}")
        command = self._command()
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(
                    f"RTSP server exited: {self._stderr()}\n(needs apt-get install {APT_PACKAGES})"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"RTSP server did not listen within {timeout_s:g} s: {self._stderr()}")

    def _command(self) -> list[str]:
        command = [SYSTEM_PYTHON, str(SERVER_SCRIPT), str(self.video), str(self.port)]
        if self.credentials:
            command.append(self.credentials)
        return command

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def _stderr(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self._log.close()


class RtspRecordServer(RtspServer):
    """gst-rtsp-server accepting a publication (ANNOUNCE/RECORD, as MediaMTX does) at `url`;
    each publication's H.264 lands in `directory`/received-N.h264 as it arrives.

        with RtspRecordServer(tmp_path) as server:
            ... publish to server.url ...
            server.received_counters()   # the counter of every frame received so far
    """

    def __init__(self, directory: Path, port: int | None = None) -> None:
        super().__init__(Path(directory), port)
        self.directory = Path(directory)

    def _command(self) -> list[str]:
        return [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--record", str(self.directory), str(self.port)]

    def received_counters(self) -> list[int]:
        """Counters (read_counter) of the frames received, publication by publication. A file
        still being written may end in a partial frame; what decodes is counted."""
        counters: list[int] = []
        for path in sorted(self.directory.glob("received-*.h264")):
            if path.stat().st_size == 0:
                continue
            try:
                with av.open(str(path), format="h264") as container:
                    for frame in container.decode(video=0):
                        counters.append(read_counter(frame.to_ndarray(format="bgr24")))
            except av.FFmpegError:
                continue  # a truncated tail: the frames before it were counted
        return counters
