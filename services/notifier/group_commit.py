"""Group commit: many workers' results written in one transaction, each worker returning once its own is durable.

The first waiting worker becomes the writer and takes everything queued so far; the others wait for that commit
(or take over the writing when the writer is done and theirs is still queued). One commit per batch instead of
one per delivery is what lets a backlog drain at the speed of the destination rather than of fsync.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Entry(Generic[Item, Result]):
    __slots__ = ("item", "done", "result", "error")
    result: Result  # set before `done` when the write succeeded; `error` is set instead when it failed

    def __init__(self, item: Item):
        self.item = item
        self.done = threading.Event()
        self.error: BaseException | None = None


class GroupCommit(Generic[Item, Result]):
    def __init__(self, write_batch: Callable[[list[Item]], list[Result]], max_batch: int = 256):
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._queued: list[_Entry[Item, Result]] = []
        self._lock = threading.Lock()
        self._writing = threading.Lock()

    def record(self, item: Item) -> Result:
        """Queue `item`, wait until a transaction carrying it has committed, and return its result."""
        entry: _Entry[Item, Result] = _Entry(item)
        with self._lock:
            self._queued.append(entry)
        while not entry.done.is_set():
            if self._writing.acquire(blocking=False):
                try:
                    self._write_queued()
                finally:
                    self._writing.release()
            else:
                entry.done.wait(0.05)
        if entry.error is not None:
            raise entry.error
        return entry.result

    def _write_queued(self) -> None:
        with self._lock:
            batch, self._queued = self._queued[: self._max_batch], self._queued[self._max_batch:]
        if not batch:
            return
        try:
            answered = list(zip(batch, self._write_batch([e.item for e in batch]), strict=True))
        except Exception as exc:  # noqa: BLE001 - every waiter gets the error and decides for itself
            for entry in batch:
                entry.error = exc
                entry.done.set()
            return
        for entry, result in answered:
            entry.result = result
            entry.done.set()
