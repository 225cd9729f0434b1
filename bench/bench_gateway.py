"""REST chat through Envoy: no limiter vs the local shield only vs the global limiter (with the shield).

One set of services; four Envoys (each with its own rate-limit service where it uses one) in front of them,
measured in interleaved rounds so that drift in the services (a growing database) hits every variant alike.
The fourth is a second no-limiter Envoy: its difference from the first is the noise floor of this machine.
Limits are raised so that nothing is refused: what is measured is the cost of asking.
Throughput is measured closed-loop at saturation; latency also at a fixed rate below saturation (open loop),
where a percentile measures the hop rather than the queue in front of two saturated cores.
What the limiter adds to a request is also read directly: Envoy's histogram of its wait on the limiter.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import requests

from bench.load import LoadResult, run_load, run_rate
from testsupport.stack import extra_gateway, running_stack

QUESTIONS = ["Dzień dobry", "Ile kosztuje remont mieszkania?", "How long does a renovation take?",
             "Czy działacie w Krakowie?", "What packages do you offer?"]
RAISED = {"CHAT_RATE_LIMIT": "100000000 per minute", "API_RATE_LIMIT_MINUTE": "100000000 per minute",
          "API_RATE_LIMIT_HOUR": "100000000 per hour", "SHIELD_BURST": "100000000", "SHIELD_PER_SECOND": "100000000"}
VARIANTS = {
    "no limiter": {"LOCAL_RATE_LIMIT_DISABLED": "true", "GLOBAL_RATE_LIMIT_DISABLED": "true"},
    "local shield only": {"GLOBAL_RATE_LIMIT_DISABLED": "true"},
    "global limiter": {},
    "no limiter, control": {"LOCAL_RATE_LIMIT_DISABLED": "true", "GLOBAL_RATE_LIMIT_DISABLED": "true"},
}
STATS_FLUSH_S = 5.5  # Envoy merges its workers' histograms every 5 s (stats_flush_interval)
THREADS = int(os.environ.get("BENCH_THREADS", "8"))
ROUNDS, SECONDS = int(os.environ.get("BENCH_ROUNDS", "6")), 5.0
FIXED_RATE_SHARE = 0.5


def body(thread: int, n: int) -> dict:
    return {"message": QUESTIONS[(thread + n) % len(QUESTIONS)]}


def merge(results: list[LoadResult]) -> LoadResult:
    merged = LoadResult()
    for r in results:
        merged.latencies_s += r.latencies_s
        merged.errors += r.errors
        merged.elapsed_s += r.elapsed_s
    return merged


def limiter_wait_buckets(envoy_admin_port: int) -> dict[float, int]:
    """Envoy's cumulative histogram of its wait on the rate-limit service: {upper bound in ms: requests}."""
    text = requests.get(f"http://127.0.0.1:{envoy_admin_port}/stats/prometheus", timeout=5).text
    pattern = r'^envoy_cluster_upstream_rq_time_bucket\{envoy_cluster_name="ratelimit",le="([0-9.]+|\+Inf)"\} (\d+)$'
    return {float(le): int(n) for le, n in re.findall(pattern, text, re.MULTILINE)}


