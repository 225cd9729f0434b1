"""gRPC channels to the other services, one per address for the life of the process."""
from __future__ import annotations

import functools

import grpc

from services.runtime.config import service_addr
from services.runtime.request_context import RequestIdClientInterceptor


@functools.cache
def channel_to(address: str) -> grpc.Channel:
    """A channel whose calls carry the current request id."""
    channel = grpc.insecure_channel(
        address,
        options=[("grpc.keepalive_time_ms", 30000), ("grpc.enable_retries", 1)],
    )
    return grpc.intercept_channel(channel, RequestIdClientInterceptor())


def service_channel(service: str) -> grpc.Channel:
    """Channel to 'chat', 'consent', 'notifier' or 'ratelimit', addressed by <NAME>_ADDR."""
    return channel_to(service_addr(service))
