"""The rate-limit policy file: loaded and validated at start, with an error that names the bad line.

The format follows envoyproxy/ratelimit: a domain and a tree of descriptors, each node a key with an optional
value; a node with a rate_limit (unit, requests_per_unit) limits the requests whose descriptor reaches it;
shadow_mode counts and logs but never refuses.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from limits import RateLimitItem, parse

UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
STRATEGIES = ("moving-window",)  # exact: every hit of the last window counts, none estimated
_NODE_KEYS = {"key", "value", "rate_limit", "descriptors", "shadow_mode", "override_env"}


class PolicyError(ValueError):
    """The policy file cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Limit:
    item: RateLimitItem
    shadow_mode: bool
    name: str  # the descriptor path, for logs and metrics

    @property
    def per_unit(self) -> int:
        return self.item.amount

    @property
    def window_s(self) -> int:
        return self.item.get_expiry()


@dataclass
class Node:
    key: str
    value: str | None
    limit: Limit | None = None
    children: list[Node] = field(default_factory=list)

    def child(self, key: str, value: str) -> Node | None:
        wildcard = None
        for node in self.children:
            if node.key == key:
                if node.value == value:
                    return node
                if node.value is None:
                    wildcard = node
        return wildcard


@dataclass
class Policy:
    domain: str
    root: Node

    def limit_for(self, entries: list[tuple[str, str]]) -> Limit | None:
        """The limit a descriptor reaches, or None when the policy does not limit it."""
        node = self.root
        for key, value in entries:
            found = node.child(key, value)
            if found is None:
                return None
            node = found
        return node.limit

    def limits(self) -> list[Limit]:
        found: list[Limit] = []
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.limit:
                found.append(node.limit)
            stack.extend(node.children)
        return found


def _where(path: Path, node: yaml.Node) -> str:
    return f"{path}:{node.start_mark.line + 1}"


def _mapping(path: Path, node: yaml.Node, what: str) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        raise PolicyError(f"{_where(path, node)}: {what} must be a mapping")
    return {k.value: v for k, v in node.value}


def _scalar(path: Path, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.value == "":
        raise PolicyError(f"{_where(path, node)}: {what} must be a non-empty value")
    return str(node.value)


def _rate(path: Path, node: yaml.Node, override_env: str | None, name: str) -> RateLimitItem:
    if override_env and os.environ.get(override_env, "").strip():
        text = os.environ[override_env].strip()
        try:
            return parse(text)
        except ValueError:
            raise PolicyError(
                f"{override_env}={text!r} (overriding {_where(path, node)}) is not a rate like '30 per minute'"
            ) from None
    fields = _mapping(path, node, "rate_limit")
    unknown = set(fields) - {"unit", "requests_per_unit"}
    if unknown:
        raise PolicyError(f"{_where(path, node)}: unknown rate_limit field(s) {sorted(unknown)}")
    if "unit" not in fields or "requests_per_unit" not in fields:
        raise PolicyError(f"{_where(path, node)}: rate_limit needs unit and requests_per_unit")
    unit = _scalar(path, fields["unit"], "unit").lower()
    if unit not in UNITS:
        raise PolicyError(f"{_where(path, fields['unit'])}: unit {unit!r} is not one of {', '.join(UNITS)}")
    raw = _scalar(path, fields["requests_per_unit"], "requests_per_unit")
    if not raw.isdigit() or int(raw) < 1:
        raise PolicyError(f"{_where(path, fields['requests_per_unit'])}: requests_per_unit must be a whole number >= 1")
    return parse(f"{int(raw)} per {unit}")


def _node(path: Path, node: yaml.Node, parent: str) -> Node:
    fields = _mapping(path, node, "a descriptor")
    unknown = set(fields) - _NODE_KEYS
    if unknown:
        raise PolicyError(f"{_where(path, node)}: unknown descriptor field(s) {sorted(unknown)}")
    if "key" not in fields:
        raise PolicyError(f"{_where(path, node)}: a descriptor needs a key")
    key = _scalar(path, fields["key"], "key")
    value = _scalar(path, fields["value"], "value") if "value" in fields else None
    name = f"{parent}.{key}" + (f"={value}" if value is not None else "")
    shadow = False
    if "shadow_mode" in fields:
        raw = _scalar(path, fields["shadow_mode"], "shadow_mode").lower()
        if raw not in ("true", "false"):
            raise PolicyError(f"{_where(path, fields['shadow_mode'])}: shadow_mode must be true or false")
        shadow = raw == "true"
    override_env = _scalar(path, fields["override_env"], "override_env") if "override_env" in fields else None
    result = Node(key=key, value=value)
    if "rate_limit" in fields:
        result.limit = Limit(_rate(path, fields["rate_limit"], override_env, name), shadow, name)
    elif override_env:
        raise PolicyError(f"{_where(path, node)}: override_env without a rate_limit to override")
    result.children = _children(path, fields.get("descriptors"), name)
    if result.limit is None and not result.children:
        raise PolicyError(f"{_where(path, node)}: descriptor {name} has neither a rate_limit nor descriptors")
    return result


def _children(path: Path, node: yaml.Node | None, parent: str) -> list[Node]:
    if node is None:
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise PolicyError(f"{_where(path, node)}: descriptors must be a list")
    children = [_node(path, child, parent) for child in node.value]
    seen: set[tuple[str, str | None]] = set()
    for child, raw in zip(children, node.value, strict=True):
        ident = (child.key, child.value)
        if ident in seen:
            raise PolicyError(f"{_where(path, raw)}: duplicate descriptor {child.key}={child.value}")
        seen.add(ident)
    return children


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file ({exc.strerror})") from None
    try:
        document = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise PolicyError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if document is None:
        raise PolicyError(f"{path}: the policy file is empty")
    top = _mapping(path, document, "the policy")
    unknown = set(top) - {"domain", "strategy", "descriptors"}
    if unknown:
        raise PolicyError(f"{_where(path, document)}: unknown top-level field(s) {sorted(unknown)}")
    if "domain" not in top:
        raise PolicyError(f"{_where(path, document)}: the policy needs a domain")
    domain = _scalar(path, top["domain"], "domain")
    strategy = _scalar(path, top["strategy"], "strategy") if "strategy" in top else STRATEGIES[0]
    if strategy not in STRATEGIES:
        raise PolicyError(
            f"{_where(path, top['strategy'])}: strategy {strategy!r} is not one of {', '.join(STRATEGIES)}"
        )
    if "descriptors" not in top:
        raise PolicyError(f"{_where(path, document)}: the policy needs descriptors")
    return Policy(domain=domain, root=Node("", None, None, _children(path, top["descriptors"], domain)))
