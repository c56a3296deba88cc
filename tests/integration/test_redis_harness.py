"""The harness runs a real redis-server; later tests stop and restart it."""

from __future__ import annotations

from typing import Any

import pytest
import redis


def test_real_redis_answers_and_survives_a_restart(redis_server: Any) -> None:
    r = redis.Redis.from_url(redis_server.url)
    assert r.execute_command("INFO", "server")["redis_version"].startswith(("6.", "7.", "8."))
    r.set("k", "v")
    assert r.get("k") == b"v"
    old_pid = redis_server.proc.pid
    redis_server.restart()
    assert redis_server.proc.pid != old_pid
    fresh = redis.Redis.from_url(redis_server.url)
    assert fresh.get("k") is None  # no persistence: a cache, never the truth
    assert fresh.ping() is True


def test_stopped_redis_refuses_connections(tmp_path: Any) -> None:
    from codex_devenv.redis_server import RedisServer

    server = RedisServer(tmp_path).start()
    url = server.url
    server.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
