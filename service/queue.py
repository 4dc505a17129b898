"""The edit queue: a Redis Stream read through a consumer group, plus one hash per job.

A job is `queued → running → applied | failed`.  Payloads are JSON only.  Enqueueing is
one Lua script (idempotency check, queue bound, job hash, stream entry, edit records), so
a 202 is only sent once everything a worker needs is in Redis.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import redis

from service.keys import Keys

log = logging.getLogger(__name__)

PAYLOAD_FIELD = "job"

# KEYS: stream, job, idempotency (or ''), edit keys...
# ARGV: job json, idempotency value, idempotency ttl, max queue length, now
_ENQUEUE = """
if KEYS[3] ~= '' then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {'existing', existing} end
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[4]) then return {'full', ''} end
local job = cjson.decode(ARGV[1])
redis.call('HSET', KEYS[2], 'job_id', job.job_id, 'kind', job.kind, 'status', 'queued',
  'edit_ids', cjson.encode(job.edit_ids), 'edits', cjson.encode(job.edits),
  'results', '[]', 'version', '', 'error', '', 'created', ARGV[5], 'updated', ARGV[5])
redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
if job.kind == 'add' then
  for i = 4, #KEYS do
    local e = job.edits[i - 3]
    redis.call('HSET', KEYS[i], 'edit_id', e.edit_id, 'job_id', job.job_id,
      'prompt', e.prompt, 'target', e.target, 'subject', e.subject or '')
    -- lists as JSON, only when sent (cjson writes an empty array as {})
    if e.keep and #e.keep > 0 then redis.call('HSET', KEYS[i], 'keep', cjson.encode(e.keep)) end
    if e.paraphrases and #e.paraphrases > 0 then
      redis.call('HSET', KEYS[i], 'paraphrases', cjson.encode(e.paraphrases))
    end
  end
