"""Domain errors and their mapping to gRPC status codes (which Envoy turns into REST codes with a JSON body)."""
from __future__ import annotations

import functools
import logging

import grpc
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

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


def abort(context: grpc.ServicerContext, code: int, message: str):
    """Abort with a google.rpc.Status, so the transcoder can answer REST with a JSON body."""
    context.abort_with_status(rpc_status.to_status(status_pb2.Status(code=code, message=message)))


def grpc_errors(method):
    """Decorator for servicer methods: domain errors become the right status, anything else INTERNAL."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every failure must become a status, never a crash
            if context.code() not in (None, grpc.StatusCode.OK):
                raise  # the method aborted on purpose
            for kind, code in _MAPPING:
                if isinstance(exc, kind):
                    abort(context, code, str(exc))
            log.exception("unhandled error in %s", method.__name__)
            abort(context, code_pb2.INTERNAL, "internal error")

    return wrapper
