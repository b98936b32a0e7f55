"""What the fleet deployment tests share (a module of its own, not conftest.py, so test files
can import it): where deploy/ is, and `edgeblur serve` run for real in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml
from rtsp import free_port

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
