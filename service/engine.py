"""The serving engine: sole owner of the served model's weights.

Generation is a token-by-token loop with a KV cache.  Each step takes the engine lock,
makes sure the edited tensors of *its* version are installed (copying stored tensors in,
never adding deltas), runs one forward pass and releases the lock.  So tensors are swapped
only between steps, a response comes from exactly one version, and a request pinned to an
older version interleaves with others without disturbing them.

The engine follows `current` across processes: a Redis pub/sub listener, plus a check of
`current` at the start of every request.  A version is loaded only after its sha256
checks out; a corrupt one is refused and the engine keeps serving what it had.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
import torch

from editor_core.apply import install_weights as install
from service.versions import VersionCorruptError, VersionNotFoundError, VersionStore

log = logging.getLogger(__name__)

PUBSUB_RETRY_S = 1.0


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Step:
    """One streamed piece of a response; `finish_reason` is set on the last one."""

    delta: str
    text: str
    completion_tokens: int
    finish_reason: str | None = None


def edited_tensors(adapter: Any) -> dict[str, torch.Tensor]:
    """CPU copies of the edited modules' current weights (stored layout, model dtype)."""
    return {n: adapter.weight(n).detach().cpu().clone() for n in adapter.names}


def sample(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    """Next token from (vocab,) logits: argmax at temperature 0, else nucleus sampling."""
    if p.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / p.temperature, dim=-1)
    if p.top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, 0) - sorted_p < p.top_p  # always keeps the first
        probs = torch.zeros_like(probs).scatter(0, idx[keep], sorted_p[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=gen))


def decode_loop(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[int],
    params: SamplingParams,
    step_guard: Any,
) -> Iterator[Step]:
    """Yield text deltas; `step_guard()` is a context manager held around each forward pass."""
    device = next(model.parameters()).device
    gen = None
    if params.temperature > 0:
        gen = torch.Generator().manual_seed(
            params.seed if params.seed is not None else int(time.time_ns() % 2**31)
        )
    # transformers 5 names the KV cache `cache`; older models and versions `past_key_values`.
    accepted = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in accepted else "past_key_values"
    extra = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}  # last position only
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    past = None
    next_input = torch.tensor([prompt_ids], device=device)
    emitted = ""
    hold = max((len(s) for s in params.stop), default=1) - 1
    finish = "length"
    text = ""
    for _ in range(params.max_new_tokens):
        with step_guard(), torch.no_grad():
            out = model(input_ids=next_input, use_cache=True, **{cache_kw: past}, **extra)
        past = out.get("cache", out.get("past_key_values"))
        token = sample(out.logits[0, -1], params, gen)
        if eos is not None and token == eos:
            finish = "stop"
            break
        ids.append(token)
        next_input = torch.tensor([[token]], device=device)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((i for s in params.stop if s and (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
            break
        safe = len(text) - hold if params.stop else len(text)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the rest
            safe = min(safe, len(text) - 1)
        if safe > len(emitted):
            delta, emitted = text[len(emitted) : safe], text[:safe]
            yield Step(delta, emitted, len(ids))
    text = text if ids else ""
    yield Step(text[len(emitted) :], text, len(ids), finish)


class Engine:
    def __init__(self, loaded: Any, store: VersionStore, cache_size: int, poll_s: float):
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.adapter = loaded.adapter
        self.store = store
        self.cache_size = cache_size
        self.poll_s = poll_s
        self._lock = threading.Lock()  # held around every forward pass and every swap
        self._load_lock = threading.Lock()
        self._cache: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()
        self._installed = 0  # the model is loaded with the base weights
        self.current: int | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._last_check = 0.0

    # -- versions -------------------------------------------------------------------------
    def tensors(self, version: int) -> dict[str, torch.Tensor]:
        """Verified tensors of a version, from the cache or from disk."""
        with self._load_lock:
            if version in self._cache:
                self._cache.move_to_end(version)
                return self._cache[version]
        _, tensors = self.store.load(version)  # raises VersionCorruptError / NotFound
        with self._load_lock:
            self._cache[version] = tensors
            keep = {self.current, self._installed, version}
            for v in list(self._cache):
                if len(self._cache) <= self.cache_size:
                    break
                if v not in keep:
                    del self._cache[v]
        return tensors

    def sync(self, force: bool = False) -> int | None:
        """Follow `current`; returns the version to serve.  Redis errors keep the last one."""
        try:
            latest = self.store.current()
        except redis.exceptions.RedisError as exc:
            log.debug("cannot read current (%s); serving %s", exc, self.current)
            return self.current
        if latest != self.current or force:
            try:
                self.tensors(latest)
            except (VersionCorruptError, VersionNotFoundError) as exc:
                self.error = f"current version {latest} refused: {exc}"
                log.error(self.error)
                return self.current
            log.info("now serving version %s (was %s)", latest, self.current)
            self.current, self.error = latest, None
        return self.current

    @property
    def ready(self) -> bool:
        return self.current is not None and self.error is None

    def _install(self, version: int) -> None:
        if self._installed != version:
            install(self.adapter, self.tensors(version))
            self._installed = version

    def warm(self) -> None:
        """Install the current version now, so the first request does not pay for it."""
        if self.current is not None:
            with self._lock:
                self._install(self.current)

    # -- pub/sub ------------------------------------------------------------------------
    def follow(self, client: redis.Redis, channel: str) -> threading.Thread:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    pubsub = client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(channel)
                    self.sync()
                    while not self._stop.is_set():
                        msg = pubsub.get_message(timeout=self.poll_s)
                        if msg is not None or time.monotonic() - self._last_check > self.poll_s:
                            self._last_check = time.monotonic()
                            self.sync()
                            self.warm()
                    pubsub.close()
                except redis.exceptions.RedisError as exc:
                    log.warning("pub/sub lost (%s); retrying", exc)
                    self._stop.wait(PUBSUB_RETRY_S)

        thread = threading.Thread(target=run, name="engine-follow", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    # -- generation ---------------------------------------------------------------------
    def encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])

    def stream(
        self, prompt_ids: list[int], params: SamplingParams, version: int | None = None
    ) -> tuple[int, Iterator[Step]]:
        """(version that will answer, steps).  Loads a pinned version before the first step."""
        if version is None:
            served = self.sync()
            if served is None or self.error:
                raise RuntimeError(self.error or "no version loaded yet")
            version = served
        else:
            self.tensors(version)

        fixed = version

        class _Guard:
            def __enter__(g) -> None:
                self._lock.acquire()
                try:
                    self._install(fixed)
                except BaseException:
                    self._lock.release()
                    raise

            def __exit__(g, *exc: object) -> None:
                self._lock.release()

        return version, decode_loop(self.model, self.tokenizer, prompt_ids, params, _Guard)
