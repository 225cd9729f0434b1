"""`make up`'s program: everything starts, answers through Envoy, and Ctrl-C stops every process it started."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading

import requests

from testsupport.probes import tcp_open


def test_stack_command_starts_everything_and_ctrl_c_stops_it(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.local.stack", "--data-dir", str(tmp_path), "--free-ports"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert up.wait(120), "".join(lines)
        urls = dict(re.findall(r"^\s{2}(.+?)\s{2,}(\S+)$", "".join(lines), re.M))
        public = urls["public REST and gRPC"]
        reply = requests.post(public + "/api/chatbot/chat", json={"message": "Dzień dobry"}, timeout=10)
        assert reply.status_code == 200 and reply.json()["reply"]
        ports = [int(url.rsplit(":", 1)[1]) for url in urls.values()]
        assert all(tcp_open("127.0.0.1", port) for port in ports)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    assert not any(tcp_open("127.0.0.1", port) for port in ports), "a process of the stack is still listening"
