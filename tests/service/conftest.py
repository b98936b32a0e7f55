"""Service fixtures: the real app under real uvicorn on 127.0.0.1, spoken to over HTTP with httpx,
with `service_support.FakeControl` behind it. Every wait has a deadline, so a hang fails instead
of blocking the run.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn
from service_support import TOKEN, FakeControl, config_dict, wait_until
from starlette.types import ASGIApp, Receive, Scope, Send

from edge.config import EdgeblurConfig
from edge.configfile import save_config
from service.app import AppSettings, create_app
from service.server import server_config


class FewWorkerThreads:
    """ASGI wrapper that shrinks anyio's default thread limiter (the pool FastAPI runs sync
    routes in; it belongs to the server's event loop), to show what would starve it."""

    def __init__(self, app: ASGIApp, threads: int) -> None:
        self.app = app
        self.threads = threads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = self.threads
        await self.app(scope, receive, send)


@dataclass
class LiveApi:
    """A running server: `client` sends the token (if any), `anonymous` sends none."""

    url: str
    control: FakeControl
    settings: AppSettings
    client: httpx.Client
    anonymous: httpx.Client


@pytest.fixture
def control(tmp_path: Path) -> Iterator[FakeControl]:
    fake = FakeControl(EdgeblurConfig.model_validate(config_dict(tmp_path)))
    yield fake
    fake.stop()


@pytest.fixture
def config_file(tmp_path: Path, control: FakeControl) -> Path:
    path = tmp_path / "edgeblur.yaml"
    save_config(control.config(), path)
    return path


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Callable[..., LiveApi]]:
    """start_api(control, token=TOKEN, config_path=None, max_body_bytes=..., max_streams=...,
    worker_threads=None): worker_threads shrinks the thread pool sync routes run in."""
    running: list[tuple[uvicorn.Server, threading.Thread, list[httpx.Client]]] = []

    def start(
        control: FakeControl,
        *,
        token: str | None = TOKEN,
        config_path: Path | None = None,
        max_body_bytes: int = 64 * 1024,
        max_streams: int = 4,
        worker_threads: int | None = None,
    ) -> LiveApi:
        settings = AppSettings(
            config_path=config_path,
            token=token,
            audit_log=tmp_path / "data" / "audit.log",
            max_body_bytes=max_body_bytes,
            max_streams=max_streams,
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        app = create_app(control, settings)
        served = app if worker_threads is None else FewWorkerThreads(app, worker_threads)
        server = uvicorn.Server(server_config(served, "127.0.0.1", port))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        wait_until(lambda: server.started or not thread.is_alive(), 20, "uvicorn to start")
        assert server.started, "uvicorn did not start"
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=url, headers=headers, timeout=10)
        anonymous = httpx.Client(base_url=url, timeout=10)
        running.append((server, thread, [client, anonymous]))
        return LiveApi(url, control, settings, client, anonymous)

    yield start
    for server, thread, clients in running:
        for client in clients:
            client.close()
        server.should_exit = True
        thread.join(15)
        assert not thread.is_alive(), "uvicorn did not shut down"


@pytest.fixture
def api(start_api: Callable[..., LiveApi], control: FakeControl, config_file: Path) -> LiveApi:
    """The usual setup: a token, a config file, three cameras all ready."""
    return start_api(control, config_path=config_file)
