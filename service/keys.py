"""Every Redis key and channel the service uses, in one place.

All keys share a configurable prefix (`FACTPATCH_REDIS_PREFIX`), so several deployments
or test cases can share one Redis without seeing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

STREAM = "edits"  # Redis Stream of job payloads (JSON)
GROUP = "workers"  # consumer group reading STREAM
JOB = "job:"  # hash per job: status, version, edits, results, error
EDIT = "edit:"  # hash per edit: job_id, prompt, target
IDEMPOTENCY = "idem:"  # JSON {job_id, body_sha256}, with a TTL
CURRENT = "current"  # the served version (string int)
VERSIONS = "versions"  # sorted set of committed versions (score = version)
VERSION_SEQ = "version_seq"  # INCR allocates version numbers; never reused
EVENTS = "events"  # list of JSON events (commit, rollback)
CHANNEL = "channel:current"  # pub/sub: a new `current`
RATE = "rate:"  # fixed-window request counters
WORKER_LEASE = "worker_lease"  # consumer name of the one active worker, with a TTL
PROTECTED = "protected"  # hash: normalised prompt -> JSON {prompt, answer} (service.protected)
PROTECTED_REV = "protected_rev"  # INCR on every change of PROTECTED, in the same transaction
PROTECTED_HELD = "protected_held"  # the revision the active worker has read and holds


@dataclass(frozen=True)
class Keys:
    prefix: str = "factpatch:"

    @property
    def stream(self) -> str:
        return self.prefix + STREAM

    @property
    def group(self) -> str:
        return GROUP

    def job(self, job_id: str) -> str:
        return self.prefix + JOB + job_id

    def edit(self, edit_id: str) -> str:
        return self.prefix + EDIT + edit_id

    def idempotency(self, key: str) -> str:
        return self.prefix + IDEMPOTENCY + key

    @property
    def current(self) -> str:
        return self.prefix + CURRENT

    @property
    def versions(self) -> str:
        return self.prefix + VERSIONS

    @property
    def version_seq(self) -> str:
        return self.prefix + VERSION_SEQ

    @property
    def events(self) -> str:
        return self.prefix + EVENTS

    @property
    def channel(self) -> str:
        return self.prefix + CHANNEL

    @property
    def worker_lease(self) -> str:
        return self.prefix + WORKER_LEASE

    @property
    def protected(self) -> str:
        return self.prefix + PROTECTED

    @property
    def protected_rev(self) -> str:
        return self.prefix + PROTECTED_REV

    @property
    def protected_held(self) -> str:
        return self.prefix + PROTECTED_HELD

    def rate(self, client: str, window: int) -> str:
        return f"{self.prefix}{RATE}{client}:{window}"
