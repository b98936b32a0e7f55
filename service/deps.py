"""Settings, per-app state and the dependencies every route uses (as `Annotated` aliases).

Access rules, enforced here and nowhere else:
- /healthz and /readyz need no token (probes).
- With a token configured, every other route needs `Authorization: Bearer <token>`; a missing or
  wrong one gets 401 with `WWW-Authenticate: Bearer`. Tokens are compared in constant time.
- Without a token, read routes are open and mutating routes are refused with 403.
- snapshot.jpg and stream.mjpg also accept `?token=` because an <img> tag cannot send headers.
  That token can end up in browser history and proxy logs; `edgeblur serve` masks it in its own
  access log.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from edge.config import EdgeblurConfig
from edge.control import Control
from edge.errors import ConfigError
from service.audit import AuditLog
from service.counters import ServiceMetrics

MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class AppSettings:
    """What the HTTP layer needs besides the pipeline; read once at start-up.

    config_path: the YAML file PUT/PATCH rewrite (None: the service runs on built-in defaults
    and refuses changes with 409, since there is no file that would keep them).
    token: the bearer token, already resolved (None: mutating routes are refused).
    token_env: the environment variable named in the 403 message.
    audit_log: JSON-lines file of config changes.
    max_body_bytes: larger request bodies get 413.
    max_streams: concurrent MJPEG previews; each holds one worker thread of its own.
    """

    config_path: Path | None
    token: str | None
    audit_log: Path
    max_body_bytes: int = 256 * 1024
    token_env: str = "EDGEBLUR_TOKEN"
    max_streams: int = 8

    @classmethod
    def from_config(
        cls,
        config: EdgeblurConfig,
        config_path: Path | None,
        environ: Mapping[str, str] = os.environ,
    ) -> AppSettings:
        """Token: service.token, else the variable named by service.token_env (ConfigError if
        that is set but shorter than 16 characters, or if the config file names token_env and
        the variable is not set: the box would otherwise come up with its reads open because a
        secret went missing). Audit log: service.audit_log, else <storage.data_dir>/audit.log."""
        service = config.service
        token = service.token or environ.get(service.token_env) or None
        if token is not None and len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"{service.token_env} is set but shorter than {MIN_TOKEN_CHARS} characters; "
                "use a long random token, e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`"
            )
        if token is None and "token_env" in service.model_fields_set:
            raise ConfigError(
                f"service.token_env names {service.token_env}, which is not set: refusing to "
                "start with the API's reads open; set it (16+ characters), or remove token_env "
                "from the config file to run without a token on purpose"
            )
        return cls(
            config_path=config_path,
            token=token,
            audit_log=service.audit_log or config.storage.data_dir / "audit.log",
            max_body_bytes=service.max_body_bytes,
            token_env=service.token_env,
        )


@dataclass
class ServiceState:
    """Everything a request handler may touch, held on `app.state.edgeblur`.

    config_lock serialises read-modify-write of the config (handlers run in worker threads).
    active_streams and stream_limiter are only touched on the event loop thread.
    """

    control: Control
    settings: AppSettings
    audit: AuditLog
    config_lock: threading.Lock = field(default_factory=threading.Lock)
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    active_streams: int = 0
    stream_limiter: anyio.CapacityLimiter | None = None


@dataclass(frozen=True)
class Caller:
    """Who made a request, as recorded in the audit log (never the token itself).

    address: the connected peer. forwarded_for: the X-Forwarded-For header as sent, if any:
    what a reverse proxy on the device reports, and unverified (any client can send it), so it
    is recorded beside the peer address, never instead of it.
    """

    address: str
    forwarded_for: str | None
    token_fingerprint: str | None


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.edgeblur
    return state


def get_control(state: Annotated[ServiceState, Depends(get_state)]) -> Control:
    return state.control


_bearer = HTTPBearer(
    auto_error=False, description="Set EDGEBLUR_TOKEN (or service.token) on the device."
)
_query_token = APIKeyQuery(
    name="token",
    auto_error=False,
    description="Only for snapshot.jpg and stream.mjpg, whose <img> tags cannot send headers.",
)


def _authorise(request: Request, state: ServiceState, presented: str | None, write: bool) -> Caller:
    address = request.client.host if request.client else "unknown"
    forwarded_for = request.headers.get("x-forwarded-for")
    expected = state.settings.token
    if expected is None:
        if write:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"changes are refused because no API token is configured: set "
                f"{state.settings.token_env} (16+ characters) or service.token and restart",
            )
        return Caller(address, forwarded_for, None)
    if presented is None or not hmac.compare_digest(presented.encode(), expected.encode()):
        challenge = "Bearer" if presented is None else 'Bearer error="invalid_token"'
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong bearer token",
            headers={"WWW-Authenticate": challenge},
        )
    return Caller(address, forwarded_for, state.audit.fingerprint(expected))


def _header_token(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return credentials.credentials if credentials else None


def read_access(
    request: Request,
    state: Annotated[ServiceState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    return _authorise(request, state, _header_token(credentials), write=False)


def write_access(
    request: Request,
    state: Annotated[ServiceState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    return _authorise(request, state, _header_token(credentials), write=True)


def media_access(
    request: Request,
    state: Annotated[ServiceState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    query_token: Annotated[str | None, Depends(_query_token)],
) -> Caller:
    presented = _header_token(credentials) or query_token
    return _authorise(request, state, presented, write=False)


StateDep = Annotated[ServiceState, Depends(get_state)]
ControlDep = Annotated[Control, Depends(get_control)]
TokenDep = Annotated[Caller, Depends(read_access)]
WriteTokenDep = Annotated[Caller, Depends(write_access)]
MediaTokenDep = Annotated[Caller, Depends(media_access)]
