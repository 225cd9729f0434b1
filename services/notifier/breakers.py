"""One pybreaker circuit breaker per destination, shared by every replica through Redis when REDIS_URL is set.

pybreaker's own `call` holds the breaker's lock for the whole guarded call, which would put every delivery to a
destination in single file. So a call is split in two: `admit()` asks the breaker before sending (failing fast while
it is open, letting exactly one trial through once the reset timeout has passed), and `record()` feeds the outcome
through the breaker afterwards, so pybreaker's state machine, its storage and its listeners stay the one truth.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pybreaker
import redis
from prometheus_client import Counter, Gauge

from services.notifier.destinations import DeliveryError
from services.runtime.clock import utcnow

log = logging.getLogger(__name__)

STATE_VALUE = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}
BREAKER_STATE = Gauge("notifier_breaker_state", "Breaker state: 0 closed, 1 half-open, 2 open", ["destination"])
BREAKER_CHANGES = Counter("notifier_breaker_transitions_total", "Breaker state changes", ["destination", "state"])


class BreakerOpen(Exception):
    """The destination's breaker refused the call; nothing was sent. `wait_s`: until the next trial may go out."""

    def __init__(self, reason: str, wait_s: float):
        super().__init__(reason)
        self.wait_s = wait_s


@dataclass(frozen=True)
class BreakerStatus:
    """What operators see of one breaker."""

    name: str
    state: str
    fail_counter: int
    fail_max: int
    reset_timeout_s: int


class _StateLogger(pybreaker.CircuitBreakerListener):
    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        name = cb.name or ""
        BREAKER_STATE.labels(name).set(STATE_VALUE[new_state.name])
        BREAKER_CHANGES.labels(name, new_state.name).inc()
        log.warning(
            "breaker state changed",
            extra={"breaker": cb.name, "from": old_state.name if old_state else None, "to": new_state.name},
        )


def _not_the_destinations_fault(exc: BaseException) -> bool:
    """A 4xx, a 429 or missing configuration says nothing about the destination's health."""
    return isinstance(exc, DeliveryError) and not exc.counts_for_breaker


def _replay(outcome: BaseException | None) -> None:
    if outcome is not None:
        raise outcome


class DestinationBreaker:
    """One destination's breaker; with a Redis client its state lives under `<key_prefix>notifier:breaker:<name>`."""

    def __init__(
        self, name: str, fail_max: int, reset_timeout_s: float, client: redis.Redis | None = None, key_prefix: str = ""
    ):
        self.storage: pybreaker.CircuitBreakerStorage
        if client is not None:
            namespace = f"{key_prefix}notifier:breaker:{name}"
            self.storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=namespace)
        else:
            self.storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout_s,
            exclude=[_not_the_destinations_fault],
            listeners=[_StateLogger()],
            state_storage=self.storage,
            name=name,
        )
        self.name = name
        self._trial_lock = threading.Lock()
        self._trial_in_flight = False
        BREAKER_STATE.labels(name).set(STATE_VALUE.get(self.state, 0))

    @property
    def state(self) -> str:
        return self.breaker.current_state

    def refusal(self) -> BreakerOpen | None:
        """Why a call would be refused right now (None: one may go out), without reserving the trial."""
        state = self.state
        if state == pybreaker.STATE_CLOSED:
            return None
        if state == pybreaker.STATE_OPEN:
            opened_at = self.storage.opened_at
            reopens = opened_at + timedelta(seconds=self.breaker.reset_timeout) if opened_at else None
            now = utcnow()
            if reopens and now < reopens:
                wait_s = (reopens - now).total_seconds()
                return BreakerOpen(f"{self.name} breaker is open until {reopens:%H:%M:%S} UTC; not attempted", wait_s)
        if self._trial_in_flight:
            return BreakerOpen(
                f"{self.name} breaker is half-open and a trial call is in flight; not attempted",
                self.breaker.reset_timeout,
            )
        return None

    def admit(self) -> bool:
        """May a call go out now? Returns True for the half-open trial call; raises BreakerOpen to refuse."""
        if self.state == pybreaker.STATE_CLOSED:
            return False
        refusal = self.refusal()
        if refusal is not None:
            raise refusal
        with self._trial_lock:
            if self._trial_in_flight:
                raise BreakerOpen(f"{self.name} breaker's trial call went to another delivery", 1.0)
            self._trial_in_flight = True
        if self.state == pybreaker.STATE_OPEN:
            self.breaker.half_open()
        return True

    def record(self, outcome: BaseException | None, trial: bool) -> bool:
        """Count a finished call (None for success, else its DeliveryError); True when a trial closed the breaker."""
        try:
            self.breaker.call(_replay, outcome)
        except (pybreaker.CircuitBreakerError, DeliveryError):
            pass  # the outcome is counted; opening the breaker is what CircuitBreakerError announces
        finally:
            if trial:
                with self._trial_lock:
                    self._trial_in_flight = False
        return trial and self.state == pybreaker.STATE_CLOSED

    def reset(self) -> None:
        self.breaker.close()

    def describe(self) -> BreakerStatus:
        return BreakerStatus(
            name=self.name,
            state=self.state,
            fail_counter=self.breaker.fail_counter,
            fail_max=self.breaker.fail_max,
            reset_timeout_s=int(self.breaker.reset_timeout),
        )


class BreakerBoard:
    """The breakers of all destinations."""

    def __init__(
        self,
        names: Iterable[str],
        fail_max: int,
        reset_timeout_s: float,
        client: redis.Redis | None = None,
        key_prefix: str = "",
    ):
        self.breakers = {
            name: DestinationBreaker(name, fail_max, reset_timeout_s, client, key_prefix) for name in names
        }

    def __getitem__(self, name: str) -> DestinationBreaker:
        return self.breakers[name]

    def __iter__(self) -> Iterator[DestinationBreaker]:
        return iter(self.breakers.values())
