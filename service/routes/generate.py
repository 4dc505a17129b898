"""POST /generate: a continuation from one version (current, or a pinned one)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

from fastapi import APIRouter
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from service.engine import Engine, SamplingParams, Step
from service.errors import ApiError
from service.metrics import Metrics
from service.routes.deps import EngineDep, MetricsDep, SettingsDep
from service.schemas import FinishReason, GenerateRequest, GenerateResponse
from service.security import Generator
from service.validation import validate_generate, validate_prompt_tokens
from service.versions import VersionCorruptError, VersionNotFoundError

router = APIRouter(tags=["generate"])


def _start(engine: Engine, body: GenerateRequest, max_new: int) -> tuple[int, int, Iterator[Step]]:
    prompt_ids = engine.encode(body.prompt)
    params = SamplingParams(
        max_new, body.temperature, body.top_p, tuple(body.stop or ()), body.seed
    )
    try:
        version, steps = engine.stream(prompt_ids, params, body.version)
    except VersionNotFoundError as exc:
        raise ApiError("version_not_found", f"no version {body.version}") from exc
    except VersionCorruptError as exc:
        raise ApiError("version_corrupt", str(exc)) from exc
    except RuntimeError as exc:
        raise ApiError("current_version_unavailable", str(exc)) from exc
    return version, len(prompt_ids), steps


def _check_pin(engine: Engine, version: int | None) -> None:
    if version is not None and version not in engine.store.committed():
        raise ApiError("version_not_found", f"no committed version {version}")


@router.post("/generate", response_model=GenerateResponse)
def generate(
    body: GenerateRequest,
    _who: Generator,
    settings: SettingsDep,
    engine: EngineDep,
    metrics: MetricsDep,
) -> GenerateResponse | EventSourceResponse:
    """Continue `prompt`; the response names the version that produced it."""
    max_new = validate_generate(body, settings)
    validate_prompt_tokens(len(engine.encode(body.prompt)), settings)
    _check_pin(engine, body.version)
    version, n_prompt, steps = _start(engine, body, max_new)
    if body.stream:
        return EventSourceResponse(_events(version, n_prompt, steps, metrics))
    *_, last = steps
    metrics.tokens.inc(last.completion_tokens)
    return GenerateResponse(
        text=last.text,
        version=version,
        prompt_tokens=n_prompt,
        completion_tokens=last.completion_tokens,
        finish_reason=_finish(last),
    )


def _finish(step: Step) -> FinishReason:
    return "stop" if step.finish_reason == "stop" else "length"


async def _events(
    version: int, n_prompt: int, steps: Iterator[Step], metrics: Metrics
) -> AsyncIterator[dict[str, str]]:
    """SSE: `token` events with text deltas, then one `done` event with the full response."""
    sentinel = object()
    while True:
        step = await run_in_threadpool(next, steps, sentinel)
        if step is sentinel:
            return
        assert isinstance(step, Step)
        if step.delta:
            yield {"event": "token", "data": json.dumps({"text": step.delta, "version": version})}
        if step.finish_reason is not None:
            metrics.tokens.inc(step.completion_tokens)
            done = GenerateResponse(
                text=step.text,
                version=version,
                prompt_tokens=n_prompt,
                completion_tokens=step.completion_tokens,
                finish_reason=_finish(step),
            )
            yield {"event": "done", "data": done.model_dump_json()}
            return
