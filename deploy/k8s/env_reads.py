"""The environment variables a `python -m <module>` command reads, derived from the code, not from a list.

The module's file and every project module it imports (at any depth, lazily too) are parsed; a variable is read
where its name is a literal argument of the configuration readers (env_str/env_int/env_float/env_bool,
os.environ.get, os.getenv, the gateway's get/_flag over the environment dict) or an os.environ[...] subscript,
service_addr("chat") reads CHAT_ADDR, and a loop over the services' addresses reads every <SERVICE>_ADDR.
"""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

from services.runtime.config import DEFAULT_PORTS

READERS = {"env_str", "env_int", "env_float", "env_bool", "getenv", "get", "_flag"}
PROJECT_PACKAGES = ("services", "gateway", "deploy")
NAME = r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$"


def module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(tree: ast.AST, module: str) -> set[str]:
    found = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PROJECT_PACKAGES}


def _literal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _per_service_reads(node: ast.For) -> set[str]:
    """`for service in DEFAULT_ADDRS: get(f"{service.upper()}_ADDR")` reads every service's address."""
    names = {n.id for n in ast.walk(node.iter) if isinstance(n, ast.Name)}
    if not names & {"DEFAULT_ADDRS", "DEFAULT_PORTS"}:
        return set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.Call) and inner.args and isinstance(inner.args[0], ast.JoinedStr):
            tail = _literal(inner.args[0].values[-1])
            if tail == "_ADDR":
                return {f"{service.upper()}_ADDR" for service in DEFAULT_PORTS}
    return set()


def _reads(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.For):
            found |= _per_service_reads(node)
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in READERS:
                found |= {value for arg in node.args[:2] if (value := _literal(arg)) and re.match(NAME, value)}
            elif name == "service_addr" and node.args and (service := _literal(node.args[0])):
                found.add(f"{service.upper()}_ADDR")
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and \
                node.value.attr == "environ" and (value := _literal(node.slice)) and re.match(NAME, value):
            found.add(value)
    return found


@functools.cache
def reads(root: Path, module: str) -> frozenset[str]:
    """Every variable the module and the project modules it imports read."""
    seen: set[str] = set()
    pending = [module]
    names: set[str] = set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        path = module_file(root, current)
        if path is None:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        names |= _reads(tree)
        pending += sorted(_imports(tree, current) - seen)
    return frozenset(names)
