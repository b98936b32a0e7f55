"""`edgeblur serve` (service.server.serve): config errors, a port in use, and a clean SIGTERM
shutdown of a real process with a preview open.

The pipeline is replaced by `FakeControl` with start()/stop() (the `edge.pipeline.Pipeline`
contract), so these tests cover the serving process, not the cameras (tests/e2e do those).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import types
from pathlib import Path

import httpx
import pytest
import yaml
from service_support import TOKEN, FakeControl, config_dict, wait_until

from service.server import serve

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# Runs `serve` in a process of its own with FakeControl as the pipeline; argv: config, port,
# and a file the fake pipeline writes "started" / "stopped" to.
SERVE_SCRIPT = """
import sys, types
from pathlib import Path
sys.path[:0] = [{support!r}, {tests!r}]
from service_support import FakeControl

marker = Path(sys.argv[3])

class Pipeline(FakeControl):
    def __init__(self, config, config_path=None, **streams):
        super().__init__(config)
    def start(self):
        marker.write_text("started")
    def stop(self):
        super().stop()
        marker.write_text("stopped")

sys.modules["edge.pipeline"] = types.SimpleNamespace(Pipeline=Pipeline)
from service.server import serve
sys.exit(serve(Path(sys.argv[1]), "127.0.0.1", int(sys.argv[2])))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakePipeline(FakeControl):
    """FakeControl with the Pipeline lifecycle, for serve() run in this process."""

    instances: list[FakePipeline] = []

    def __init__(self, config, config_path=None, **streams) -> None:
        super().__init__(config)
        self.streams = streams  # the RTSP streams' password and bind address
        self.started = self.stopped = False
        FakePipeline.instances.append(self)

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        super().stop()
        self.stopped = True


@pytest.fixture
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> type[FakePipeline]:
    FakePipeline.instances = []
    monkeypatch.setitem(sys.modules, "edge.pipeline", types.SimpleNamespace(Pipeline=FakePipeline))
    return FakePipeline


def test_bad_config_exits_2_naming_the_field(tmp_path, capsys, fake_pipeline):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"cameras": [{"id": "x", "source": {"type": "rtsp"}}]}))
    assert serve(path, None, None) == 2
    error = capsys.readouterr().err
    assert str(path) in error
    assert "cameras.0.source" in error and "url" in error
    assert fake_pipeline.instances == []


def test_missing_config_file_exits_2(tmp_path, capsys, fake_pipeline):
    assert serve(tmp_path / "absent.yaml", None, None) == 2
    assert "absent.yaml" in capsys.readouterr().err


def test_short_token_exits_2(tmp_path, capsys, monkeypatch, fake_pipeline):
    monkeypatch.setenv("EDGEBLUR_TOKEN", "short")
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(config_dict(tmp_path)))
    assert serve(path, None, None) == 2
    assert "EDGEBLUR_TOKEN" in capsys.readouterr().err


def test_port_in_use_exits_1_and_stops_the_pipeline(tmp_path, fake_pipeline):
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(config_dict(tmp_path)))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert serve(path, "127.0.0.1", taken.getsockname()[1]) == 1
    [pipeline] = fake_pipeline.instances
    assert pipeline.started and pipeline.stopped


def test_sigterm_shuts_down_cleanly_with_a_preview_open(tmp_path):
    config = tmp_path / "edgeblur.yaml"
    config.write_text(yaml.safe_dump(config_dict(tmp_path)))
    marker = tmp_path / "pipeline-state"
    log = tmp_path / "serve.log"
    port = free_port()
    script = SERVE_SCRIPT.format(support=str(HERE), tests=str(HERE.parent))
    env = {**os.environ, "EDGEBLUR_TOKEN": TOKEN, "PYTHONPATH": str(REPO)}
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", script, str(config), str(port), str(marker)],
            cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 60, "the server to answer /healthz")
        assert marker.read_text() == "started"
        # Raw frames live in the service's memory: it never dumps core.
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        assert re.search(r"^Max core file size\s+0\s+0\s", limits, re.MULTILINE), limits
        snapshot = httpx.get(f"{url}/api/cameras/gate/snapshot.jpg?token={TOKEN}", timeout=10)
        assert snapshot.status_code == 200

        preview_open = threading.Event()

        def watch_preview() -> None:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            try:
                with httpx.stream("GET", f"{url}/api/cameras/hall/stream.mjpg", headers=headers,
                                  timeout=30) as response:
                    for _ in response.iter_bytes():
                        preview_open.set()
            except httpx.HTTPError:
                pass  # the server ends the preview as it shuts down

        watcher = threading.Thread(target=watch_preview, daemon=True)
        watcher.start()
        assert preview_open.wait(20), "the preview did not start"

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
        watcher.join(20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert marker.read_text() == "stopped"
    output = log.read_text()
    assert "stopping the pipeline" in output
    assert f"http://127.0.0.1:{port}/" in output
    assert "snapshot.jpg?token=***" in output  # access log line, token masked
    assert TOKEN not in output