def wait_percentile(before: dict[float, int], after: dict[float, int], q: float) -> tuple[float, int]:
    """An upper bound, in ms, on the share q of the waits between two readings, and how many waits there were.
    Envoy truncates times to whole milliseconds, so a bucket bound b holds waits shorter than floor(b) + 1 ms."""
    counts = {le: after[le] - before.get(le, 0) for le in sorted(after)}
    total = max(counts.values(), default=0)
    for le, n in counts.items():
        if total and n >= q * total:
            return math.floor(le) + 1 if le != float("inf") else le, total
    return float("inf"), total


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp), env=RAISED, gateway=False) as services, \
            contextlib.ExitStack() as gateways:
        configs = {
            name: gateways.enter_context(extra_gateway(services, Path(tmp) / re.sub(r"\W+", "-", name),
                                                       env={**RAISED, **env})).stack.config
            for name, env in VARIANTS.items()
        }
        ports = {name: config.public_port for name, config in configs.items()}
        limiter_admin = configs["global limiter"].envoy_admin_port
        waits = [limiter_wait_buckets(limiter_admin)]
        runs: dict[str, list[LoadResult]] = {name: [] for name in VARIANTS}
        for _ in range(ROUNDS):
            for name, port in ports.items():
                runs[name].append(run_load(port, "/api/chatbot/chat", body, threads=THREADS, duration_s=SECONDS))
        time.sleep(STATS_FLUSH_S)
        waits.append(limiter_wait_buckets(limiter_admin))
        rate = round(FIXED_RATE_SHARE * merge(runs["no limiter"]).rps)
        paced: dict[str, list[LoadResult]] = {name: [] for name in VARIANTS}
        for _ in range(ROUNDS):
            for name, port in ports.items():
                paced[name].append(run_rate(port, "/api/chatbot/chat", body, rate=rate, duration_s=SECONDS))
        time.sleep(STATS_FLUSH_S)
        waits.append(limiter_wait_buckets(limiter_admin))
    results = {name: merge(r) for name, r in runs.items()}
    base = results["no limiter"]
    paired = {name: sorted(r.rps / b.rps for r, b in zip(runs[name], runs["no limiter"], strict=True)) for name in runs}
    print(f"REST POST /api/chatbot/chat through Envoy, {THREADS} client threads, "
          f"{ROUNDS} x {SECONDS:.0f} s per variant")
    print(f"{'variant':20s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>7s} {'x no-limiter':>13s} "
          f"{'per-round x (median, min-max)':>31s} {'p99 +ms':>8s}")
    for name, r in results.items():
        rounds = paired[name]
        print(f"{name:20s} {r.rps:8.1f} {r.p50_ms:8.2f} {r.percentile_ms(0.99):8.2f} {r.errors:7d} "
              f"{r.rps / base.rps:13.3f} {statistics.median(rounds):15.3f} ({rounds[0]:.3f}-{rounds[-1]:.3f}) "
              f"{r.percentile_ms(0.99) - base.percentile_ms(0.99):8.2f}")
    growth = base.percentile_ms(0.99) * (base.rps / results["global limiter"].rps - 1)
    print(f"(closed loop: {THREADS} requests always in flight, so latency grows as throughput falls (Little's law); "
          f"the global limiter's throughput alone accounts for +{growth:.2f} ms at p99)")
    print(f"\nLatency at a fixed {rate} req/s ({FIXED_RATE_SHARE:.0%} of the no-limiter throughput above), open loop, "
          f"timed from when each request was due, {ROUNDS} x {SECONDS:.0f} s per variant")
    print(f"{'variant':20s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>7s} {'p50 +ms':>8s} {'p99 +ms':>8s} "
          f"{'per-round p99 +ms (median, min-max)':>37s}")
    fixed = {name: merge(r) for name, r in paced.items()}
    for name, r in fixed.items():
        added = sorted(a.percentile_ms(0.99) - b.percentile_ms(0.99)
                       for a, b in zip(paced[name], paced["no limiter"], strict=True))
        print(f"{name:20s} {r.p50_ms:8.2f} {r.percentile_ms(0.99):8.2f} {r.errors:7d} "
              f"{r.p50_ms - fixed['no limiter'].p50_ms:8.2f} "
              f"{r.percentile_ms(0.99) - fixed['no limiter'].percentile_ms(0.99):8.2f} "
              f"{statistics.median(added):17.2f} ({added[0]:.2f} to {added[-1]:.2f})")
    print("\nEnvoy's wait on the global limiter, per request (whole milliseconds, as Envoy records them)")
    for phase, before, after in (("closed loop", waits[0], waits[1]), (f"fixed {rate} req/s", waits[1], waits[2])):
        p50, total = wait_percentile(before, after, 0.5)
        p99, _ = wait_percentile(before, after, 0.99)
        print(f"{phase:20s} requests {total:7d}   p50 < {p50:g} ms   p99 < {p99:g} ms")
    print("target: global limiter >= 0.85x no-limiter throughput, <= +2 ms at p99; "
          "'no limiter, control' shows how far two identical Envoys differ here")


if __name__ == "__main__":
    main()
