"""The deployment's protected prompts, kept in Redis: one list for the API and every worker.

A protected prompt is one whose answer no edit may change (`editor_core.protect`): every
solve holds the ones its edits would change, and every version is checked against all of
them.  The list lives in one Redis hash — the normalised prompt (`joint.normalise_prompt`)
to `{"prompt", "answer"}` — with a revision counter that every change increments in the
same transaction.  The API changes it (`/protected`); a worker compares the revision
before each batch and re-reads the list (and the unedited model's answers) only when it
moved.  `FACTPATCH_PROTECT` seeds it at start-up: the file's prompts that are not on the
list are added, so a prompt removed through the API comes back with the next restart
while the file names it.

The list is policy, not weights: it is not versioned with them.  A change holds from the
next version the worker solves; each version records the sha256 and revision of the list
its solve held (`metrics.protected`), and a rollback serves the old weights as they were.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from editor_core.data.formats import LocalityPrompt
from editor_core.encoding import normalise_prompt
from service.keys import Keys


@dataclass(frozen=True)
class Change:
    """What one change did: prompts added (or removed), the list's size and revision after."""

    changed: int
    count: int
    revision: int


class ListFullError(Exception):
    def __init__(self, count: int, new: int, limit: int):
        super().__init__(
            f"{count} protected prompts + {new} new would pass the limit of {limit}; "
            "remove some first"
        )
        self.count, self.new, self.limit = count, new, limit


class ProtectedList:
    def __init__(self, client: redis.Redis, keys: Keys):
        self.redis = client
        self.keys = keys

    # -- reading --------------------------------------------------------------------------
    def revision(self) -> int:
        return int(cast(Any, self.redis.get(self.keys.protected_rev)) or 0)

    def held_revision(self) -> int | None:
        """The revision the worker holds (None until a worker has read the list)."""
        value = self.redis.get(self.keys.protected_held)
        return int(cast(Any, value)) if value is not None else None

    def mark_held(self, revision: int) -> None:
        self.redis.set(self.keys.protected_held, revision)

    def snapshot(self) -> tuple[int, list[LocalityPrompt]]:
        """(revision, every prompt sorted by its normalised form), read atomically."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(self.keys.protected_rev)
        pipe.hgetall(self.keys.protected)
        rev, entries = cast(list[Any], pipe.execute())
        return int(rev or 0), _prompts(entries)

    def page(self, offset: int, limit: int) -> tuple[int, int, list[LocalityPrompt]]:
        """(revision, count, prompts[offset:offset + limit]) in normalised-prompt order."""
        rev, prompts = self.snapshot()
        return rev, len(prompts), prompts[offset : offset + limit]

    def which(self, prompts: Iterable[str]) -> set[str]:
        """The normalised forms of `prompts` that are protected."""
        norm = list(dict.fromkeys(normalise_prompt(p) for p in prompts))
        if not norm:
            return set()
        found = cast(list[Any], self.redis.hmget(self.keys.protected, norm))
        return {n for n, v in zip(norm, found, strict=True) if v is not None}

    # -- changing ---------------------------------------------------------------------------
    def add(
        self, prompts: Sequence[LocalityPrompt], only_new: bool = False, limit: int = 0
    ) -> Change:
        """Add `prompts` (unless `only_new`, a listed prompt takes the answer given now);
        `changed` counts those that were not on the list.  The revision moves only when
        the list does.  With `limit` > 0, a change that would leave more prompts on the
        list changes nothing and raises `ListFullError`."""
        entries = {normalise_prompt(p.prompt): _entry(p) for p in prompts}
        flat = [x for kv in entries.items() for x in kv]
        keys = (self.keys.protected, self.keys.protected_rev)
        new, count, rev = cast(
            list[Any], self.redis.eval(_ADD_LUA, 2, *keys, int(only_new), limit, *flat)
        )
        if int(new) < 0:
            raise ListFullError(int(count), -int(new), limit)
        return Change(int(new), int(count), int(rev))

    def replace(self, prompts: Sequence[LocalityPrompt]) -> Change:
        """The list becomes exactly `prompts` ([] empties it); `changed` is its new size."""
        entries = {normalise_prompt(p.prompt): _entry(p) for p in prompts}
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.protected)
        if entries:
            pipe.hset(self.keys.protected, mapping=cast(Any, entries))
        pipe.incr(self.keys.protected_rev)
        rev = cast(list[Any], pipe.execute())[-1]
        return Change(len(entries), len(entries), int(rev))

    def remove(self, prompts: Iterable[str]) -> tuple[Change, list[str]]:
        """Take `prompts` off the list; also returns those that were not on it."""
        asked = {normalise_prompt(p): p for p in prompts}
        *gone, count, rev = cast(
            list[Any],
            self.redis.eval(_REMOVE_LUA, 2, self.keys.protected, self.keys.protected_rev, *asked),
        )
        missing = [p for p, d in zip(asked.values(), gone, strict=True) if not int(d)]
        return Change(len(asked) - len(missing), int(count), int(rev)), missing


# KEYS: the hash, the revision; ARGV: only_new, limit (0: none), then field, value pairs.
# Returns {fields that were new, size, revision}, or {-new, size, revision} when the new
# fields would take the size past the limit (nothing written); the revision moves when
# anything changed.
_ADD_LUA = """
local new, moved = 0, 0
for i = 3, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then new = new + 1 end
end
local size = redis.call('HLEN', KEYS[1])
local limit = tonumber(ARGV[2])
if limit > 0 and new > 0 and size + new > limit then
  return {-new, size, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
for i = 3, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  if not old or (ARGV[1] == '0' and old ~= ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    moved = moved + 1
  end
end
local rev = tonumber(redis.call('GET', KEYS[2]) or '0')
if moved > 0 then rev = redis.call('INCR', KEYS[2]) end
return {new, redis.call('HLEN', KEYS[1]), rev}
"""
# KEYS: the hash, the revision; ARGV: fields.  Returns {1 or 0 per field..., size, revision}.
_REMOVE_LUA = """
local out, removed = {}, 0
for i = 1, #ARGV do
  local n = redis.call('HDEL', KEYS[1], ARGV[i])
  out[#out + 1] = n
  removed = removed + n
end
local rev = tonumber(redis.call('GET', KEYS[2]) or '0')
if removed > 0 then rev = redis.call('INCR', KEYS[2]) end
out[#out + 1] = redis.call('HLEN', KEYS[1])
out[#out + 1] = rev
return out
"""


def _entry(p: LocalityPrompt) -> str:
    return json.dumps({"prompt": p.prompt, "answer": p.answer}, ensure_ascii=False)


def _prompts(entries: dict[Any, Any]) -> list[LocalityPrompt]:
    out = []
    for norm in sorted(entries, key=_text):
        d = json.loads(_text(entries[norm]))
        out.append(LocalityPrompt(d["prompt"], d.get("answer")))
    return out


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
