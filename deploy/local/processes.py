"""Child processes of the local stack: started with their own env, awaited on health, stopped cleanly."""
from __future__ import annotations

import functools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

_handed_out: set[int] = set()


@functools.cache
def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port no socket holds, below the kernel's ephemeral range.

    A port the kernel hands out for bind(0) comes from the ephemeral range, where any outgoing connection
    (to Redis, to an upstream) may take it as its local port before the server that was meant to listen on
    it starts; below that range only listeners compete. Checked on 0.0.0.0, as Envoy binds, and never
    handed out twice by one process."""
    floor = _ephemeral_floor()
    low = max(1024, floor - 12000)
    for _ in range(1000):
        port = random.randrange(low, floor)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {low}-{floor - 1}")


def grpc_serving(address: str, service: str = "", timeout: float = 1.0) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def http_ok(url: str) -> bool:
    """True when a GET of url answers 200 (Envoy's admin /ready)."""
    try:
        return requests.get(url, timeout=0.5).status_code == 200
    except requests.RequestException:
        return False


class ManagedProcess:
    """A child process whose output goes to a log file; stop() sends SIGTERM, then SIGKILL after a grace period."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = Path(log_dir) / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout: float = 30.0, what: str = "healthy") -> None:
        """Poll ready() until it is true; fail early, with the log's tail, if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"{self.name} exited with {code}:\n{self.tail()}")
            if ready():
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not {what} after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL to the whole process group, no drain: stop()'s last resort (crash tests call it directly)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (the servers drain), then kill() after grace seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
