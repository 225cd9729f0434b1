"""A real Prometheus (Debian's `prometheus` package, `make prometheus`) for tests and the dashboard renderer: it
scrapes the given targets every second, loads deploy/monitoring's rule files, and stores in a temporary directory
on a free port; stopped and removed afterwards."""
from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import yaml

from deploy.local.processes import ManagedProcess, free_port, http_ok
from deploy.monitoring.generate import RULES

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SCRAPE_INTERVAL_S = 1


class Prometheus:
    def __init__(self, url: str, targets: dict[str, str]):
        self.url = url
        self.targets = targets

    def api(self, path: str, **params: Any) -> Any:  # Any: the API's JSON `data`
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result (a vector's samples, or a scalar as one sample)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return list(self.api("query_range", query=expr, start=start, end=end, step=step)["result"])

    def series_count(self, metric: str) -> int:
        return len(self.api("series", **{"match[]": metric}))

    def scrapes_of_every_target(self) -> int:
        """The fewest samples any target has: how many times each was scraped at least (all up)."""
        counts = []
        for job in self.targets:
            up = self.query(f'count_over_time(up{{job="{job}"}}[1h])')
            ok = self.query(f'up{{job="{job}"}} == 1')
            counts.append(int(float(up[0]["value"][1])) if up and ok else 0)
        return min(counts)

    def wait_for(self, expr: str, timeout: float = 60.0) -> None:
        """Until the expression has a result (a comparison holds)."""
        deadline = time.monotonic() + timeout
        while not self.query(expr):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expr} still has no result after {timeout}s")
            time.sleep(0.2)

    def wait_for_scrapes(self, scrapes: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.scrapes_of_every_target() < scrapes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Prometheus did not scrape every target {scrapes} times: "
                                   f"{self.api('targets')['activeTargets']}")
            time.sleep(0.2)


def config(targets: dict[str, str]) -> dict[str, Any]:
    """One scrape job per target (`job` is the service's name, as the rules' `up` alert reports it)."""
    return {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
        "rule_files": [str(path) for path in sorted(RULES.glob("*.yml"))],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [address]}]}
                           for job, address in targets.items()],
    }


@contextlib.contextmanager
def running_prometheus(targets: dict[str, str], timeout: float = 60.0) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` (job name -> host:port of a /metrics endpoint) until the block ends."""
    work = Path(tempfile.mkdtemp(prefix="prometheus-"))
    try:
        (work / "prometheus.yml").write_text(yaml.safe_dump(config(targets)))
        port = free_port()
        argv = [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d", "--log.level=warn"]
        process = ManagedProcess("prometheus", argv, {"PATH": "/usr/bin:/bin"}, work / "logs")
        process.start()
        try:
            process.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"), timeout, "ready")
            yield Prometheus(f"http://127.0.0.1:{port}", targets)
        finally:
            process.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
