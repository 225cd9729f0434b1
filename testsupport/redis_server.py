"""A redis-server of a test's own, on a free port, that the test may kill and start again (the shared one stays up)."""
from __future__ import annotations

import shutil
from pathlib import Path

from deploy.local.processes import ManagedProcess, free_port
from testsupport.probes import tcp_open


class PrivateRedis:
    def __init__(self, log_dir: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is required on PATH and is not there")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [binary, "--port", str(self.port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
        self.process = ManagedProcess("redis", argv, {}, log_dir)

    def start(self) -> PrivateRedis:
        self.process.start().wait_until(lambda: tcp_open("127.0.0.1", self.port), 10, "listening")
        return self

    def kill(self) -> None:
        """SIGKILL: Redis goes away as in an outage."""
        self.process.kill()
