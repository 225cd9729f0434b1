"""Domain errors and their mapping to gRPC status codes (which Envoy turns into REST codes with a JSON body).

Domain code raises these; `ErrorInterceptor` maps them on every RPC of every server, so no servicer method maps
errors itself.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import NoReturn

import grpc
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from services.runtime.interceptors import ScopedInterceptor, status_code

log = logging.getLogger(__name__)


class ValidationError(ValueError):
    """Bad input: INVALID_ARGUMENT over gRPC, 400 over REST. Nothing was changed."""


class NotFoundError(LookupError):
    """The thing asked for does not exist: NOT_FOUND, 404."""


class UnavailableError(RuntimeError):
    """A dependency is down and the request can be retried: UNAVAILABLE, 503."""


_MAPPING = (
    (ValidationError, code_pb2.INVALID_ARGUMENT),
    (NotFoundError, code_pb2.NOT_FOUND),
    (UnavailableError, code_pb2.UNAVAILABLE),
)


def abort(context: grpc.ServicerContext, code: int, message: str) -> NoReturn:
    """Abort with a google.rpc.Status, so the transcoder can answer REST with a JSON body."""
    context.abort_with_status(rpc_status.to_status(status_pb2.Status(code=code, message=message)))
    raise AssertionError("abort_with_status returned")  # it always raises; this tells the type checker so


class ErrorInterceptor(ScopedInterceptor):
    """Domain errors become their status; anything unexpected is logged once and answers INTERNAL, no details."""

    @contextlib.contextmanager
    def scope(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            if status_code(context) not in (None, grpc.StatusCode.OK):
                raise  # the handler aborted on purpose
            for kind, code in _MAPPING:
                if isinstance(exc, kind):
                    abort(context, code, str(exc))
            log.exception("unhandled error in %s", method)
            abort(context, code_pb2.INTERNAL, "internal error")
