"""The edit worker: coalesce queued jobs into one MALMEN batch, write a version, commit.

Exactly-once: the version is written first (immutable, under a fresh number), then ONE
Lua script compare-and-sets `current` from the parent, marks the jobs applied and records
the version; only then are the stream entries acknowledged.  A crash before the commit
leaves the old version serving and the entries pending (a new worker reclaims them with
XAUTOCLAIM and redoes them); a redelivered job that is already applied is only acked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from contextlib import nullcontext
from typing import Any

import redis

from editor_core.apply import install_weights as install
from service.editing import EditBackend, StoredEdit
from service.engine import SamplingParams, decode_loop, edited_tensors
from service.protected import ProtectedList
from service.queue import Job, JobQueue
from service.settings import Settings
from service.versions import Manifest, VersionStore

log = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 5
REDIS_RETRY_S = 1.0
Entry = tuple[str, Job]


class JobRejected(Exception):
    """One job cannot be applied (e.g. withdrawing an edit that is not live)."""


_LEASE_LUA = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if owner then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Worker:
    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        store: VersionStore,
        backend: EditBackend,
        base_sha256: str,
        metrics: Any = None,
        protected: ProtectedList | None = None,
    ):
        self.s = settings
        self.queue = queue
        self.store = store
        self.backend = backend
        self.adapter = backend.adapter
        self.base_sha256 = base_sha256
        self.metrics = metrics
        self.protected = protected
        self.protected_revision: int | None = None  # of the list the backend holds
        self.base_tensors = edited_tensors(self.adapter)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    # -- loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        log.info("worker %s started (%s mode)", self.consumer, self.s.edit_mode)
        values = getattr(getattr(self.backend.editor, "config", None), "values", None)
        if self.s.edit_mode == "sequential" and values == "optimise":
            log.warning(
                "sequential mode with the value-optimising editor: each batch is edited on "
                "top of the last and the model degrades fast (first batch of 64: ES 0.98 -> "
                "0.33 after 256 edits, 0 after 512; docs/results.md); joint mode re-spreads "
                "all live edits instead"
            )
        renewer = threading.Thread(target=self._renew_lease, args=(stop,), daemon=True)
        renewer.start()
        waiting = False
        try:
            while not stop.is_set():
                try:
                    if not self.hold_lease():
                        if not waiting:
                            log.info("worker %s: another worker holds the lease", self.consumer)
                        waiting = True
                        stop.wait(self.s.worker_lease_ms / 3000)
                        continue
                    waiting = False
                    self.queue.ensure_group()
                    self.step()
                except redis.exceptions.RedisError as exc:
                    log.warning("worker: Redis error (%s); retrying", exc)
                    stop.wait(REDIS_RETRY_S)
        finally:
            self.release_lease()
        log.info("worker %s stopped", self.consumer)

    # -- one active worker ---------------------------------------------------------------
    # Several workers stay *correct* without it (the commit is a compare-and-set of
    # `current`), but they would compete for jobs and redo each other's solves.
    def hold_lease(self) -> bool:
        """Take or renew the worker lease; True while this worker holds it."""
        held = self.queue.redis.eval(
            _LEASE_LUA, 1, self.queue.keys.worker_lease, self.consumer, self.s.worker_lease_ms
        )
        return bool(held)

    def release_lease(self) -> None:
        with contextlib.suppress(redis.exceptions.RedisError):  # else it expires by itself
            self.queue.redis.eval(_RELEASE_LUA, 1, self.queue.keys.worker_lease, self.consumer)

    def _renew_lease(self, stop: threading.Event) -> None:
        while not stop.wait(self.s.worker_lease_ms / 3000):
            try:
                self.hold_lease()
            except redis.exceptions.RedisError:
                continue

    def step(self) -> int:
        """Take one batch (reclaimed or new) and process it; returns jobs handled."""
        entries = self.queue.claim_stale(
            self.consumer, self.s.worker_claim_idle_ms, self.s.worker_max_batch
        )
        if not entries:
            entries = self.queue.read(
                self.consumer, self.s.worker_max_batch, self.s.worker_block_ms
            )
        if not entries:
            self.sync_protected()  # a changed list is read while idle, not when edits wait
            return 0
        deadline = time.monotonic() + self.s.worker_linger_ms / 1000
        while _n_edits(entries) < self.s.worker_max_batch:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            more = self.queue.read(self.consumer, self.s.worker_max_batch, left_ms)
            entries += more
        for chunk in _chunks(entries, self.s.worker_max_batch):
            self.process(chunk)
        return len(entries)

    def process(self, entries: list[Entry]) -> None:
        done = [
            eid for eid, job in entries if self.queue.status(job.job_id) in ("applied", "failed")
        ]
        self.queue.ack(done)
        todo = [(eid, job) for eid, job in entries if eid not in done]
        if not todo:
            return
        try:
            self.apply(todo)
        except redis.exceptions.RedisError:
            raise  # jobs stay pending; redone after reconnecting
        except Exception as exc:
            if len(todo) > 1:  # find the job that breaks the batch; apply the others
                log.warning(
                    "batch of %d jobs failed (%s); retrying them one by one", len(todo), exc
                )
                for entry in todo:
                    self.process([entry])
                return
            eid, job = todo[0]
            log.exception("job %s failed", job.job_id)
            self.queue.mark_failed(job.job_id, f"{type(exc).__name__}: {exc}")
            self.queue.ack([eid])
            self._count("failed")

    # -- one batch ----------------------------------------------------------------------
    def apply(self, todo: list[Entry]) -> None:
        self.sync_protected()
        todo = self._reject_protected(todo)
        if not todo:
            return
        for _, job in todo:
            self.queue.mark(job.job_id, status="running")
        adds = [e for _, job in todo if job.kind == "add" for e in job.edits]
        withdraw = {e["edit_id"] for _, job in todo if job.kind == "withdraw" for e in job.edits}
        new: list[StoredEdit] | None = None
        for _attempt in range(MAX_COMMIT_ATTEMPTS):
            parent = self.store.current()
            pm = self.store.manifest(parent)
            todo = self._reject_withdrawals(todo, pm, withdraw)
            if not todo:
                return
            withdraw &= set(pm.live_edit_ids)
            if self.s.edit_mode == "joint":
                if new is None:
                    n_live = len(set(pm.live_edit_ids) - withdraw) + len(adds)
                    new = self.backend.compute(adds, n_live) if adds else []  # base weights held
                    for e in new:
                        self.backend.rows.save(e)
                tensors, live, metrics = self.backend.joint(pm.live_edit_ids, new, withdraw)
            else:
                _, parent_tensors = self.store.load(parent)
                install(self.adapter, parent_tensors)
                try:  # rows, and the solve's checks of protected prompts, on the parent
                    new = self.backend.compute(adds)
                    tensors, live, metrics = self.backend.sequential(
                        new, parent_tensors, pm.live_edit_ids
                    )
                finally:
                    install(self.adapter, self.base_tensors)
            manifest = Manifest(
                version=self.store.next_number(),
                parent=parent,
                created=time.time(),
                mode=self.s.edit_mode,
                base_model_sha256=self.base_sha256,
                editor_sha256=self.backend.editor_sha256,
                edit_ids=[e.edit_id for e in new],
                live_edit_ids=live,
                withdrawn_edit_ids=sorted(withdraw),
                job_ids=[j.job_id for _, j in todo],
                metrics=metrics,
            )
            self.store.write(manifest, tensors)
            self._fault("after_write")
            result = self.store.commit(manifest, [self.queue.keys.job(j.job_id) for _, j in todo])
            if result == 1:
                break
            if result == -1:  # a redelivered job was applied meanwhile: drop it, redo the rest
                self.process(todo)
                return
            log.info("current moved during the solve (parent %s); redoing", parent)
        else:
            raise RuntimeError("could not commit: `current` kept moving")
        self._fault("after_commit")
        self.queue.ack([eid for eid, _ in todo])
        self._count("applied", len(todo), version=manifest.version)
        log.info(
            "version %d: %d new edits, %d live (jobs %d)",
            manifest.version,
            len(new),
            len(live),
            len(todo),
        )
        self.verify(todo, tensors, new)

    def sync_protected(self) -> None:
        """Hold the protected list as it is now (`service.protected`): re-read it, and the
        unedited model's answers, when its revision moved.  Call with the base weights
        installed."""
        if self.protected is None or self.protected.revision() == self.protected_revision:
            return
        rev, prompts = self.protected.snapshot()
        try:
            self.backend.protect(prompts, check=self.s.protect_check, revision=rev)
        except Exception:
            # a list the model cannot read must not fail every edit: keep holding the list
            # read before, and try again when the list changes
            log.exception(
                "could not read protected list revision %d; still holding %s",
                rev,
                self.protected_revision,
            )
            self.protected_revision = rev
            return
        self.protected_revision = rev
        self.protected.mark_held(rev)
        if self.metrics is not None:
            self.metrics.protected_prompts.set(len(prompts))

    def _reject_protected(self, todo: list[Entry]) -> list[Entry]:
        """Fail the jobs that edit a protected prompt: it was protected after the job was
        accepted, and the solve would hold the very answer the edit changes."""
        if self.protected is None or self.protected_revision == 0:
            return todo
        keep = []
        for eid, job in todo:
            hit = self.protected.which(e["prompt"] for e in job.edits if job.kind == "add")
            if not hit:
                keep.append((eid, job))
                continue
            self.queue.mark_failed(
                job.job_id,
                f"prompt_is_protected: {sorted(hit)[0][:60]!r} was protected after the job "
                "was accepted (GET /protected); take it off the list and send the edit again",
            )
            self.queue.ack([eid])
            self._count("failed")
        return keep

    def _reject_withdrawals(
        self, todo: list[Entry], pm: Manifest, withdraw: set[str]
    ) -> list[Entry]:
        keep = []
        for eid, job in todo:
            if job.kind == "withdraw" and self.s.edit_mode != "joint":
                self.queue.mark_failed(job.job_id, "withdrawing an edit needs joint mode")
            elif job.kind == "withdraw" and not set(job.edit_ids) & set(pm.live_edit_ids):
                self.queue.mark_failed(
                    job.job_id, f"edit {job.edit_ids[0]} is not live in version {pm.version}"
                )
            else:
                keep.append((eid, job))
                continue
            self.queue.ack([eid])
        return keep

    # -- verification -------------------------------------------------------------------
    def verify(self, todo: list[Entry], tensors: dict[str, Any], new: list[StoredEdit]) -> None:
        """Greedy continuation of each new prompt on the new weights: starts with target?
        And, with protected prompts to check, how many of them keep the base answer."""
        from editor_core.encoding import tokenize_pair

        tok = self.backend.loaded.tokenizer
        model = self.backend.loaded.model
        by_id: dict[str, dict[str, Any]] = {}
        install(self.adapter, tensors)
        try:
            for e in new:
                prompt_ids, target_ids = tokenize_pair(tok, e.prompt, e.target)
                params = SamplingParams(len(target_ids) + self.s.verify_extra_tokens)
                *_, last = decode_loop(model, tok, prompt_ids, params, nullcontext)
                ok = " ".join(last.text.split()).startswith(" ".join(e.target.split()))
                by_id[e.edit_id] = {
                    "edit_id": e.edit_id,
                    "prompt": e.prompt,
                    "target": e.target,
                    "generated": last.text,
                    "success": ok,
                    "subject": e.subject,
                }
            protected = self.backend.check_protected()  # the deployment's protected prompts
        finally:
            install(self.adapter, self.base_tensors)
        if protected is not None and self.metrics is not None:
            self.metrics.protected_changed.set(protected["checked"] - protected["kept"])
        if protected is not None and protected["kept"] < protected["checked"]:
            log.warning(
                "version changed %d of %d protected prompts' answers (e.g. %r)",
                protected["checked"] - protected["kept"],
                protected["checked"],
                protected["changed"][0],
            )
        for _, job in todo:  # every job, a withdrawal's with no result: `verified` turns true
            results = [by_id[i] for i in job.edit_ids if i in by_id]
            self.queue.set_results(job.job_id, results, protected)

    # -- helpers --------------------------------------------------------------------------
    def _fault(self, point: str) -> None:
        if self.s.fault_inject == point:
            log.error("fault injection: killing the worker at %s", point)
            os.kill(os.getpid(), signal.SIGKILL)

    def _count(self, outcome: str, n: int = 1, version: int | None = None) -> None:
        if self.metrics is not None:
            self.metrics.jobs.labels(outcome).inc(n)
            if version is not None:
                self.metrics.versions_committed.inc()


def _n_edits(entries: list[Entry]) -> int:
    return sum(len(job.edits) for _, job in entries)


def _chunks(entries: list[Entry], max_edits: int) -> list[list[Entry]]:
    out: list[list[Entry]] = [[]]
    for entry in entries:
        if out[-1] and _n_edits(out[-1]) + len(entry[1].edits) > max_edits:
            out.append([])
        out[-1].append(entry)
    return out
