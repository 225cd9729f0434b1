"""Delivery workers: claim due rows, send them through the destination's breaker, and record what happened.

Each destination has its own lane of worker threads, so a slow Slack never holds up email. A lane claims no more
rows than it has free slots (a few per worker, one for a paced lane), so a lease covers a send and a short queue,
never a backlog. Slack is paced by one worker when SLACK_MIN_INTERVAL_S is set, and Monday.com always gets one call
at a time. A failed attempt goes back to the queue with exponential backoff and jitter; after the last retry the row
is FAILED and one escalation email is queued. Each send runs in the scope of the request that queued it, so its log
lines carry that request's id.

A marketing message asks consent before every attempt (the first, each retry, each replay): an objection cancels it
for good; an unanswered question puts it back in the queue with its attempt given back, like a breaker's refusal.
"""
from __future__ import annotations

import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Protocol

from prometheus_client import Counter

from services.notifier.breakers import BreakerBoard, BreakerOpen
from services.notifier.destinations import DeliveryError, Payload
from services.notifier.group_commit import GroupCommit
from services.notifier.remote import ConsentUnavailable
from services.notifier.settings import Settings
from services.notifier.storage import DESTINATIONS, ESCALATION, MARKETING, Delivery, DeliveryStore, Escalation
from services.runtime.clock import utcnow
from services.runtime.request_context import request_scope

log = logging.getLogger(__name__)

SLOTS_PER_WORKER = 4  # claimed rows per worker: fewer claim transactions, still a queue of seconds at most
ATTEMPTS = Counter(
    "notifier_attempts_total", "Delivery attempts by destination and outcome", ["destination", "outcome"]
)
OUTCOMES = ("delivered", "retry", "failed", "dead", "refused", "cancelled", "consent-unknown")
for _destination in DESTINATIONS:  # every series from the start, at 0: an alert on `dead` sees the first one
    for _outcome in OUTCOMES:
        ATTEMPTS.labels(_destination, _outcome)


class Sender(Protocol):
    def send(self, payload: Payload) -> str:
        """Deliver; return the external id (Monday.com item id) or ''. Raise DeliveryError on failure."""


class MarketingConsent(Protocol):
    def marketing_allowed(self, email: str) -> bool:
        """Whether the person's marketing consent is on now; raise ConsentUnavailable when that cannot be known."""


