"""`edgeblur serve`: the camera pipeline and its HTTP API in one process.

Shutdown: the first SIGTERM or SIGINT stops accepting requests, ends open previews after at
most GRACEFUL_SHUTDOWN_S, then stops the pipeline (each camera closes its recording) and returns
0. A second signal while that runs aborts it with KeyboardInterrupt.
"""

from __future__ import annotations

import logging
import re
import resource
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import unquote_plus

import uvicorn
from starlette.types import ASGIApp

from edge.configfile import load_config
from edge.errors import ConfigError
from service.app import AppSettings, create_app
from service.mqtt import MqttObserver, start_observer

log = logging.getLogger("edgeblur.service")

# MJPEG previews never end by themselves; after this, uvicorn cancels them.
GRACEFUL_SHUTDOWN_S = 3

_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_QUERY_PARAMETER = re.compile(r"(?P<sep>[?&;])(?P<key>[^=&#;\s]*)=(?P<value>[^&#;\s]*)")


def serve(config_path: Path | None, host: str | None = None, port: int | None = None) -> int:
    """Run until SIGTERM/SIGINT. host/port override the config's service section.

    Returns 0 after a clean shutdown, 1 if the HTTP server could not start (e.g. port in use),
    2 for a bad config (the message names the file and field).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _no_core_dumps()
    try:
        config = load_config(config_path)
        settings = AppSettings.from_config(config, config_path)
    except ConfigError as error:
        print(f"edgeblur: error: {error}", file=sys.stderr)
        return 2
    host = host or config.service.host
    port = config.service.port if port is None else port

    from edge.pipeline import Pipeline  # OpenCV, PyAV and the detectors: only when serving

    stop = _ShutdownSignals()
    # The RTSP streams take the API token as their password, and bind where the API does.
    pipeline = Pipeline(
        config, config_path=config_path, stream_password=settings.token, stream_host=host
    )
    mqtt: MqttObserver | None = None
    try:
        stop.install()
        pipeline.start()
        mqtt = start_observer(pipeline, config.mqtt)
        server = uvicorn.Server(server_config(create_app(pipeline, settings), host, port))
        stop.server = server
        _mask_query_tokens_in_access_log()
        _log_address(host, port, settings)
        if not stop.requested:
            try:
                server.run()
            except SystemExit:  # uvicorn's report of a failed start; it logged the cause
                pass
            if not server.started:
                log.error("could not start the HTTP server on %s:%d", host, port)
                return 1
    finally:
        if mqtt is not None:
            mqtt.stop()
        log.info("stopping the pipeline")
        pipeline.stop()
        stop.uninstall()
    return 0


def _no_core_dumps() -> None:
    """Raw frames live in this process's memory: a crash must not write them to a core file,
    whatever the deployment (systemd's LimitCORE and the compose file say the same)."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as error:
        log.warning("could not turn core dumps off: %s", error)


def server_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    """How `serve` runs uvicorn (the service tests run it the same way)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keep the process's own logging setup
        # The audit log records the connected peer; X-Forwarded-For, which any local client
        # could send, is recorded beside it, never trusted in its place.
        proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


class _ShutdownSignals:
    """SIGTERM/SIGINT outside uvicorn's own handling (while the pipeline starts or stops).

    uvicorn replaces these handlers while it runs, then re-raises each signal it caught into
    the handler it found: ours, which records it instead of letting SIGTERM's default kill the
    process before the pipeline has stopped and closed its recordings.
    """

    def __init__(self) -> None:
        self.count = 0
        self.server: uvicorn.Server | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.count > 0

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers; an embedder handles its own
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt(f"signal {signum} received twice")
        log.info("%s received: shutting down", signal.Signals(signum).name)
        if self.server is not None:
            self.server.should_exit = True


def mask_query_token(text: str) -> str:
    """Every query parameter whose key decodes to `token` (as the token check decodes it:
    `?%74oken=`, `?tok%65n=`), with its value replaced by ***."""

    def masked(match: re.Match[str]) -> str:
        key = unquote_plus(match.group("key")).strip().lower()
        if key != "token":
            return match.group(0)
        return f"{match.group('sep')}{match.group('key')}=***"

    return _QUERY_PARAMETER.sub(masked, text)


class _MaskQueryToken(logging.Filter):
    """snapshot.jpg / stream.mjpg accept ?token=; keep it out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                mask_query_token(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def _mask_query_tokens_in_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _MaskQueryToken) for f in access.filters):
        access.addFilter(_MaskQueryToken())


def _log_address(host: str, port: int, settings: AppSettings) -> None:
    shown = f"[{host}]" if ":" in host else host
    log.info("edgeblur API on http://%s:%d/ (OpenAPI docs at /docs)", shown, port)
    if settings.token is None:
        log.warning(
            "no API token: config changes are refused and reads are open; set %s to enable "
            "changes",
            settings.token_env,
        )
        if host not in _LOOPBACK:
            log.warning(
                "listening on %s without a token: anyone who can reach it can read the config "
                "and watch the redacted previews",
                host,
            )
