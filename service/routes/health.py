"""GET /health/live, GET /health/ready."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.errors import error_response
from service.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health/live", response_model=Health)
def live() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get(
    "/health/ready",
    response_model=Health,
    responses={503: {"description": "not ready (error body)"}},
)
def ready(request: Request) -> Health | JSONResponse:
    """Model loaded and the current version loaded and verified (503 otherwise)."""
    state = request.app.state
    engine = state.engine
    if engine is not None:
        engine.sync()
    if engine is None or not engine.ready:
        detail = (engine.error if engine else None) or state.startup_error or "loading"
        return error_response(
            "not_ready", f"not ready: {detail}", None, state.settings.retry_after_s
        )
    return Health(status="ok", version=engine.current)
