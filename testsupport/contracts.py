"""The RPCs in protos/ and their REST routes, read from the generated descriptor set.

Tests record every RPC they call through Envoy; at the end of a full run the suite fails if an RPC was never
called that way, so a new RPC cannot land without a test.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTOR_SET = ROOT / "gen" / "novahouse.pb"

RECORDED: set[str] = set()  # "/pkg.Service/Method" called through Envoy during this test session


@dataclass(frozen=True)
class HttpRoute:
    rpc: str       # "/novahouse.chat.v1.Chat/SendMessage"
    verb: str      # "POST"
    pattern: re.Pattern


def load_descriptor_set(path: Path = DESCRIPTOR_SET) -> descriptor_pb2.FileDescriptorSet:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(path.read_bytes())
    return fds


def project_files(fds: descriptor_pb2.FileDescriptorSet):
    return [f for f in fds.file if f.package.startswith("novahouse.")]


def all_rpcs(fds: descriptor_pb2.FileDescriptorSet | None = None) -> set[str]:
    fds = fds or load_descriptor_set()
    return {
        f"/{f.package}.{svc.name}/{m.name}" for f in project_files(fds) for svc in f.service for m in svc.method
    }


def _template_regex(template: str) -> re.Pattern:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{regex}$")


@functools.lru_cache(maxsize=1)
def http_routes() -> tuple[HttpRoute, ...]:
    routes = []
    for f in project_files(load_descriptor_set()):
        for svc in f.service:
            for m in svc.method:
                rule = m.options.Extensions[annotations_pb2.http]
                kind = rule.WhichOneof("pattern")
                if kind and kind != "custom":
                    routes.append(HttpRoute(f"/{f.package}.{svc.name}/{m.name}", kind.upper(),
                                            _template_regex(getattr(rule, kind))))
    return tuple(routes)


def rpc_for_rest(verb: str, path: str) -> str | None:
    path = path.split("?", 1)[0]
    for route in http_routes():
        if route.verb == verb.upper() and route.pattern.match(path):
            return route.rpc
    return None


def missing_rpcs(recorded: set[str], fds: descriptor_pb2.FileDescriptorSet | None = None) -> list[str]:
    return sorted(all_rpcs(fds) - recorded)
