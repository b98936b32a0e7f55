"""Prometheus scrape endpoint: the pipeline's own exposition, passed through untouched, then
the service's counters (service.counters)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.deps import ControlDep, StateDep, TokenDep

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus text exposition (needs the bearer token, like any scrape config can send)",
    response_class=Response,
    responses={200: {"content": {PROMETHEUS_TEXT: {}}}},
)
def metrics(control: ControlDep, state: StateDep, _caller: TokenDep) -> Response:
    pipeline = control.metrics()
    if pipeline and not pipeline.endswith(b"\n"):
        pipeline += b"\n"
    return Response(pipeline + state.metrics.exposition(), media_type=PROMETHEUS_TEXT)
