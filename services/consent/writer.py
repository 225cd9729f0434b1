"""Group commit for ledger appends: every change of consent runs here, many per transaction.

Appends must be serialised (each entry hashes its predecessor), so one transaction per request would cap the
ledger at one disk flush per event. Instead one thread takes whatever requests are waiting, runs them in a single
transaction under the head lock and commits once. When fewer requests wait than callers are inside run(), it
lingers up to linger_s for the rest, which keeps the batches whole under steady load. A request that fails makes
its batch roll back; the batch is then retried one request per transaction, so only the failing request sees the
error.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection

from services.consent.chain import ChainKeys
from services.consent.ledger_storage import Appender
from services.runtime.db import Database

T = TypeVar("T")


class _Request(Generic[T]):
    result: T

    def __init__(self, work: Callable[[Connection, Appender], T], subject_hash: str | None, request_id: str | None):
        self.work = work
        self.subject_hash = subject_hash
        self.request_id = request_id
        self.error: BaseException | None = None
        self.done = threading.Event()


_AnyRequest = _Request[Any]  # Any: each request in a batch has its own result type


class LedgerWriter:
    def __init__(self, db: Database, keys: ChainKeys, max_batch: int = 200, linger_s: float = 0.001):
        self.db = db
        self.keys = keys  # the chain keys: every entry's hash is keyed with keys.current_id
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._callers = 0  # requests submitted and not yet returned to their callers
        self._callers_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_AnyRequest | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopped = False
        self._connection: Connection | None = None

    def run(
        self, work: Callable[[Connection, Appender], T], subject_hash: str | None = None, request_id: str | None = None
    ) -> T:
        """Run work(connection, appender) inside a ledger transaction; returns its result once committed.

        subject_hash and request_id name what work will look up, so a batch loads them all in one query.
        """
        if self._stopped:
            raise RuntimeError("the ledger writer is stopped")
        request = _Request(work, subject_hash, request_id)
        self._ensure_thread()
        with self._callers_lock:
            self._callers += 1
        try:
            self._queue.put(request)
            request.done.wait()
        finally:
            with self._callers_lock:
                self._callers -= 1
        if request.error is not None:
            raise request.error
        return request.result

    def stop(self) -> None:
        self._stopped = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="ledger-writer", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = self._drain(batch)
            if not stopping and len(batch) < self._callers:
                # Callers just answered by the last batch are on their way back with their next request: wait for
                # them briefly, so one commit serves all callers instead of two half-size batches alternating.
                stopping = self._drain(batch, linger_until=time.monotonic() + self.linger_s)
            self._commit(batch)
            if stopping:
                return

    def _drain(self, batch: list[_AnyRequest], linger_until: float = 0.0) -> bool:
        """Move requests into batch: those already queued, then more while fewer than the callers wait and
        linger_until has not passed. True once stopping."""
        while len(batch) < self.max_batch:
            lingering = self._lingering(batch, linger_until)
            try:
                nxt = self._queue.get(timeout=0.0001) if lingering else self._queue.get_nowait()
            except queue.Empty:
                if self._lingering(batch, linger_until):
                    continue
                return False
            if nxt is None:
                return True
            batch.append(nxt)
        return False

    def _lingering(self, batch: list[_AnyRequest], until: float) -> bool:
        return len(batch) < self._callers and time.monotonic() < until

    def _commit(self, batch: list[_AnyRequest]) -> None:
        try:
            results = self._transaction(batch)
        except BaseException as exc:  # noqa: BLE001 - the error belongs to the request, not the writer thread
            if len(batch) > 1:
                for request in batch:
                    self._commit([request])
                return
            batch[0].error = exc
            batch[0].done.set()
            return
        for request, result in zip(batch, results, strict=True):
            request.result = result
            request.done.set()

    def _transaction(self, batch: list[_AnyRequest]) -> list[Any]:  # Any: one result per request, as above
        # The writer keeps one connection: no pool checkout, ping and reset per batch. Any error drops it, so a
        # broken connection is replaced by the next batch.
        if self._connection is None:
            self._connection = self.db.engine.connect()
        try:
            with self._connection.begin():
                appender = Appender.locked(
                    self._connection,
                    self.keys,
                    [r.subject_hash for r in batch if r.subject_hash],
                    [r.request_id for r in batch if r.request_id],
                )
                results = [request.work(self._connection, appender) for request in batch]
                appender.save()
        except BaseException:
            self._connection.close()
            self._connection = None
            raise
        return results
