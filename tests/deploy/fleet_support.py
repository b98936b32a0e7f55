"""What the fleet deployment tests share (a module of its own, not conftest.py, so test files
can import it): where deploy/ is, and `edgeblur serve` run for real in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families
from rtsp import free_port

from edge.metrics import PipelineMetrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


TOKEN = "fleet-token-0123456789abcdef"


class EdgeblurService:
    """`edgeblur serve` in a subprocess on 127.0.0.1 (the real CLI, pipeline and uvicorn), with
    the API token in its environment as a deployment gives it. `config` is the YAML's content;
    the log is kept for failure messages."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.config_path = workdir / "edgeblur.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "EDGEBLUR_TOKEN": TOKEN, "PYTHONPATH": str(REPO)}
        with self.log.open("w") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "import sys; from edge.cli import main; sys.exit(main())",
                 "serve", "--config", str(self.config_path), "--port", str(self.port)],
                cwd=self.workdir, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            )

    def get(self, path: str) -> httpx.Response:
        return httpx.get(
            self.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )

    def healthy(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()
        try:
            return self.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def cameras(self) -> dict[str, dict[str, Any]]:
        return {camera["id"]: camera for camera in self.get("/api/cameras").json()}

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> EdgeblurService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rtsp_camera(url: str) -> dict[str, Any]:
    """A camera config reading `url`, quick to notice its source is gone and to reconnect."""
    return {
        "type": "rtsp",
        "url": url,
        "open_timeout_s": 5,
        "read_timeout_s": 2,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
    }


def service_config(workdir: Path, cameras: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    """A small config for the fleet tests: recording into workdir/data, the given cameras."""
    return {
        "storage": {"data_dir": str(workdir / "data")},
        "cameras": cameras,
        **top,
    }


class Mosquitto:
    """Debian's mosquitto broker on 127.0.0.1, anonymous, nothing persisted. stop() kills it
    (a broker that vanishes); start() brings it back on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\n"
        )
        self.log = workdir / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("a") as log_file:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=log_file, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen: {self.log.read_text()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Subscriber:
    """A paho client recording every message under `topics` (it reconnects by itself)."""

    def __init__(self, port: int, topics: list[str]) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-test")
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            for topic in topics:
                client.subscribe(topic, qos=1)

        def on_message(client: Any, userdata: Any, message: Any) -> None:
            with self._lock:
                self.messages.append((message.topic, message.payload, bool(message.retain)))

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.connect_async("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def received(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def json(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.received(topic) if p]

    def topics(self) -> set[str]:
        with self._lock:
            return {t for t, _, _ in self.messages}

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def exported_metric_names() -> set[str]:
    """Every sample name edgeblur's /metrics exposes once a camera exists (what the alert
    rules and the dashboard may query)."""
    metrics = PipelineMetrics()
    metrics.camera("probe")
    metrics.set_outputs({"probe": [("recording", 0, 0), ("rtsp", 0, 0)]})  # its encoded outputs
    return {
        sample.name
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }
