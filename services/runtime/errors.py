"""Domain errors and their mapping to gRPC status codes (which Envoy turns into REST codes with a JSON body).

Domain code raises these; `ErrorInterceptor` maps them on every RPC of every server, so no servicer method maps
errors itself. A lost database, Redis or peer service is UNAVAILABLE (503) with a `retry-after`, wherever in a
handler it surfaces. `UndecodableRequestInterceptor` gives a request whose bytes do not decode the same
INVALID_ARGUMENT.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status
from redis import exceptions as redis_errors
from sqlalchemy import exc as sqlalchemy_errors

from services.runtime.interceptors import Behaviour, Handler, ScopedInterceptor, WrappedHandlers, status_code

log = logging.getLogger(__name__)


class ValidationError(ValueError):
    """Bad input: INVALID_ARGUMENT over gRPC, 400 over REST. Nothing was changed."""


class NotFoundError(LookupError):
    """The thing asked for does not exist: NOT_FOUND, 404."""


class UnavailableError(RuntimeError):
    """A dependency is down and the request can be retried: UNAVAILABLE, 503, with a retry-after."""


class PreconditionError(RuntimeError):
    """The request is valid but the thing is not in a state that allows it (e.g. another agent holds the
    conversation): FAILED_PRECONDITION, 400. Nothing was changed."""


_MAPPING = (
    (ValidationError, code_pb2.INVALID_ARGUMENT),
    (NotFoundError, code_pb2.NOT_FOUND),
    (UnavailableError, code_pb2.UNAVAILABLE),
    (PreconditionError, code_pb2.FAILED_PRECONDITION),
)


# Seconds a client is told to wait after an UNAVAILABLE: about one readiness re-check (HEALTH_CHECK_INTERVAL_S) and
# a reconnect, after which a dependency that is back is in use again.
RETRY_AFTER_S = 5

# A database that is down, restarting or unreachable, as SQLAlchemy reports it (the pool's pre-ping reconnects once
# it is back). OperationalError also covers the retryable conflicts (serialization failures, deadlocks, a locked
# SQLite file); InterfaceError a connection closed under a statement; TimeoutError a pool whose connections all wait
# on a server that does not answer.
DATABASE_OUTAGE = (sqlalchemy_errors.OperationalError, sqlalchemy_errors.InterfaceError,
                   sqlalchemy_errors.TimeoutError)
REDIS_OUTAGE = (redis_errors.ConnectionError, redis_errors.TimeoutError)
PEER_OUTAGE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def abort(context: grpc.ServicerContext, code: int, message: str,
          metadata: tuple[tuple[str, str], ...] = ()) -> NoReturn:
    """Abort with a google.rpc.Status, so the transcoder can answer REST with a JSON body; `metadata` goes with it
    as trailing metadata, which the transcoder passes on as response headers."""
    status = rpc_status.to_status(status_pb2.Status(code=code, message=message))
    context.abort_with_status(status._replace(trailing_metadata=(*status.trailing_metadata, *metadata)))
    raise AssertionError("abort_with_status returned")  # it always raises; this tells the type checker so


def lost_dependency(exc: BaseException) -> str:
    """What an error says was lost ('the database', 'Redis', 'a peer service'), or '' when it is no outage."""
    if isinstance(exc, DATABASE_OUTAGE):
        return "the database"
    if isinstance(exc, REDIS_OUTAGE):
        return "Redis"
    if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call) and exc.code() in PEER_OUTAGE:
        return "a peer service"
    return ""


class ErrorInterceptor(ScopedInterceptor):
    """Domain errors become their status; a lost dependency UNAVAILABLE with `retry-after` (one throttled warning,
    no traceback: an outage repeats on every request); anything else is logged once and answers INTERNAL, no
    details."""

    def __init__(self) -> None:
        self._warn_unavailable = ThrottledWarning(log, "dependency unavailable", UNDECODABLE_LOG_INTERVAL_S)

    @contextlib.contextmanager
    def scope(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            if status_code(context) not in (None, grpc.StatusCode.OK):
                raise  # the handler aborted on purpose
            retry_after = (("retry-after", str(RETRY_AFTER_S)),)
            lost = lost_dependency(exc)
            if lost:
                self._warn_unavailable(method=method, dependency=lost, error=type(exc).__name__)
                abort(context, code_pb2.UNAVAILABLE, f"{lost} is unavailable; retry shortly", retry_after)
            for kind, code in _MAPPING:
                if isinstance(exc, kind):
                    abort(context, code, str(exc), retry_after if code == code_pb2.UNAVAILABLE else ())
            log.exception("unhandled error in %s", method)
            abort(context, code_pb2.INTERNAL, "internal error")


class Undecodable:
    """Stands in for a request whose bytes did not decode (the deserializer must return something: grpcio answers
    a raised error or None with INTERNAL and a traceback before any interceptor runs)."""

    __slots__ = ("reason", "size")

    def __init__(self, reason: str, size: int):
        self.reason = reason
        self.size = size


class ThrottledWarning:
    """One warning line per `interval_s` at most, counting the occurrences it left out: a client sending junk in a
    loop cannot fill the log."""

    def __init__(self, logger: logging.Logger, message: str, interval_s: float):
        self._log = logger
        self._message = message
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._next_at = 0.0
        self._suppressed = 0

    def __call__(self, **fields: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next_at:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._next_at = self._suppressed, 0, now + self._interval_s
        self._log.warning(self._message, extra={**fields, "suppressed_since_last": suppressed})


# Seconds between two log lines about undecodable requests (the ones in between are counted in the next line).
UNDECODABLE_LOG_INTERVAL_S = 10.0


class UndecodableRequestInterceptor(grpc.ServerInterceptor):
    """Malformed bytes (a broken protobuf, a string field that is not UTF-8, as the REST transcoder passes on from
    `/api/unsubscribe/status/%ff`) answer INVALID_ARGUMENT, 400 over REST, like any other bad input. The handler's
    own deserializer is wrapped, since grpcio rejects what it cannot decode before any interceptor's code runs;
    the rejection is one throttled warning line without the bytes, which can hold personal data."""

    def __init__(self) -> None:
        self._warn = ThrottledWarning(log, "undecodable request", UNDECODABLE_LOG_INTERVAL_S)
        self._wrapped = WrappedHandlers(self._wrap)

    @staticmethod
    def _deserializer(inner: Callable[[bytes], Any]) -> Callable[[bytes], Any]:  # Any: every RPC's own type
        def deserialize(data: bytes) -> Any:
            try:
                return inner(data)
            except DecodeError as exc:
                return Undecodable(str(exc).rpartition(": ")[2] or "corrupt message", len(data))

        return deserialize

    def _behaviour(self, method: str, inner: Behaviour) -> Behaviour:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:  # Any: see Behaviour
            if isinstance(request, Undecodable):
                self._warn(method=method, reason=request.reason, bytes=request.size)
                abort(context, code_pb2.INVALID_ARGUMENT, f"malformed request: {request.reason}")
            return inner(request, context)

        return behaviour

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return self._wrapped(handler_call_details.method, handler)

    def _wrap(self, method: str, handler: Handler) -> Handler:
        assert handler.request_deserializer is not None  # intercept_service passes on the handlers without one
        codecs = {
            "request_deserializer": self._deserializer(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._behaviour(method, handler.unary_unary), **codecs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._behaviour(method, handler.unary_stream), **codecs)
        return handler  # a streaming request (no RPC of the platform takes one) keeps grpcio's own decoding


class _MetadataDecodingFilter(logging.Filter):
    """grpcio logs a metadata value that is not UTF-8 (a header such as `x-session-secret: \\xff`, which the
    transcoder passes on) at ERROR, with a traceback and the value itself, then carries on with the value read as
    Latin-1. The record becomes one throttled warning without the value, which can hold a secret or personal data."""

    def __init__(self) -> None:
        super().__init__()
        self._warn = ThrottledWarning(log, "undecodable request metadata", UNDECODABLE_LOG_INTERVAL_S)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Invalid encoding on %s":
            self._warn()
            return False
        return True


_METADATA_FILTER = _MetadataDecodingFilter()


def quiet_metadata_decoding_errors() -> None:
    logging.getLogger("grpc._cython.cygrpc").addFilter(_METADATA_FILTER)  # added once, however often called