end
if KEYS[3] ~= '' then redis.call('SET', KEYS[3], ARGV[2], 'EX', tonumber(ARGV[3])) end
return {'ok', ''}
"""


class QueueFullError(Exception):
    pass


class IdempotencyConflictError(Exception):
    pass


@dataclass
class Job:
    job_id: str
    kind: Literal["add", "withdraw"]
    # add: {edit_id, prompt, target, subject[, keep, paraphrases: lists]}; withdraw: {edit_id}
    edits: list[dict[str, Any]]
    edit_ids: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "job_id": self.job_id,
                "kind": self.kind,
                "edits": self.edits,
                "edit_ids": self.edit_ids,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Job:
        d = json.loads(text)
        return cls(d["job_id"], d["kind"], d["edits"], d["edit_ids"])


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class JobQueue:
    def __init__(self, client: redis.Redis, keys: Keys, max_length: int, idempotency_ttl_s: int):
        self.redis = client
        self.keys = keys
        self.max_length = max_length
        self.idempotency_ttl_s = idempotency_ttl_s
        self._enqueue = client.register_script(_ENQUEUE)

    # -- producer side ------------------------------------------------------------------
    def enqueue(self, job: Job, idempotency: tuple[str, str] | None = None) -> tuple[str, bool]:
        """(job_id, created).  idempotency: (key, body sha256); a replay returns the first job."""
        idem_key = self.keys.idempotency(idempotency[0]) if idempotency else ""
        idem_value = (
            json.dumps({"job_id": job.job_id, "body": idempotency[1]}) if idempotency else ""
        )
        edit_keys = [self.keys.edit(e["edit_id"]) for e in job.edits] if job.kind == "add" else []
        result = cast(
            list[Any],
            self._enqueue(
                keys=[self.keys.stream, self.keys.job(job.job_id), idem_key, *edit_keys],
                args=[
                    job.to_json(),
                    idem_value,
                    self.idempotency_ttl_s,
                    self.max_length,
                    time.time(),
                ],
            ),
        )
        status = result[0].decode() if isinstance(result[0], bytes) else result[0]
        if status == "full":
            raise QueueFullError(f"the edit queue holds {self.max_length} jobs")
        if status == "existing":
            first = json.loads(result[1])
            if idempotency is None or first["body"] != idempotency[1]:
                raise IdempotencyConflictError(
                    "this Idempotency-Key was used with a different request body"
                )
            return first["job_id"], False
        return job.job_id, True

    def length(self) -> int:
        return int(cast(Any, self.redis.xlen(self.keys.stream)))

    # -- records ------------------------------------------------------------------------
    def job(self, job_id: str) -> dict[str, Any] | None:
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.job(job_id)))
        if not raw:
            return None
        d = {k.decode(): v.decode() for k, v in raw.items()}
        return {
            "job_id": d["job_id"],
            "kind": d["kind"],
            "status": d["status"],
            "version": int(d["version"]) if d.get("version") else None,
            "edit_ids": json.loads(d["edit_ids"]),
            "edits": json.loads(d["edits"]),
            "results": json.loads(d.get("results") or "[]"),
            "verified": d.get("verified") == "1",
            "protected": json.loads(d["protected"]) if d.get("protected") else None,
            "error": d.get("error") or None,
            "created": float(d["created"]),
            "updated": float(d["updated"]),
        }

    def status(self, job_id: str) -> str | None:
        value = self.redis.hget(self.keys.job(job_id), "status")
        return cast(bytes, value).decode() if value is not None else None

    def edit(self, edit_id: str) -> dict[str, Any] | None:
        """An edit's record: edit_id, job_id, prompt, target, subject ('' when none) and
        its keep / paraphrases lists ([] when none were sent)."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.edit(edit_id)))
        if not raw:
            return None
        rec: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        for name in ("keep", "paraphrases"):
            rec[name] = json.loads(rec[name]) if rec.get(name) else []
        return rec

    def edit_prompts(self, edit_ids: list[str]) -> list[str]:
        """The prompts and paraphrases of the edits (those with a record left), in one round
        trip."""
        pipe = self.redis.pipeline(transaction=False)
        for edit_id in edit_ids:
            pipe.hmget(self.keys.edit(edit_id), ["prompt", "paraphrases"])
        out: list[str] = []
        for prompt, paraphrases in cast(list[Any], pipe.execute()):
            if prompt is not None:
                out.append(prompt.decode())
            if paraphrases:
                out += json.loads(paraphrases)
        return out

    def mark(self, job_id: str, **fields: str) -> None:
        mapping = dict(fields)
        mapping["updated"] = str(time.time())
        self.redis.hset(self.keys.job(job_id), mapping=cast(Any, mapping))

    def mark_failed(self, job_id: str, message: str) -> None:
        self.mark(job_id, status="failed", error=message[:2000])

    def set_results(
        self,
        job_id: str,
        results: list[dict[str, Any]],
        protected: dict[str, Any] | None = None,
    ) -> None:
        """The worker's check of the job's edits on the new weights (and of the protected
        prompts, when there are any): the job is `verified`."""
        fields = {"results": json.dumps(results), "verified": "1"}
        if protected is not None:
            fields["protected"] = json.dumps(protected)
        self.mark(job_id, **fields)

    # -- consumer side ------------------------------------------------------------------
    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(self.keys.stream, self.keys.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @staticmethod
    def _parse(entries: Any) -> list[tuple[str, Job]]:
        out = []
        for entry_id, fields in entries or []:
            if not fields:  # deleted while pending
                continue
            eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            out.append((eid, Job.from_json(fields[PAYLOAD_FIELD.encode()].decode())))
        return out

    def read(self, consumer: str, count: int, block_ms: int | None) -> list[tuple[str, Job]]:
        resp = self.redis.xreadgroup(
            self.keys.group, consumer, {self.keys.stream: ">"}, count=count, block=block_ms
        )
        entries: list[Any] = []
        for _stream, items in cast(list[Any], resp or []):
            entries.extend(items)
        return self._parse(entries)

    def claim_stale(self, consumer: str, min_idle_ms: int, count: int) -> list[tuple[str, Job]]:
        """Take over entries a dead consumer left pending (XAUTOCLAIM)."""
        resp = cast(
            list[Any],
            self.redis.xautoclaim(
                self.keys.stream, self.keys.group, consumer, min_idle_ms, "0-0", count=count
            ),
        )
        return self._parse(resp[1] if len(resp) > 1 else [])

    def ack(self, entry_ids: list[str]) -> None:
        if not entry_ids:
            return
        pipe = self.redis.pipeline()
        pipe.xack(self.keys.stream, self.keys.group, *entry_ids)
        pipe.xdel(self.keys.stream, *entry_ids)
        pipe.execute()

    def pending(self) -> int:
        info = cast(dict[str, Any], self.redis.xpending(self.keys.stream, self.keys.group))
        return int(info.get("pending", 0))
