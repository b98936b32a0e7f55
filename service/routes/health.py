"""Probes for orchestrators: liveness and readiness, no token needed.

Without the token, /readyz says which cameras are ready and, for the others, their state in
general terms ("camera is reconnecting"); the reasons (error texts that may name addresses
and paths) are shown only to a caller with the token, or to anyone when no token is set and
reads are open anyway."""

from __future__ import annotations

import hmac
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from edge.config import mask_credentials
from service.deps import ControlDep, ServiceState, StateDep
from service.schemas import NotReadyCamera, Readiness

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive and serving HTTP")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Every enabled camera delivers redacted frames with its model loaded",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Some enabled camera is not ready."}},
)
def readyz(request: Request, control: ControlDep, state: StateDep) -> JSONResponse:
    detailed = _may_see_details(request, state)
    try:
        statuses = control.health()
        enabled = [camera.id for camera in control.config().cameras if camera.enabled]
    except Exception as error:  # a probe answers "not ready"; the cause goes to the log
        logger.exception("readiness check failed")
        body = Readiness(
            status="not ready",
            ready=[],
            not_ready=[
                NotReadyCamera(
                    id="*",
                    state="unknown",
                    reason=mask_credentials(f"health check failed: {error}")
                    if detailed
                    else "health check failed",
                )
            ],
        )
        return JSONResponse(body.model_dump(), status_code=503)

    reported = {status.id: status for status in statuses}
    ready: list[str] = []
    not_ready: list[NotReadyCamera] = []
    # Cameras the config enables but the pipeline does not report (yet) are not ready either.
    for camera_id in [*enabled, *(s.id for s in statuses if s.enabled and s.id not in enabled)]:
        status = reported.get(camera_id)
        if status is None:
            not_ready.append(
                NotReadyCamera(id=camera_id, state="unknown", reason="no status from pipeline")
            )
        elif status.ready:
            ready.append(camera_id)
        else:
            general = f"camera is {status.state}"
            reason = (mask_credentials(status.reason) or general) if detailed else general
            not_ready.append(NotReadyCamera(id=camera_id, state=status.state, reason=reason))
    body = Readiness(status="not ready" if not_ready else "ready", ready=ready, not_ready=not_ready)
    return JSONResponse(body.model_dump(), status_code=503 if not_ready else 200)


def _may_see_details(request: Request, state: ServiceState) -> bool:
    """The caller sent the token (or none is configured). A probe never gets a 401: a wrong
    or missing token just gets the general answer."""
    expected = state.settings.token
    if expected is None:
        return True
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode("utf-8", "replace"), expected.encode("utf-8", "replace")
    )
