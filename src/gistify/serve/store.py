"""Where the proxy keeps its decisions: one interface, two stores.

A decision (what was sent upstream for a content, and why) is kept under the content's hash, together with a
fingerprint of the settings that shaped it, so that a content, once decided, is sent as the very same bytes
on every later turn. With `MemoryStore` (the default) that holds for one process until it restarts; with
`RedisStore` (`--cache redis://host:6379/0`) it holds for every replica that shares the Redis server, and
across restarts: the first replica to decide a content writes its decision with SET NX, and a replica that
decided the same content at the same moment takes the one that won, so all of them send the winner's bytes.

A Redis server that is down, or stops answering, never fails a request: the store warns once, goes on from
its in-process copy (every decision it has read or made stays there, so contents already seen keep their
bytes), tries Redis again after `retry_s`, and then writes the decisions it made meanwhile (where another
replica decided the same content meanwhile, that decision wins, here too, from then on).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

log = logging.getLogger("gistify.serve")


class MemoryStore:
    """A bounded, thread-safe LRU map from key to a JSON-able decision, in this process."""

    kind = "memory"

    def __init__(self, size: int = 4096):
        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key: str) -> dict | None:
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        return None

    def put(self, key: str, value: dict) -> dict:
        """Keep `value` unless `key` has a value already; return the value kept."""
        with self.lock:
            kept = self.data.setdefault(key, value)
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)
            return kept

    @property
    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        pass


class RedisStore(MemoryStore):
    """Decisions in Redis (shared by replicas, kept across restarts), read through an in-process LRU.

    `url` is a redis:// (or rediss://) URL; `ttl_s` how long Redis keeps a decision after its last write (0:
    for ever). Every Redis call has a short socket timeout; a failure marks the store down for `retry_s`
    seconds, during which it answers from memory only (`degraded` counts the calls that did so).
    """

    kind = "redis"

    def __init__(self, url: str, size: int = 4096, ttl_s: int = 7 * 24 * 3600, retry_s: float = 5.0,
                 timeout_s: float = 0.5, prefix: str = "gistify:"):  # fmt: skip
        super().__init__(size)
        try:
            import redis
        except ImportError:
            raise ValueError("--cache redis://... needs the redis client: pip install 'gistify[serve]'") from None
        self.url, self.ttl_s, self.retry_s, self.prefix = url, ttl_s, retry_s, prefix
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.down_until = 0.0
        self.degraded = 0  # calls answered from memory because Redis was down
        self.unsynced: dict[str, None] = {}  # keys decided while Redis was down, written once it is back
        self.on_degrade = None  # called with no argument each time a call is answered from memory only

    @property
    def healthy(self) -> bool:
        return time.monotonic() >= self.down_until

    def _call(self, fn, *args) -> Any:
        """`fn(*args)` on Redis, or None when Redis is (or just went) down."""
        if not self.healthy:
            self._degrade()
            return None
        try:
            return fn(*args)
        except Exception as e:  # redis.RedisError, OSError: whatever it is, the request goes on
            if self.down_until == 0.0 or self.healthy:
                log.warning("the Redis cache at %s failed (%s: %s): going on from memory, retrying in %.0f s",
                            self._where(), type(e).__name__, e, self.retry_s)  # fmt: skip
            self.down_until = time.monotonic() + self.retry_s
            self._degrade()
            return None

    def _degrade(self) -> None:
        self.degraded += 1
        if self.on_degrade is not None:
            self.on_degrade()

    def _where(self) -> str:
        return self.url.split("@")[-1]  # never a password in the log

    def _sync(self) -> None:
        """Write the decisions made while Redis was down; where another replica decided the same content in the
        meantime, its decision replaces ours (one change of bytes, then the same bytes everywhere again)."""
        while self.unsynced and self.healthy:
            key = next(iter(self.unsynced))
            value = super().get(key)
            if value is not None:
                self._shared(key, value)
            if self.healthy:
                self.unsynced.pop(key, None)

    def _shared(self, key: str, value: dict) -> dict:
        """SET NX `value` under `key` in Redis; the value Redis holds afterwards, or `value` when it is down."""
        raw = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        won = self._call(lambda: self.client.set(self.prefix + key, raw, nx=True, ex=self.ttl_s or None))
        if won is None and self.healthy:  # another replica decided first: take its decision
            theirs = self._call(self.client.get, self.prefix + key)
            if theirs is not None:
                value = json.loads(theirs)
                with self.lock:
                    self.data[key] = value
        return value

    def get(self, key: str) -> dict | None:
        if self.unsynced:
            self._sync()
        local = super().get(key)
        if local is not None:
            return local
        raw = self._call(self.client.get, self.prefix + key)
        if raw is None:
            return None
        value = json.loads(raw)
        return super().put(key, value)

    def put(self, key: str, value: dict) -> dict:
        if self.unsynced:
            self._sync()
        value = self._shared(key, value)
        if not self.healthy:
            self.unsynced[key] = None
        return super().put(key, value)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: S110 (closing a dead connection)
            pass


def open_store(spec: str | None, size: int) -> MemoryStore:
    """The store for `--cache`: "memory" (default, or None) or a redis:// URL."""
    if not spec or spec == "memory":
        return MemoryStore(size)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(spec, size)
    raise ValueError(f"--cache must be 'memory' or a redis:// URL, got {spec!r}")
