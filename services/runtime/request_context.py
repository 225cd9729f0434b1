"""What a request carries across services: who asked (edge-verified) and the request id that joins its log lines.

Envoy assigns `x-request-id` at the edge (a client-sent one is validated there or replaced) and the services pass
it on in gRPC metadata on every call they make on a request's behalf. The id lives in a context variable for the
life of the handler, so logs, outgoing calls and rows written for the request pick it up without being handed it.
"""
from __future__ import annotations

import contextlib
import contextvars
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from services.runtime.interceptors import ScopedInterceptor

# Envoy sets this header from the connection's address (after its trusted-hop rules) and overwrites any value a
# client sent, so it cannot be forged from outside.
CLIENT_IP_HEADER = "x-novahouse-client-ip"
REQUEST_ID_HEADER = "x-request-id"

# Envoy mints UUIDs; a service accepts any short token of safe characters, so ids from other tracing systems pass
# through, and anything else (too long, control characters, JSON-breaking quotes) is replaced by a fresh id.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{8,64}$")

_current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


@dataclass(frozen=True)
class Caller:
    """Who asked: the client address and user agent the gateway saw."""

    client_ip: str = ""
    user_agent: str = ""


def _metadata(context: grpc.ServicerContext) -> dict[str, str]:
    return {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def caller(context: grpc.ServicerContext) -> Caller:
    metadata = _metadata(context)
    return Caller(metadata.get(CLIENT_IP_HEADER, "")[:64], metadata.get("user-agent", "")[:512])


def new_request_id() -> str:
    return str(uuid.uuid4())


def valid_request_id(value: str) -> bool:
    return bool(_REQUEST_ID.match(value))


def incoming_request_id(context: grpc.ServicerContext) -> str:
    """The caller's request id when it is well formed, a fresh one otherwise."""
    value = _metadata(context).get(REQUEST_ID_HEADER, "")
    return value if valid_request_id(value) else new_request_id()


def current_request_id() -> str:
    """The id of the request being handled, or '' outside any request or job."""
    return _current_request_id.get()


@contextlib.contextmanager
def request_scope(request_id: str | None = None) -> Iterator[str]:
    """Run a block on behalf of one request (or, with no id, as a job that mints its own)."""
    rid = request_id if request_id and valid_request_id(request_id) else new_request_id()
    token = _current_request_id.set(rid)
    try:
        yield rid
    finally:
        _current_request_id.reset(token)


class RequestIdInterceptor(ScopedInterceptor):
    """Each RPC runs in the scope of the caller's request id (or a fresh one)."""

    def scope(self, method: str, context: grpc.ServicerContext) -> contextlib.AbstractContextManager[object]:
        return request_scope(incoming_request_id(context))


class _CallDetails(grpc.ClientCallDetails):
    """The details of an outgoing call with other metadata (grpc has no constructor for its own)."""

    def __init__(self, base: grpc.ClientCallDetails, metadata: tuple[tuple[str, str | bytes], ...]):
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = base.compression


class RequestIdClientInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Every outgoing call made on a request's behalf carries its id, so the callee's log lines join the caller's."""

    def _with_id(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        rid = current_request_id()
        if not rid:
            return details
        metadata = tuple((k, v) for k, v in (details.metadata or ()) if k != REQUEST_ID_HEADER)
        return _CallDetails(details, (*metadata, (REQUEST_ID_HEADER, rid)))

    # Any: the request and response types differ per RPC; this interceptor only touches the metadata.
    def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
                              request: Any) -> Any:
        return continuation(self._with_id(client_call_details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
                               request: Any) -> Any:  # Any: as above
        return continuation(self._with_id(client_call_details), request)
