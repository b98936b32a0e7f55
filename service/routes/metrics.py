"""Prometheus scrape endpoint: the pipeline's own exposition, passed through untouched."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.deps import ControlDep, TokenDep

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus text exposition (needs the bearer token, like any scrape config can send)",
    response_class=Response,
    responses={200: {"content": {PROMETHEUS_TEXT: {}}}},
)
def metrics(control: ControlDep, _caller: TokenDep) -> Response:
    return Response(control.metrics(), media_type=PROMETHEUS_TEXT)
