"""What the API and the worker both start from: settings → Redis, model, version store."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from service.keys import Keys
from service.protected import ProtectedList
from service.queue import JobQueue
from service.redis_client import connect
from service.settings import Settings
from service.versions import VersionStore, tensors_sha256

log = logging.getLogger(__name__)


@dataclass
class Shared:
    settings: Settings
    keys: Keys
    redis: redis.Redis
    store: VersionStore
    queue: JobQueue
    protected: ProtectedList


def open_shared(settings: Settings, redis_url: str) -> Shared:
    """Redis client (no connection yet), version store and queue."""
    keys = Keys(settings.redis_prefix)
    client = connect(redis_url, settings.redis_timeout_s)
    store = VersionStore(settings.versions_dir, client, keys)
    queue = JobQueue(client, keys, settings.queue_max_length, settings.idempotency_ttl_s)
    return Shared(settings, keys, client, store, queue, ProtectedList(client, keys))


def editor_layers(settings: Settings) -> tuple[int, ...] | None:
    """The layers of the configured editor checkpoint (the shipped one for the default
    model), so FACTPATCH_LAYERS is needed only to override them."""
    from editor_core.checkpoint import checkpoint_layers
    from editor_core.loading import DEFAULT_MODEL
    from service.editing import SHIPPED_EDITOR

    if settings.editor:
        return checkpoint_layers(Path(settings.editor))
    return checkpoint_layers(SHIPPED_EDITOR) if settings.model == DEFAULT_MODEL else None


def load_served_model(settings: Settings) -> Any:
    from editor_core.config import ModelSpec
    from editor_core.loading import load_model

    spec = ModelSpec(
        source=settings.model,
        layers=settings.layer_tuple or editor_layers(settings),
        module_template=settings.module_template,
        module_kind=settings.module_kind,
        layers_path=settings.layers_path,
        device=settings.device,
        dtype=settings.dtype,
    )
    loaded = load_model(spec, data_dir=settings.data_dir)
    log.info(
        "model %s on %s (%s), edited %s",
        loaded.path,
        loaded.model.device,
        loaded.model.dtype,
        loaded.adapter.names,
    )
    return loaded


def bootstrap(shared: Shared, loaded: Any) -> str:
    """Write version 0 if needed and reconcile Redis with disk; returns the base sha256."""
    from service.engine import edited_tensors

    base = edited_tensors(loaded.adapter)
    sha = tensors_sha256(base)
    shared.store.bootstrap(base, sha)
    shared.queue.ensure_group()
    return sha


def seed_protected(shared: Shared) -> None:
    """Add FACTPATCH_PROTECT's prompts that are not on the protected list yet (by the API
    at start-up, before it accepts edits: every edit comes through an API process)."""
    path = shared.settings.protect
    if path is None:
        return
    from editor_core.data import read_locality

    prompts = read_locality(path)
    change = shared.protected.add(prompts, only_new=True)
    log.info(
        "protected list: %d of %d prompts from %s were new; %d on the list (revision %d)",
        change.changed,
        len(prompts),
        path,
        change.count,
        change.revision,
    )
