"""`factpatch serve` (everything in one process), `factpatch api`, `factpatch worker`.

`serve` runs the API, an edit worker in a background thread (with its own copy of the
model, so editing never touches the served weights) and, when `REDIS_URL` is unset, an
embedded Redis whose append-only data lives under the data dir.  `api` and `worker` are
the split deployment against a real Redis.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from service.settings import Settings, hash_key

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    for name, func, text in (
        ("serve", run_serve, "API + worker + embedded Redis in one process"),
        ("api", run_api, "the HTTP API only (needs REDIS_URL)"),
        ("worker", run_worker, "the edit worker only (needs REDIS_URL)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host", default=None, help="default: FACTPATCH_HOST")
        p.add_argument("--port", type=int, default=None, help="default: FACTPATCH_PORT")
        p.set_defaults(func=func)
    p = sub.add_parser("hash-key", help="print the sha256 to configure for an API key")
    p.add_argument("key")
    p.set_defaults(func=lambda a: print(hash_key(a.key)) or 0)


def _settings(args: argparse.Namespace) -> Settings:
    s = Settings()
    updates = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    s = s.model_copy(update=updates)
    if not s.api_keys and s.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s with no API keys: anyone who reaches it can edit the model", s.host)
    return s


def build_worker(settings: Settings, redis_url: str, metrics: Any = None) -> Any:
    from service.editing import EditBackend, RowStore, load_editor
    from service.runtime import bootstrap, load_served_model, open_shared
    from service.worker import Worker

    shared = open_shared(settings, redis_url)
    loaded = load_served_model(settings)  # the worker's own copy: base weights, always
    base_sha = bootstrap(shared, loaded)
    editor = load_editor(loaded, settings.editor, settings.editor_config)
    if getattr(editor.config, "scope_gate", None) is not None and settings.edit_mode != "joint":
        raise ValueError(f"{settings.editor}: its scope_gate needs FACTPATCH_EDIT_MODE=joint")
    backend = EditBackend(loaded, editor, RowStore(settings.edits_dir))
    return Worker(
        settings, shared.queue, shared.store, backend, base_sha, metrics, shared.protected
    )


def _serve_http(settings: Settings, redis_url: str, with_worker: bool) -> int:
    import uvicorn

    from service.app import create_app

    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start_worker(app: Any) -> None:
        def run() -> None:
            try:
                build_worker(settings, redis_url, app.state.metrics).run(stop)
            except Exception:
                log.exception("the worker thread died")

        t = threading.Thread(target=run, name="worker", daemon=True)
        t.start()
        threads.append(t)

    app = create_app(settings, redis_url, on_ready=start_worker if with_worker else None)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    return 0


def _exit_on_sigterm() -> None:
    """Make SIGTERM unwind the stack (running `finally` blocks) instead of killing outright.

    uvicorn shuts down gracefully on SIGTERM and then re-raises the signal it captured
    (`signal.raise_signal`), which with the default action ends the process at once: the
    worker thread is never joined and the embedded redis-server, a daemon that is not our
    child, outlives us.  With this handler the re-raised signal becomes SystemExit(0) after
    uvicorn's own shutdown, and a SIGTERM before uvicorn starts does the same.  Further
    SIGTERMs are ignored so that they cannot interrupt the clean-up.
    """

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.info("SIGTERM: shutting down")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)


def run_serve(args: argparse.Namespace) -> int:
    _exit_on_sigterm()
    settings = _settings(args)
    embedded = None
    url = settings.redis_url
    if url is None:
        from service.redis_client import EmbeddedRedis

        embedded = EmbeddedRedis(settings.data_dir)
        url = embedded.url
    try:
        return _serve_http(settings, url, with_worker=True)
    finally:
        if embedded is not None:
            embedded.close()


def _require_url(settings: Settings) -> str:
    if not settings.redis_url:
        log.error("REDIS_URL is not set (use `factpatch serve` for an embedded Redis)")
        sys.exit(2)
    return settings.redis_url


def run_api(args: argparse.Namespace) -> int:
    _exit_on_sigterm()
    settings = _settings(args)
    return _serve_http(settings, _require_url(settings), with_worker=False)


def run_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    url = _require_url(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    build_worker(settings, url).run(stop)
    return 0
