"""Processes that start together (the worker and API replicas) all bootstrap version 0 of
one data dir: the loser of the race must not crash."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
import torch

from service.keys import Keys
from service.versions import Manifest, VersionStore


def test_a_version_written_meanwhile_by_another_process_is_not_an_error(
    tmp_path: Path, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis.from_url(redis_url)
    base = {"w": torch.ones(2, 2)}
    winner = VersionStore(tmp_path, client, Keys(redis_prefix))
    loser = VersionStore(tmp_path, client, Keys(redis_prefix))
    real_rename = Path.rename
    racing: list[bool] = []

    def rename_after_the_winner(self: Path, target: Path) -> Path:
        # the other process finishes version 0 between our existence check and our rename
        if not racing and not Path(target).exists():
            racing.append(True)
            try:
                winner.write(Manifest(0, None, time.time(), "base", "sha-a"), base)
            finally:
                racing.clear()
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename_after_the_winner)
    with pytest.raises(FileExistsError):
        loser.write(Manifest(0, None, time.time(), "base", "sha-a"), base)
    monkeypatch.setattr(Path, "rename", real_rename)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []  # cleaned
    assert loser.manifest(0).base_model_sha256 == "sha-a"

    # bootstrap, losing the same race, goes on with the winner's version 0
    other = tmp_path / "other"
    winner, loser = (VersionStore(other, client, Keys(redis_prefix + "b:")) for _ in range(2))
    monkeypatch.setattr(Path, "rename", rename_after_the_winner)
    loser.bootstrap(base, "sha-a")
    monkeypatch.setattr(Path, "rename", real_rename)
    assert loser.manifest(0).base_model_sha256 == "sha-a"
