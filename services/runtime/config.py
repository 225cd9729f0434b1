"""Configuration from environment variables, with safe defaults and clear errors on bad values."""
from __future__ import annotations

import os
from pathlib import Path


class ConfigError(ValueError):
    """A configuration variable is set to something the service cannot use."""


def env_str(name: str, default: str = "") -> str:
    value = os.environ.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = env_str(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def env_float(name: str, default: float, minimum: float | None = None) -> float:
    raw = env_str(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name, "").lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def data_dir() -> Path:
    """Folder for the embedded SQLite files of the local stack."""
    path = Path(env_str("DATA_DIR", "data")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


# The one place for where each service listens by default (GRPC_PORT overrides it in the service itself, and
# <NAME>_ADDR where the others reach it).
DEFAULT_PORTS = {"chat": 50051, "consent": 50052, "notifier": 50053, "ratelimit": 50054}
DEFAULT_ADDRS = {service: f"127.0.0.1:{port}" for service, port in DEFAULT_PORTS.items()}


def service_addr(service: str) -> str:
    """Address of another service, from CHAT_ADDR, CONSENT_ADDR, NOTIFIER_ADDR or RATELIMIT_ADDR."""
    return env_str(f"{service.upper()}_ADDR", DEFAULT_ADDRS[service])
