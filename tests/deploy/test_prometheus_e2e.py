"""Debian's Prometheus scrapes a real `edgeblur serve` on loopback with the bearer token, using
deploy/prometheus/edgeblur-rules.yaml; the camera's RTSP server is killed and the camera-down
alert fires, within a bounded time.

Test-only settings: scrape and rule evaluation every second, and EdgeblurCameraDown's hold time
(`for:`) cut from 2 minutes to 5 seconds in the copy of the rules this test loads, so the test
takes seconds, not minutes. The alert's expression is the shipped one, unchanged; the 2-minute
hold itself is covered by the promtool unit tests (test_prometheus_rules.py).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fleet_support import DEPLOY, TOKEN, EdgeblurService, rtsp_camera, service_config
from rtsp import RtspServer, free_port, make_counter_video
from waiting import wait_until

RULES = DEPLOY / "prometheus" / "edgeblur-rules.yaml"
TEST_HOLD = "5s"

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus is not installed (scripts/install.sh --test-system installs it)",
)


def rules_with_short_hold(path: Path) -> Path:
    rules = yaml.safe_load(RULES.read_text())
    (down,) = [
        rule
        for group in rules["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "EdgeblurCameraDown"
    ]
    assert down["for"] == "2m"
    down["for"] = TEST_HOLD
    path.write_text(yaml.safe_dump(rules))
    return path


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        token_file = workdir / "token"
        token_file.write_text(TOKEN)
        token_file.chmod(0o600)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules_with_short_hold(workdir / "rules.yaml"))],
            "scrape_configs": [
                {
                    "job_name": "edgeblur",
                    "authorization": {"credentials_file": str(token_file)},
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        self.config_file = workdir / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config))
        self.workdir = workdir
        self.log = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        with self.log.open("w") as log_file:
            self.process = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        wait_until(self.ready, 60, "Prometheus to be ready")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def ready(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        response.raise_for_status()
        return list(response.json()["data"]["result"])

    def alerts(self, name: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/alerts", timeout=5)
        response.raise_for_status()
        return [a for a in response.json()["data"]["alerts"] if a["labels"]["alertname"] == name]


def test_camera_down_alert_fires_when_the_camera_dies(tmp_path: Path) -> None:
    video = make_counter_video(tmp_path / "camera.mp4", frames=900)  # 60 s at 15 fps
    with (
        RtspServer(video) as camera,
        EdgeblurService(
            tmp_path, service_config(tmp_path, [{"id": "door", "source": rtsp_camera(camera.url)}])
        ) as service,
    ):
        wait_until(service.healthy, 60, "edgeblur to answer /healthz")
        with Prometheus(tmp_path, f"127.0.0.1:{service.port}") as prometheus:

            def scraped_up() -> bool:
                result = prometheus.query('edgeblur_camera_up{job="edgeblur",camera="door"}')
                return bool(result) and result[0]["value"][1] == "1"

            wait_until(scraped_up, 60, "Prometheus to scrape the running camera (with the token)")
            assert prometheus.query('up{job="edgeblur"}')[0]["value"][1] == "1"
            # A camera counts as down while it starts: an alert pending from then clears.
            wait_until(lambda: prometheus.alerts("EdgeblurCameraDown") == [], 30,
                       "no camera-down alert while the camera runs")

            camera.stop()  # the camera loses power
            killed = time.monotonic()

            def firing() -> list[dict[str, Any]]:
                alerts = prometheus.alerts("EdgeblurCameraDown")
                return [alert for alert in alerts if alert["state"] == "firing"]

            (alert,) = wait_until(firing, 60, "EdgeblurCameraDown to fire")
            assert alert["labels"]["camera"] == "door"
            assert alert["labels"]["severity"] == "critical"
            assert service.cameras()["door"]["state"] != "running"
            print(f"EdgeblurCameraDown fired {time.monotonic() - killed:.1f} s after the kill "
                  f"(hold {TEST_HOLD})")
