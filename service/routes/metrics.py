"""GET /metrics: Prometheus text."""

from __future__ import annotations

import contextlib

import redis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    state = request.app.state
    m = state.metrics
    if state.engine is not None and state.engine.current is not None:
        m.current_version.set(state.engine.current)
    with contextlib.suppress(redis.exceptions.RedisError):  # Redis down: keep the last value
        m.queue_length.set(state.shared.queue.length())
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
