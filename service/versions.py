"""The version store: immutable weight versions on disk, the `current` alias in Redis.

Disk layout (under `data_dir/versions/`):
    {v}/weights.safetensors   full new values of the edited modules (stored layout, model dtype)
    {v}/manifest.json         parent, edit ids, sha256 per tensor file, hashes, metrics
    {v}/committed             marker written after the Redis commit (restart recovery)
    CURRENT                   mirror of the Redis `current` alias (restart recovery)
    events.jsonl              mirror of the recorded events (commits, rollbacks)

Version 0 is the base model's edited modules, written once and never deleted.  A version
directory appears atomically (written under a temporary name, then renamed); it is served
only after its sha256 checks out.  Rollback copies stored tensors: it never subtracts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
import torch
from safetensors.torch import load_file, save_file

from editor_core.checkpoint import check_files
from editor_core.checkpoint import sha256_file as file_sha256
from service.keys import Keys

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
COMMITTED_MARKER = "committed"
CURRENT_MIRROR = "CURRENT"
EVENTS_MIRROR = "events.jsonl"


class VersionCorruptError(Exception):
    """A version's files are missing or do not match their recorded sha256."""


class VersionNotFoundError(KeyError):
    pass


@dataclass
class Manifest:
    version: int
    parent: int | None
    created: float
    mode: str
    base_model_sha256: str
    editor_sha256: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    edit_ids: list[str] = field(default_factory=list)  # added by this version
    live_edit_ids: list[str] = field(default_factory=list)  # all edits in force
    withdrawn_edit_ids: list[str] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        return cls(**json.loads(text))


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Digest of named tensors (names, dtypes, shapes, bytes), independent of file layout."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# Compare-and-set `current` from the parent, mark the jobs applied, record the version.
# KEYS: current, versions, events, job keys...   ARGV: parent, version, now, event json, channel
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 4, #KEYS do
  if redis.call('HGET', KEYS[i], 'status') == 'applied' then return -1 end
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[2])
for i = 4, #KEYS do
  redis.call('HSET', KEYS[i], 'status', 'applied', 'version', ARGV[2], 'updated', ARGV[3])
end
redis.call('LPUSH', KEYS[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[2])
return 1
"""

# Move `current` to a committed version; record the event.
# KEYS: current, versions, events   ARGV: version, now, channel
_ROLLBACK = """
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return -1 end
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[3], cjson.encode({type='rollback', version=tonumber(ARGV[1]),
  previous=tonumber(previous), time=tonumber(ARGV[2])}))
