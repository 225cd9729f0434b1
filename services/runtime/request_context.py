"""Who is calling: the edge-verified client address and user agent that Envoy passes on as metadata."""
from __future__ import annotations

import grpc

# Envoy sets this header from the connection's address (after its trusted-hop rules) and overwrites any value a
# client sent, so it cannot be forged from outside.
CLIENT_IP_HEADER = "x-novahouse-client-ip"


def _metadata(context: grpc.ServicerContext) -> dict[str, str]:
    return {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def client_ip(context: grpc.ServicerContext) -> str:
    return _metadata(context).get(CLIENT_IP_HEADER, "")[:64]


def user_agent(context: grpc.ServicerContext) -> str:
    return _metadata(context).get("user-agent", "")[:512]
