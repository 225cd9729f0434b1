"""`make up`: the whole platform as local processes on embedded defaults.

Starts consent, notifier and chat, the rate-limit service and Envoy, waits until each is healthy, prints the
URLs, and stops everything on Ctrl-C. The tests start the same stack on free ports. The sales inbox's sign-in gets a
signing key and one agent made in the data dir (deploy/local/staff_login.py) unless STAFF_* say otherwise.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from deploy.local import database_roles
from deploy.local.processes import ManagedProcess, free_port, grpc_serving, http_ok, python_module
from deploy.local.staff_login import DevLogin, configured_elsewhere, dev_login
from gateway.envoy import envoy_argv, render
from services.runtime.config import DEFAULT_PORTS

SERVICES = ("consent", "notifier", "chat")
REPLICATED = ("chat", "consent", "notifier", "ratelimit")  # Envoy's upstreams, each of which may have several servers


@dataclass
class StackConfig:
    data_dir: Path
    public_port: int = 8080        # Envoy: public REST + gRPC
    admin_port: int = 8081         # Envoy: admin and internal RPCs, bound to 127.0.0.1
    envoy_admin_port: int = 9901   # Envoy's own admin interface, 127.0.0.1
    ports: dict[str, int] = field(
        default_factory=lambda: dict(DEFAULT_PORTS)
    )
    env: dict[str, str] = field(default_factory=dict)                     # for every process
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)  # per process name
    gateway: bool = True
    base_id: int = 0
    chat_replicas: int = 1  # more than one: the others on replica_ports, and Envoy's CHAT_ADDRS names them all
    replica_ports: list[int] = field(default_factory=list)
    # Servers of consent, the notifier and the rate-limit service (1 when absent): the others on extra_ports, and
    # Envoy's <SERVICE>_ADDRS names them all. Replicas share state only through DATABASE_URL / REDIS_URL.
    replicas: dict[str, int] = field(default_factory=dict)
    extra_ports: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def on_free_ports(cls, data_dir: Path, **kwargs: Any) -> StackConfig:  # Any: the dataclass's other fields
        return cls(
            data_dir=data_dir,
            public_port=free_port(),
            admin_port=free_port(),
            envoy_admin_port=free_port(),
            ports={name: free_port() for name in ("chat", "consent", "notifier", "ratelimit")},
            base_id=free_port(),
            **kwargs,
        )

    def addr(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def replica_count(self, name: str) -> int:
        return self.chat_replicas if name == "chat" else self.replicas.get(name, 1)

    def ports_beyond_first(self, name: str) -> list[int]:
        return self.replica_ports if name == "chat" else self.extra_ports.setdefault(name, [])

    def addrs(self, name: str) -> list[str]:
        """Every server of this service, the first on its ADDR."""
        return [self.addr(name), *(f"127.0.0.1:{port}" for port in self.ports_beyond_first(name))]

    def chat_addrs(self) -> list[str]:
        return self.addrs("chat")


class LocalStack:
    def __init__(self, config: StackConfig):
        self.config = config
        self.processes: dict[str, ManagedProcess] = {}
        self.log_dir = Path(config.data_dir) / "logs"
        self.staff: DevLogin | None = None  # the local inbox sign-in, when this stack made it

    def _env(self, name: str) -> dict[str, str]:
        cfg = self.config
        env = dict(os.environ)
        env.update(
            {
                "DATA_DIR": str(cfg.data_dir),
                "PYTHONUNBUFFERED": "1",
                **{f"{svc.upper()}_ADDR": cfg.addr(svc) for svc in cfg.ports},
            }
        )
        env.update(cfg.env)
        env.update(cfg.service_env.get(name, {}))
        env["GRPC_PORT"] = str(cfg.ports[name]) if name in cfg.ports else env.get("GRPC_PORT", "0")
        return env

    def _set_up_staff_login(self) -> None:
        """The data dir's dev key and agent for chat (every replica) and Envoy, unless STAFF_* are set already."""
        cfg = self.config
        if configured_elsewhere({**os.environ, **cfg.env, **cfg.service_env.get("chat", {})}):
            return
        self.staff = dev_login(cfg.data_dir)
        # Over any empty STAFF_* (a manifest's "not set"); a test's own STAFF_COOKIE_SECURE stays.
        chat = cfg.service_env.get("chat", {})
        cfg.service_env["chat"] = {**chat, **{k: v for k, v in self.staff.chat_env().items() if not chat.get(k)}}
        cfg.env.update(self.staff.gateway_env())

    def start_replica(self, name: str, number: int, timeout: float = 60.0) -> ManagedProcess:
        """Server `number` (2, 3, ...) of a service, named <name>-<number>, on its own port with the service's
        environment."""
        port = self.config.ports_beyond_first(name)[number - 2]
        env = {**self._env(name), "GRPC_PORT": str(port)}
        proc = ManagedProcess(f"{name}-{number}", python_module(server_module(name)), env, self.log_dir)
        self.processes[f"{name}-{number}"] = proc.start()
        proc.wait_until(lambda: grpc_serving(f"127.0.0.1:{port}"), timeout, "SERVING")
        return proc

    def start_chat_replica(self, number: int, timeout: float = 60.0) -> ManagedProcess:
        return self.start_replica("chat", number, timeout)

    def start_service(self, name: str, timeout: float = 60.0) -> ManagedProcess:
        proc = ManagedProcess(name, python_module(server_module(name)), self._env(name), self.log_dir)
        self.processes[name] = proc.start()
        proc.wait_until(lambda: grpc_serving(self.config.addr(name)), timeout, "SERVING")
        return proc

    def start_ratelimit(self, timeout: float = 30.0) -> ManagedProcess:
        return self.start_service("ratelimit", timeout)

    def start_replicas(self, name: str) -> None:
        """The servers of this service beyond the first, which (on a database) has migrated it."""
        for number in range(2, self.config.replica_count(name) + 1):
            self.start_replica(name, number)

    def start_gateway(self, timeout: float = 30.0) -> ManagedProcess:
        """Envoy, its configuration rendered for this stack's ports; up when its admin interface says ready."""
        cfg = self.config
        env = self._env("envoy")
        env.update({
            "PUBLIC_PORT": str(cfg.public_port),
            "ADMIN_PORT": str(cfg.admin_port),
            "ENVOY_ADMIN_PORT": str(cfg.envoy_admin_port),
        })
        for name in REPLICATED:
            if len(cfg.addrs(name)) > 1:
                env[f"{name.upper()}_ADDRS"] = ",".join(cfg.addrs(name))
        env.setdefault("PUBLIC_BIND", "0.0.0.0")
        config_path = Path(cfg.data_dir) / f"envoy-{cfg.public_port}.yaml"
        config_path.write_text(render(env))
        proc = ManagedProcess("envoy", envoy_argv(config_path, cfg.base_id), env, self.log_dir)
        self.processes["envoy"] = proc.start()
        proc.wait_until(lambda: http_ok(f"http://127.0.0.1:{cfg.envoy_admin_port}/ready"), timeout, "ready")
        return proc

    def start(self) -> LocalStack:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        for name in REPLICATED:
            beyond = self.config.ports_beyond_first(name)
            while len(beyond) < self.config.replica_count(name) - 1:
                beyond.append(free_port())
        self._set_up_staff_login()
        try:
            for name in SERVICES:
                self.start_service(name)
                self.start_replicas(name)
            if self.config.gateway:
                self.start_ratelimit()
                self.start_replicas("ratelimit")
                self.start_gateway()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
        self.processes.clear()

    def urls(self) -> dict[str, str]:
        cfg = self.config
        return {
            "demo page with the chat widget": f"http://localhost:{cfg.public_port}",
            "public REST and gRPC": f"http://127.0.0.1:{cfg.public_port}",
            "admin REST and gRPC (localhost only)": f"http://127.0.0.1:{cfg.admin_port}",
            "Envoy admin": f"http://127.0.0.1:{cfg.envoy_admin_port}",
            **{f"{name} gRPC": cfg.addr(name) for name in cfg.ports},
        }