redis.call('PUBLISH', ARGV[3], ARGV[1])
return tonumber(previous)
"""


class VersionStore:
    def __init__(self, root: Path, client: redis.Redis, keys: Keys):
        self.root = Path(root)
        self.redis = client
        self.keys = keys
        self.root.mkdir(parents=True, exist_ok=True)
        self._commit = client.register_script(_COMMIT)
        self._rollback = client.register_script(_ROLLBACK)

    # -- disk ---------------------------------------------------------------------------
    def path(self, version: int) -> Path:
        return self.root / str(version)

    def on_disk(self) -> list[int]:
        return sorted(int(p.name) for p in self.root.iterdir() if p.name.isdigit())

    def manifest(self, version: int) -> Manifest:
        path = self.path(version) / MANIFEST_FILE
        if not path.is_file():
            raise VersionNotFoundError(version)
        try:
            return Manifest.from_json(path.read_text())
        except (ValueError, TypeError) as exc:
            raise VersionCorruptError(f"version {version}: unreadable manifest ({exc})") from exc

    def write(self, manifest: Manifest, tensors: dict[str, torch.Tensor]) -> Manifest:
        """Write a version directory atomically; fills in `files` with sha256s."""
        final = self.path(manifest.version)
        if final.exists():
            raise FileExistsError(f"version {manifest.version} already exists")
        tmp = self.root / f".tmp-{manifest.version}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
            save_file(cpu, str(tmp / WEIGHTS_FILE))
            manifest.files = {WEIGHTS_FILE: file_sha256(tmp / WEIGHTS_FILE)}
            (tmp / MANIFEST_FILE).write_text(json.dumps(asdict(manifest), indent=1))
            for f in tmp.iterdir():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
            try:
                tmp.rename(final)
            except OSError as exc:  # ENOTEMPTY/EEXIST: another process wrote it meanwhile
                if final.exists():
                    raise FileExistsError(f"version {manifest.version} already exists") from exc
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return manifest

    def verify(self, version: int) -> Manifest:
        """The manifest, after checking every tensor file against its sha256."""
        m = self.manifest(version)
        if not m.files:
            raise VersionCorruptError(f"version {version}: manifest lists no tensor files")
        problem = check_files(self.path(version), m.files)
        if problem:
            raise VersionCorruptError(f"version {version}: {problem}; refusing to serve it")
        return m

    def load(self, version: int) -> tuple[Manifest, dict[str, torch.Tensor]]:
        """Verified tensors of a version (CPU, stored layout)."""
        m = self.verify(version)
        tensors: dict[str, torch.Tensor] = {}
        for name in m.files:
            tensors.update(load_file(str(self.path(version) / name)))
        return m, tensors

    def _mirror(self, current: int, event: dict[str, Any] | None) -> None:
        tmp = self.root / f".{CURRENT_MIRROR}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(str(current))
        tmp.replace(self.root / CURRENT_MIRROR)
        if event is not None:
            with (self.root / EVENTS_MIRROR).open("a") as f:
                f.write(json.dumps(event) + "\n")

    # -- Redis: the alias and the committed set ------------------------------------------
    def bootstrap(self, base: dict[str, torch.Tensor], base_sha256: str) -> None:
        """Write version 0 if missing; make Redis agree with disk after a restart."""
        if not self.path(0).exists():
            try:
                self.write(Manifest(0, None, time.time(), "base", base_sha256), base)
                (self.path(0) / COMMITTED_MARKER).touch()
            except FileExistsError:
                pass  # another process wrote it first
        m0 = self.manifest(0)
        if m0.base_model_sha256 != base_sha256:
            raise VersionCorruptError(
                f"{self.root} belongs to another base model (sha256 {m0.base_model_sha256[:12]}… "
                f"vs {base_sha256[:12]}…); use another data dir"
            )
        committed = [
            v for v in self.on_disk() if v == 0 or (self.path(v) / COMMITTED_MARKER).exists()
        ]
        pipe = self.redis.pipeline()
        for v in committed:
            pipe.zadd(self.keys.versions, {str(v): v}, nx=True)
        mirror = self.root / CURRENT_MIRROR
        pipe.set(self.keys.current, mirror.read_text().strip() if mirror.exists() else "0", nx=True)
        pipe.execute()
        # Never hand out a number that exists on disk, committed or not.
        top = max(self.on_disk(), default=0)
        seq = int(cast(Any, self.redis.get(self.keys.version_seq)) or 0)
        if seq < top:
            self.redis.set(self.keys.version_seq, top)

    def current(self) -> int:
        value = self.redis.get(self.keys.current)
        return int(cast(Any, value)) if value is not None else 0

    def committed(self) -> list[int]:
        return [int(v) for v in cast(list[Any], self.redis.zrange(self.keys.versions, 0, -1))]

    def next_number(self) -> int:
        return int(cast(Any, self.redis.incr(self.keys.version_seq)))

    def commit(self, manifest: Manifest, job_keys: list[str]) -> int:
        """1 committed, 0 `current` moved since `parent`, -1 a job was already applied."""
        event = {
            "type": "commit",
            "version": manifest.version,
            "parent": manifest.parent,
            "time": time.time(),
            "job_ids": manifest.job_ids,
        }
        result = int(
            self._commit(
                keys=[self.keys.current, self.keys.versions, self.keys.events, *job_keys],
                args=[
                    str(manifest.parent),
                    str(manifest.version),
                    str(time.time()),
                    json.dumps(event),
                    self.keys.channel,
                ],
            )
        )
        if result == 1:
            (self.path(manifest.version) / COMMITTED_MARKER).touch()
            self._mirror(manifest.version, event)
        return result

    def rollback(self, version: int) -> int:
        """Make `version` current (after verifying its files); returns the previous one."""
        if version not in self.committed():
            raise VersionNotFoundError(version)
        self.verify(version)
        now = time.time()
        previous = self._rollback(
            keys=[self.keys.current, self.keys.versions, self.keys.events],
            args=[str(version), str(now), self.keys.channel],
        )
        if previous is None or int(previous) < 0:
            raise VersionNotFoundError(version)
        event = {"type": "rollback", "version": version, "previous": int(previous), "time": now}
        self._mirror(version, event)
        return int(previous)
