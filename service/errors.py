"""Named error types and the one table that maps them to HTTP status codes.

Every error response is `{"error": {"type": ..., "message": ...}}`.  Handlers raise
`ApiError(type, message)`; the status comes from `STATUS`, never from the raiser.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# type -> HTTP status.  Add a type here before raising it.
STATUS: dict[str, int] = {
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "job_not_found": 404,
    "edit_not_found": 404,
    "version_not_found": 404,
    "method_not_allowed": 405,
    "idempotency_conflict": 409,
    "edit_not_live": 409,
    "version_corrupt": 409,
    "unsupported_in_mode": 409,
    "prompt_is_protected": 409,
    "prompt_is_edited": 409,
    "protected_list_full": 409,
    "body_too_large": 413,
    "validation_error": 422,
    "too_many_edits": 422,
    "empty_text": 422,
    "text_too_long": 422,
    "too_many_tokens": 422,
    "conflicting_targets": 422,
    "subject_not_in_prompt": 422,
    "keep_without_subject": 422,
    "subject_not_in_keep_prompt": 422,
    "keep_prompt_is_edited": 422,
    "too_many_prompts": 422,
    "conflicting_answers": 422,
    "max_new_tokens_too_large": 422,
    "too_many_stop_sequences": 422,
    "bad_idempotency_key": 422,
    "rate_limited": 429,
    "queue_full": 429,
    "internal_error": 500,
    "not_ready": 503,
    "redis_unavailable": 503,
    "current_version_unavailable": 503,
}
RETRY_AFTER_STATUSES = {429, 503}


class ApiError(Exception):
    def __init__(self, type: str, message: str, retry_after: int | None = None):
        if type not in STATUS:
            raise KeyError(f"unknown error type {type!r}; add it to errors.STATUS")
        super().__init__(message)
        self.type = type
        self.message = message
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return STATUS[self.type]


def error_response(
    type: str, message: str, retry_after: int | None = None, default_retry: int = 2
) -> JSONResponse:
    status = STATUS[type]
    headers = {}
    if status in RETRY_AFTER_STATUSES:
        headers["Retry-After"] = str(retry_after or default_retry)
    return JSONResponse(
        {"error": {"type": type, "message": message}}, status_code=status, headers=headers
    )


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_handlers(app: FastAPI) -> None:
    """Route every exception to the one error shape."""

    def retry(request: Request) -> int:
        return int(request.app.state.settings.retry_after_s)

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.type, exc.message, exc.retry_after, retry(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response("validation_error", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, ApiError):  # raised while FastAPI read the body
            cause = exc.__cause__
            return error_response(cause.type, cause.message, cause.retry_after, retry(request))
        kind = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, "validation_error" if exc.status_code < 500 else "internal_error"
        )
        return error_response(kind, str(exc.detail))

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def _redis(request: Request, exc: Exception) -> JSONResponse:
        log.warning("Redis unavailable: %s", exc)
        return error_response(
            "redis_unavailable", "the queue (Redis) is unavailable", None, retry(request)
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response("internal_error", "internal error (logged)")