def server_module(name: str) -> str:
    return "gateway.ratelimit.server" if name == "ratelimit" else f"services.{name}.server"


def database_env(prefix: str | None) -> dict[str, dict[str, str]]:
    """Given an administrative PostgreSQL DATABASE_URL, each service runs as its own role and is migrated by its own
    migration role (the administrative URL itself reaches no process); with none (SQLite), nothing changes."""
    admin_url = os.environ.get("DATABASE_URL", "")
    if not admin_url.startswith(("postgres://", "postgresql://", "postgresql+")):
        return {}
    roles = database_roles.local_roles(admin_url, prefix)
    del os.environ["DATABASE_URL"]
    print("PostgreSQL: " + ", ".join(f"{svc} connects as {r.role} (migrated by {r.migrator}) on schema {r.schema}"
                                     for svc, r in roles.items()), flush=True)
    return {svc: r.env(admin_url) for svc, r in roles.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "data"), help="SQLite files and logs")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PUBLIC_PORT", "8080")), help="public port")
    parser.add_argument("--admin-port", type=int, default=int(os.environ.get("ADMIN_PORT", "8081")))
    parser.add_argument("--free-ports", action="store_true", help="pick free ports for everything (a second stack)")
    parser.add_argument("--database-prefix", help="on PostgreSQL: roles <prefix>_<service>[_migrator] on schemas "
                                                  "<prefix>_<service> (default: novahouse_<service> on <service>)")
    parser.add_argument("--chat-replicas", type=int, default=1, help="chat servers behind Envoy (default 1)")
    args = parser.parse_args(argv)

    data_dir = Path(args.data_dir).resolve()
    if args.free_ports:
        config = StackConfig.on_free_ports(data_dir)
    else:
        config = StackConfig(data_dir=data_dir, public_port=args.port, admin_port=args.admin_port)
    config.chat_replicas = max(1, args.chat_replicas)
    try:
        config.service_env.update(database_env(args.database_prefix))
    except psycopg.Error as exc:
        print(f"start-up failed: cannot create the database roles: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    stack = LocalStack(config)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    print(f"starting NovaHouse (logs in {stack.log_dir}) ...", flush=True)
    try:
        stack.start()
    except (RuntimeError, TimeoutError) as exc:
        print(f"start-up failed: {exc}", file=sys.stderr)
        return 1
    print("NovaHouse is up:")
    for what, url in stack.urls().items():
        print(f"  {what:40s} {url}")
    if stack.staff:
        print(f"Sales inbox: http://localhost:{config.public_port}/inbox/ as {stack.staff.username!r}, password in "
              f"{stack.staff.login_file} (signing key {stack.staff.key_file}; STAFF_USERS and STAFF_TOKEN_KEY_FILE "
              "set your own)")
    print("Ctrl-C stops everything.", flush=True)
    while not stopped.wait(1.0):
        dead = [name for name, proc in stack.processes.items() if not proc.running]
        if dead:
            print(f"exited unexpectedly: {', '.join(dead)} (see {stack.log_dir})", file=sys.stderr)
            break
    print("stopping ...", flush=True)
    stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
