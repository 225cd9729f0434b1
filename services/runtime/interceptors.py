"""Server interceptors that run code around every RPC, whatever its kind (unary or streaming).

Each cross-cutting concern (request ids, metrics, error mapping) is one interceptor with one `scope`: a context
manager entered before the handler runs and left when its response is complete, with any exception passing
through it. So a new servicer or RPC cannot forget any of them.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from functools import cached_property
from typing import Any, TypeAlias

import grpc

# A servicer behaviour: (request or request iterator, context) -> response or response iterator. The request and
# response types differ per RPC, so they are Any here; the generated stubs type each servicer method.
Behaviour = Callable[[Any, grpc.ServicerContext], Any]


def status_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The code the handler set or aborted with, None if none yet."""
    return context.code()  # type: ignore[attr-defined,no-any-return]  # grpcio has had code() since 1.38; its stubs lack it


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # Any: one interceptor serves every RPC's types


class WrappedHandlers:
    """Each RPC's wrapped handler, built once: grpcio asks every interceptor for the handler on every call, and the
    handler beneath is the same object each time (only methods that exist are kept, so their number is bounded)."""

    def __init__(self, wrap: Callable[[str, Handler], Handler]):
        self._wrap = wrap
        self._built: dict[str, tuple[Handler, Handler]] = {}

    def __call__(self, method: str, handler: Handler) -> Handler:
        built = self._built.get(method)
        if built is None or built[0] is not handler:
            built = self._built[method] = (handler, self._wrap(method, handler))
        return built[1]


class ScopedInterceptor(grpc.ServerInterceptor, abc.ABC):
    @abc.abstractmethod
    def scope(self, method: str, context: grpc.ServicerContext) -> AbstractContextManager[object]:
        """Entered before the handler runs, left once its response is complete (or it raised)."""

    def _unary(self, method: str, inner: Behaviour) -> Behaviour:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:  # Any: see Behaviour
            with self.scope(method, context):
                return inner(request, context)

        return behaviour

    def _streaming(self, method: str, inner: Behaviour) -> Behaviour:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:  # Any: see Behaviour
            with self.scope(method, context):
                yield from inner(request, context)

        return behaviour

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return self._wrapped(handler_call_details.method, handler)

    @cached_property
    def _wrapped(self) -> WrappedHandlers:
        return WrappedHandlers(self._wrap)

    def _wrap(self, method: str, handler: Handler) -> Handler:
        codecs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(method, handler.unary_unary), **codecs)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self._unary(method, handler.stream_unary), **codecs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._streaming(method, handler.unary_stream), **codecs)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(self._streaming(method, handler.stream_stream), **codecs)
        return handler
