"""The rate-limit service Envoy asks about every public request (envoy.service.ratelimit.v3)."""
from __future__ import annotations

import argparse
import json
import logging
import sys

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2
from prometheus_client import Counter, Gauge

from gateway.ratelimit.limiter import Decision, DescriptorLimiter, RedisOrMemory, storage_for
from gateway.ratelimit.memory import InProcessMovingWindow
from gateway.ratelimit.policy import PolicyError, load_policy
from services.runtime import logs
from services.runtime.config import env_float, env_str
from services.runtime.redis_client import key_prefix, redis_url
from services.runtime.server import GrpcService

log = logging.getLogger(__name__)

DEFAULT_POLICY = "gateway/ratelimit/policy.yaml"
DECISIONS = Counter("ratelimit_decisions_total", "Rate-limit answers", ["result"])
for _result in ("ok", "over_limit", "error"):  # every series from the start, so an alert sees the first error
    DECISIONS.labels(_result)
KEYS_HELD = Gauge("ratelimit_keys_held", "Keys the in-process store holds; its memory grows with them")
COUNTING_IN_MEMORY = Gauge(
    "ratelimit_counting_in_memory",
    "1 while Redis does not answer and this replica counts alone, in its own memory (a per-replica budget)",
)
# Health service name that is SERVING while the budget is the shared one (Redis answers), NOT_SERVING while this
# replica counts in its own memory; the limiter itself stays ready, as it still decides.
SHARED_BUDGET_HEALTH = "novahouse.ratelimit.SharedBudget"

_OK = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)


def _header(key: str, value: str) -> base_pb2.HeaderValue:
    return base_pb2.HeaderValue(key=key, value=value)


def over_limit_response(decision: Decision) -> rls_pb2.RateLimitResponse:
    """429 for REST with a JSON body and Retry-After / RateLimit-* headers; Envoy maps it to RESOURCE_EXHAUSTED for
    gRPC."""
    limit = decision.limit
    if limit is None:
        raise ValueError("an over-limit answer names the limit it is over")
    retry = str(decision.retry_after_s)
    return rls_pb2.RateLimitResponse(
        overall_code=rls_pb2.RateLimitResponse.OVER_LIMIT,
        raw_body=json.dumps({"error": "rate_limited", "retry_after_s": decision.retry_after_s}).encode(),
        response_headers_to_add=[
            _header("content-type", "application/json"),
            _header("retry-after", retry),
            _header("ratelimit-limit", f"{limit.per_unit}, {limit.per_unit};w={limit.window_s}"),
            _header("ratelimit-remaining", "0"),
            _header("ratelimit-reset", retry),
        ],
    )


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]  # envoy's generated code has no types
    def __init__(self, limiter: DescriptorLimiter):
        self.limiter = limiter

    def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        hits = request.hits_addend or 1
        try:
            for descriptor in request.descriptors:
                decision = self.limiter.check([(e.key, e.value) for e in descriptor.entries], hits)
                if not decision.allowed:
                    DECISIONS.labels("over_limit").inc()
                    return over_limit_response(decision)
        except Exception as exc:  # noqa: BLE001 - storage down: Envoy applies its failure mode
            DECISIONS.labels("error").inc()
            log.warning("limiter storage unavailable", extra={"error": type(exc).__name__})
            context.abort(grpc.StatusCode.UNAVAILABLE, "rate-limit storage unavailable")
        DECISIONS.labels("ok").inc()
        return _OK


def build_limiter(policy_path: str) -> DescriptorLimiter:
    policy = load_policy(policy_path)
    backend = storage_for(redis_url(), key_prefix(), env_float("RATELIMIT_STORAGE_TIMEOUT_S", 0.05, minimum=0.001),
                          env_float("REDIS_RETRY_SECONDS", 5.0, minimum=0.0))
    return DescriptorLimiter(policy, backend)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="NovaHouse rate-limit service (Envoy RLS on `limits`).")
    parser.add_argument("--policy", default=env_str("RATELIMIT_POLICY", DEFAULT_POLICY), help="policy YAML file")
    parser.add_argument("--check", action="store_true", help="validate the policy file and exit")
    args = parser.parse_args(argv)
    logs.configure("ratelimit")
    try:
        limiter = build_limiter(args.policy)
    except PolicyError as exc:
        print(f"invalid rate-limit policy: {exc}", file=sys.stderr)
        return 2
    if args.check:
        for limit in limiter.policy.limits():
            print(f"{limit.name}: {limit.item}{' (shadow)' if limit.shadow_mode else ''}")
        return 0
    backend = limiter.backend
    if isinstance(backend, InProcessMovingWindow):
        KEYS_HELD.set_function(lambda: len(backend))
    # Each decision is microseconds of Python: a few workers contend less for the GIL than many.
    service = GrpcService("ratelimit", readiness={"storage": lambda: _require(limiter.healthy())}, default_workers=4)
    if isinstance(backend, RedisOrMemory):
        COUNTING_IN_MEMORY.set_function(lambda: float(backend.in_memory))
        status = health_pb2.HealthCheckResponse
        backend.on_change(lambda in_memory: service.health.set(
            SHARED_BUDGET_HEALTH, status.NOT_SERVING if in_memory else status.SERVING))
        service.health.set(SHARED_BUDGET_HEALTH, status.SERVING)
    service.add(rls_pb2_grpc.add_RateLimitServiceServicer_to_server, RateLimitServicer(limiter),
                "envoy.service.ratelimit.v3.RateLimitService")
    service.run()
    return 0


def _require(ok: bool) -> None:
    if not ok:
        raise ConnectionError("storage check failed")


if __name__ == "__main__":
    sys.exit(main())
