"""The in-process moving-window store behind `limits`' MovingWindowRateLimiter, built for many client addresses.

limits' MemoryStorage keeps one Python object per hit and re-arms a thread every 10 ms that walks every key.
With thousands of addresses (or one busy key) the walks and the garbage collector scanning those objects stall
decisions for milliseconds. Here a key holds a deque of float timestamps (which the collector does not track),
trimmed when the key is used; keys are kept in least-recently-hit order per window length, so the keys whose
newest hit has left the window are always at the front and are dropped there, a few per call, with no thread.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from limits.storage import MovingWindowSupport, Storage


class InProcessMovingWindow(Storage, MovingWindowSupport):
    """Moving windows only: the fixed-window counter methods `Storage` declares are refused."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._clock = clock
        self._lock = threading.Lock()
        self._by_window: dict[int, OrderedDict[str, deque[float]]] = {}

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = self._clock()
        with self._lock:
            keys = self._by_window.setdefault(expiry, OrderedDict())
            self._drop_idle(keys, now - expiry)
            hits = keys.get(key)
            if hits is None:
                hits = deque()
            else:
                _trim(hits, now - expiry)
            if len(hits) + amount > limit:
                return False
            hits.extend([now] * amount)
            keys[key] = hits
            keys.move_to_end(key)  # only a hit moves a key: the order is by newest hit
            return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(time of the oldest hit still in the window, hits in the window), as limits' strategies expect."""
        now = self._clock()
        with self._lock:
            keys = self._by_window.get(expiry)
            hits = keys.get(key) if keys is not None else None
            if not hits:
                return now, 0
            _trim(hits, now - expiry)
            return (hits[0], len(hits)) if hits else (now, 0)

    @staticmethod
    def _drop_idle(keys: OrderedDict[str, deque[float]], cutoff: float) -> None:
        """Least recently hit first: stop at the first key with a hit still in its window. Two per call keeps
        up with any arrival rate (each call adds at most one key) without one call paying for a backlog."""
        for _ in range(2):
            if not keys:
                return
            oldest_key = next(iter(keys))
            hits = keys[oldest_key]
            if hits and hits[-1] >= cutoff:
                return
            del keys[oldest_key]

    def __len__(self) -> int:
        """Keys held: what the in-process limiter's memory grows with (the ratelimit_keys_held gauge)."""
        with self._lock:
            return sum(len(keys) for keys in self._by_window.values())

    def clear(self, key: str) -> None:
        with self._lock:
            for keys in self._by_window.values():
                keys.pop(key, None)

    def reset(self) -> int:
        with self._lock:
            count = sum(len(keys) for keys in self._by_window.values())
            self._by_window.clear()
            return count

    def check(self) -> bool:
        return True

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        raise NotImplementedError("moving windows only")

    def get(self, key: str) -> int:
        raise NotImplementedError("moving windows only")

    def get_expiry(self, key: str) -> float:
        raise NotImplementedError("moving windows only")


def _trim(hits: deque[float], cutoff: float) -> None:
    while hits and hits[0] < cutoff:
        hits.popleft()