def backoff_delay(attempts: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with equal jitter: half the step is fixed, half random, so retries spread out."""
    step = min(max_s, base_s * 2.0 ** max(0, attempts - 1))
    return step / 2 + random.uniform(0, step / 2)


class Lane:
    """The worker threads of one destination, and how many claimed rows it may hold (running or queued)."""

    def __init__(self, destination: str, workers: int, slots: int, on_done: Callable[[Lane], None]):
        self.destination = destination
        self.slots = slots
        self.maybe_more = False  # the last claim filled every free slot, so more rows may be due
        self._on_done = on_done
        self._busy = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=f"deliver-{destination}")

    def free_slots(self) -> int:
        with self._lock:
            return self.slots - self._busy

    def submit(self, request_id: str, work: Callable[[], None]) -> None:
        """Run `work` on a worker thread, on behalf of the request `request_id` (its log lines carry the id)."""
        with self._lock:
            self._busy += 1
        self._pool.submit(self._run, request_id, work)

    def _run(self, request_id: str, work: Callable[[], None]) -> None:
        try:
            with request_scope(request_id):
                try:
                    work()
                except Exception:  # the row's lease expires and it is retried; the worker lives on
                    log.exception("delivery worker failed", extra={"destination": self.destination})
        finally:
            with self._lock:
                self._busy -= 1
            self._on_done(self)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        store: DeliveryStore,
        senders: dict[str, Sender],
        breakers: BreakerBoard,
        consent: MarketingConsent,
    ):
        self.settings = settings
        self.store = store
        self.senders = senders
        self.breakers = breakers
        self.consent = consent
        self.lanes = {name: self._lane(name) for name in senders}
        self._delivered = GroupCommit(store.mark_delivered_many)
        self._waiting_noted: dict[str, float] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._dispatch_lock = threading.Lock()
        self._pump = threading.Thread(target=self._pump_loop, name="dispatch", daemon=True)

    def _lane(self, destination: str) -> Lane:
        if destination == "monday" or (destination == "slack" and self.settings.slack_min_interval_s > 0):
            return Lane(destination, 1, 1, self._lane_done)
        workers = self.settings.workers
        return Lane(destination, workers, workers * SLOTS_PER_WORKER, self._lane_done)

    # --- running ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._pump.start()
        self.wake()

    def wake(self) -> None:
        """Look for due work now (after Notify, a replay, a breaker reset, or a finished send)."""
        self._wake.set()

    def stop(self) -> None:
        """Claim nothing more and let the sends in flight finish (their rows are recorded)."""
        self._stopping.set()
        self._wake.set()
        if self._pump.is_alive():
            self._pump.join(timeout=5)
        for lane in self.lanes.values():
            lane.shutdown()

    @property
    def running(self) -> bool:
        return self._pump.is_alive() and not self._stopping.is_set()

    def _pump_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            if not self._stopping.is_set():
                with request_scope():  # a claiming round is a job of its own: its log lines carry a fresh id
                    try:
                        self.dispatch_due()
                    except Exception:  # a database blip must not end the pump; the next wake retries
                        log.exception("claiming due deliveries failed")

    def _lane_done(self, lane: Lane) -> None:
        # Refill once half the slots are free: one claim transaction per batch, not per delivery.
        if lane.maybe_more and lane.free_slots() * 2 >= lane.slots:
            self.wake()

    def dispatch_due(self) -> int:
        """Claim due rows for every lane's free slots and start them; returns how many were started."""
        started = 0
        with self._dispatch_lock:
            for lane in self.lanes.values():
                if self._stopping.is_set():
                    break
                free = lane.free_slots()
                if free <= 0:
                    lane.maybe_more = True
                    continue
                breaker = self.breakers[lane.destination]
                refusal = breaker.refusal()
                if refusal is not None:
                    # Nothing is claimed while the breaker refuses: the queue waits without churning.
                    self._note_waiting(lane.destination, str(refusal))
                    continue
                # Closed: fill the free slots. Open or half-open: one row, the trial call.
                limit = free if breaker.state == "closed" else 1
                token, rows = self.store.claim_due(lane.destination, limit, self.settings.lease_s)
                lane.maybe_more = len(rows) == limit
                for row in rows:
                    lane.submit(row.request_id, functools.partial(self.deliver, row, token))
                started += len(rows)
        return started

    def _note_waiting(self, destination: str, reason: str) -> None:
        """At most once per poll interval: give never-tried rows the reason they wait."""
        now = time.monotonic()
        if now - self._waiting_noted.get(destination, 0.0) >= self.settings.poll_interval_s:
            self._waiting_noted[destination] = now
            self.store.note_waiting(destination, reason)

    # --- one delivery -----------------------------------------------------------------------------------------
    def deliver(self, row: Delivery, token: str) -> None:
        """Send one claimed row and record the outcome (on a lane's worker, in the scope of its request)."""
        if row.external_id:
            # A Monday.com item was created by an earlier attempt: never make a second one.
            self._record_delivered(row, token, row.external_id)
            return
        if row.purpose == MARKETING and not self._consent_allows(row, token):
            return
        breaker = self.breakers[row.destination]
        try:
            trial = breaker.admit()
        except BreakerOpen as exc:
            self._park(row, token, exc)
            return
        failure: DeliveryError | None = None
        external_id = ""
        try:
            external_id = self.senders[row.destination].send(json.loads(row.payload))
        except DeliveryError as exc:
            failure = exc
        except Exception as exc:  # an unexpected error is retried like any other, never lost
            log.exception("unexpected error while sending", extra={"delivery_id": row.id})
            failure = DeliveryError(f"unexpected {type(exc).__name__} while sending")
        finally:
            recovered = breaker.record(failure, trial)
        if failure is None:
            self._record_delivered(row, token, external_id)
        else:
            self._record_failure(row, token, failure)
        if recovered:
            self.destination_recovered(row.destination)

    def destination_recovered(self, destination: str) -> None:
        """A trial call closed the breaker (or an operator reset it): drain what waited for this destination."""
        woken = self.store.bring_forward(destination)
        log.info("destination works again; its queue is due now", extra={"destination": destination, "due": woken})
        self.wake()

    def _consent_allows(self, row: Delivery, token: str) -> bool:
        """Ask consent right before sending a marketing message; cancel it on an objection, hold it when unsure."""
        context = {"delivery_id": row.id, "destination": row.destination}
        try:
            allowed = self.consent.marketing_allowed(json.loads(row.payload)["to"])
        except ConsentUnavailable as exc:
            ATTEMPTS.labels(row.destination, "consent-unknown").inc()
            log.warning("marketing message waits: consent did not answer", extra={**context, "reason": str(exc)})
            delay = self.settings.poll_interval_s + random.uniform(0, min(1.0, self.settings.poll_interval_s))
            next_at = utcnow() + timedelta(seconds=delay)
            reason = f"waiting for consent to answer ({exc})"
            _with_retries(lambda: self.store.mark_retry(row.id, token, reason, next_at, attempted=False))
            return False
        if not allowed:
            ATTEMPTS.labels(row.destination, "cancelled").inc()
            log.info("marketing message cancelled: its recipient has no marketing consent", extra=context)
            reason = "cancelled: the recipient's marketing consent is off (objection or unsubscribe)"
            _with_retries(lambda: self.store.mark_cancelled(row.id, token, reason))
            return False
        return True

    def _park(self, row: Delivery, token: str, refusal: BreakerOpen) -> None:
        """The breaker refused: nothing was sent, so no retry is used up; wait until a trial may go out."""
        ATTEMPTS.labels(row.destination, "refused").inc()
        delay = refusal.wait_s + random.uniform(0, min(1.0, self.settings.poll_interval_s))
        next_at = utcnow() + timedelta(seconds=delay)
        _with_retries(lambda: self.store.mark_retry(row.id, token, str(refusal), next_at, attempted=False))

    def _record_delivered(self, row: Delivery, token: str, external_id: str) -> None:
        ATTEMPTS.labels(row.destination, "delivered").inc()
        context = {"delivery_id": row.id, "destination": row.destination, "attempts": row.attempts}
        if _with_retries(lambda: self._delivered.record((row.id, token, external_id))):
            log.info("delivered", extra=context)
        else:
            log.warning("delivered, but the lease had expired", extra=context)

    def _record_failure(self, row: Delivery, token: str, error: DeliveryError) -> None:
        context = {"delivery_id": row.id, "destination": row.destination, "attempts": row.attempts}
        if error.permanent:
            ATTEMPTS.labels(row.destination, "dead").inc()
            log.warning("delivery is dead: %s", error.reason, extra=context)
            _with_retries(lambda: self.store.mark_dead(row.id, token, error.reason))
        elif row.attempts >= self.settings.max_attempts:
            ATTEMPTS.labels(row.destination, "failed").inc()
            log.error("delivery failed after its last retry: %s", error.reason, extra=context)
            escalation = self._escalation(row, error.reason)
            _with_retries(lambda: self.store.mark_failed(row.id, token, error.reason, escalation))
            if escalation:
                self.wake()
        else:
            ATTEMPTS.labels(row.destination, "retry").inc()
            s = self.settings
            delay = backoff_delay(row.attempts, s.retry_base_delay_s, s.retry_max_delay_s)
            if error.retry_after_s is not None:
                delay = max(delay, min(error.retry_after_s, s.max_retry_after_s))
            log.info("delivery will be retried: %s", error.reason, extra={**context, "delay_s": round(delay, 3)})
            next_at = utcnow() + timedelta(seconds=delay)
            _with_retries(lambda: self.store.mark_retry(row.id, token, error.reason, next_at))

    def _escalation(self, row: Delivery, reason: str) -> Escalation | None:
        """The one email to ESCALATION_EMAIL that names the lost delivery (never for an escalation). It does not copy
        the payload: a person's data would leave in a mailbox an erasure cannot reach; ListDeadLetters shows it."""
        to = self.settings.escalation_email
        if row.kind == ESCALATION or not to:
            return None
        body = (
            f"A {row.destination} delivery failed after {row.attempts} attempts and needs a person.\n\n"
            f"Delivery id: {row.id}\nDestination: {row.destination}\nIdempotency key: {row.idempotency_key}\n"
            f"Attempts: {row.attempts}\nQueued at: {row.created_at:%Y-%m-%d %H:%M:%S} UTC\nLast error: {reason}\n\n"
            "Its message is in the dead-letter queue: GET /api/dlq/pending?status=FAILED on the admin listener.\n"
            "Replay it with ReplayDeadLetters (POST /api/dlq/replay) once the destination works again.\n"
        )
        subject = f"[NovaHouse] {row.destination} delivery failed: {row.idempotency_key}"[:200]
        email = {"to": to, "subject": subject, "body": body}
        # Carries the failed delivery's request id: the escalation's sending is logged under the same request.
        return Escalation(f"escalation:{row.id}", json.dumps(email, ensure_ascii=False), row.request_id)


def _with_retries(write: Callable[[], bool], tries: int = 3) -> bool:
    """Recording a result survives a short database blip; after that the lease expires and the row is retried."""
    for attempt in range(tries):
        try:
            return write()
        except Exception:
            if attempt == tries - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    return False
