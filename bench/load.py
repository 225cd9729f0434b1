"""A small closed-loop HTTP load generator: keep-alive connections in threads, latency of every request."""
from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def record(self, status: int, latency_s: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 200:
            self.latencies_s.append(latency_s)
        else:
            self.errors += 1

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_s) * 1000 if self.latencies_s else float("nan")


def _post(conn: http.client.HTTPConnection, port: int, path: str, payload: bytes):
    """One POST on a keep-alive connection: (status, connection to use next); status 0 when it failed."""
    try:
        conn.request("POST", path, body=payload, headers={"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status, conn
    except (OSError, http.client.HTTPException):
        conn.close()
        return 0, http.client.HTTPConnection("127.0.0.1", port, timeout=30)


def _run_threads(worker: Callable[[int], None], threads: int) -> None:
    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def run_load(port: int, path: str, body_for: Callable[[int, int], dict], *, threads: int, duration_s: float,
             warmup_s: float = 1.0, max_requests: int = 200_000) -> LoadResult:
    """POST JSON as fast as each thread's previous answer allows; only requests after warm-up are counted."""
    result = LoadResult()
    lock = threading.Lock()
    start = time.monotonic()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s
    sent = [0]

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = 0
        while True:
            now = time.monotonic()
            with lock:
                if now >= stop_at or sent[0] >= max_requests:
                    break
                sent[0] += 1
            payload = json.dumps(body_for(index, n)).encode()
            counted = time.monotonic() >= measure_from
            t0 = time.perf_counter()
            status, conn = _post(conn, port, path, payload)
            latency = time.perf_counter() - t0
            n += 1
            if counted:
                with lock:
                    result.record(status, latency)
        conn.close()

    _run_threads(worker, threads)
    result.elapsed_s = max(1e-9, min(time.monotonic(), stop_at) - measure_from)
    return result


def run_rate(port: int, path: str, body_for: Callable[[int, int], dict], *, rate: float, duration_s: float,
             threads: int = 16, warmup_s: float = 1.0) -> LoadResult:
    """Open loop: requests are due at a fixed rate whatever the answers do; each latency counts from the moment
    the request was due, so a stall is charged to every request it delays (no coordinated omission)."""
    result = LoadResult()
    lock = threading.Lock()
    start = time.monotonic() + 0.05
    total = int(rate * (warmup_s + duration_s))
    measured_from = int(rate * warmup_s)

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for slot in range(index, total, threads):
            due = start + slot / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            status, conn = _post(conn, port, path, json.dumps(body_for(index, slot)).encode())
            latency = time.monotonic() - due
            if slot >= measured_from:
                with lock:
                    result.record(status, latency)
        conn.close()

    _run_threads(worker, threads)
    result.elapsed_s = duration_s
    return result
