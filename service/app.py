"""The HTTP control plane: `create_app(control, settings)` builds it; nothing runs at import.

Routes (access rules in service.deps):
  GET  /healthz, /readyz                       probes, no token
  GET  /metrics                                Prometheus text
  GET  /api/config, /api/config/schema, /api/config/audit
  PUT  /api/config, PATCH /api/config          need a configured token (see service.routes.config)
  GET  /api/cameras, /api/cameras/{id}/snapshot.jpg, /api/cameras/{id}/stream.mjpg
  GET  /docs, /docs-assets/*                    OpenAPI UI, served from the installed
                                               swagger-ui-bundle package (no CDN)
  GET  /, /static/*                            the operator's dashboard: static files, no token
                                               (its data comes from the API above, with one)
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from edge.control import Control
from service.audit import AuditLog
from service.deps import AppSettings, ServiceState
from service.routes import cameras, config, health, metrics

__all__ = ["AppSettings", "create_app"]

STATIC_DIR = Path(__file__).with_name("static")
# The dashboard loads nothing from elsewhere and may not be framed; no-referrer keeps the
# preview URLs' ?token= out of Referer headers.
_DASHBOARD_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def create_app(control: Control, settings: AppSettings) -> FastAPI:
    """The API for one pipeline. `control` is the only way it reaches the cameras."""
    app = FastAPI(
        title="edgeblur",
        summary="Faces are masked on the device before any frame is stored or streamed.",
        version="0.1.0",
        # FastAPI's own pages load Swagger UI and ReDoc from a CDN, unpinned: an edge box
        # may be offline, and a page that runs third-party script beside the token must not
        # depend on someone else's server. /docs is served from the installed package.
        docs_url=None,
        redoc_url=None,
    )
    app.state.edgeblur = ServiceState(
        control=control, settings=settings, audit=AuditLog(settings.audit_log)
    )
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    for router in (health.router, metrics.router, config.router, cameras.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    app.add_api_route("/docs", _swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route("/", _dashboard, methods=["GET"], include_in_schema=False)
    return app


def _swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="edgeblur API",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon-32x32.png",
    )


def _dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers=_DASHBOARD_HEADERS)


async def _request_validation_error(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's default echoes the offending input, which may hold credentials; this does not."""
    assert isinstance(error, RequestValidationError)
    detail = [
        {"loc": list(item["loc"]), "msg": item["msg"], "type": item["type"]}
        for item in error.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


class BodySizeLimit:
    """ASGI middleware: bodies over `max_body_bytes` get 413.

    A declared Content-Length over the limit is refused before anything is read; a chunked (or
    understated) body is counted as it arrives and refused once it passes the limit, so an
    endpoint never holds more than the limit in memory.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_too_large(scope, receive, send, limit)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            # Routes that read through FastAPI turn this into a 413 themselves (it is an
            # HTTPException); this catches readers that let it escape.
            if started:
                raise
            await _send_too_large(scope, receive, send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# A refused body is read and discarded up to this much before answering: closing a socket with
# unread data makes the kernel reset the connection, and the client would see that instead of
# the 413. Beyond it the connection is simply closed.
DRAIN_MAX_BYTES = 8 * 1024 * 1024


async def _drain(receive: Receive) -> None:
    drained = 0
    while drained <= DRAIN_MAX_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    await _drain(receive)
    detail = {"detail": f"request body is larger than {limit} bytes"}
    # Connection: close, so the server need not read the rest of a body past DRAIN_MAX_BYTES.
    response = JSONResponse(detail, status_code=413, headers={"Connection": "close"})
    await response(scope, receive, send)

