"""`Annotated` dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from service.engine import Engine
from service.errors import ApiError
from service.runtime import Shared
from service.settings import Settings


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _shared(request: Request) -> Shared:
    return request.app.state.shared


def _engine(request: Request) -> Engine:
    engine = request.app.state.engine
    if engine is None:
        detail = request.app.state.startup_error or "the model is still loading"
        raise ApiError("not_ready", f"not ready: {detail}")
    return engine


def _metrics(request: Request) -> Any:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
SharedDep = Annotated[Shared, Depends(_shared)]
EngineDep = Annotated[Engine, Depends(_engine)]
MetricsDep = Annotated[Any, Depends(_metrics)]
