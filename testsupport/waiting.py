"""Polling for what a test or a benchmark waits on: an asynchronous delivery, a health change, a process."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar

T = TypeVar("T")
Falsy = Literal[False] | None  # what a condition answers while it is not met yet (`x.ready and x` is False or x)


def poll(condition: Callable[[], T | Falsy], timeout: float, interval: float = 0.05) -> T | Falsy:
    """condition()'s first truthy value within timeout seconds, or its last (falsy) value after it."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_for(condition: Callable[[], T | Falsy], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.05) -> T:
    """condition()'s first truthy value; fails the test, naming `what`, when none comes within timeout seconds."""
    value = poll(condition, timeout, interval)
    if not value:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    return value
