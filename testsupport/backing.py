"""PostgreSQL schemas and Redis key prefixes private to one test, removed afterwards.

TEST_DATABASE_URL and TEST_REDIS_URL default to the servers on 127.0.0.1. A test that needs them fails (never
skips) when they cannot be reached: a skipped test in CI is a failed test.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import redis

from deploy.local import database_roles
from deploy.local.database_roles import ServiceRoles

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def postgres_connect():
    try:
        return psycopg.connect(TEST_DATABASE_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise AssertionError(f"PostgreSQL at {TEST_DATABASE_URL} is required and unreachable: {exc}") from exc


def drop_schema(schema: str) -> None:
    with postgres_connect() as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def service_roles(name: str, services: tuple[str, ...] = ("chat", "consent", "notifier")
                  ) -> Iterator[dict[str, ServiceRoles]]:
    """Per service, a fresh schema owned by a fresh migration role and a service role that owns nothing (names
    unique to this test); afterwards both roles and everything they own are dropped (DROP OWNED, DROP ROLE), here in
    the one test database the services used."""
    roles = {svc: ServiceRoles.named(svc, unique_name(f"{name}_{svc}"), schema=unique_name(f"{name}_{svc}"))
             for svc in services}
    try:
        with postgres_connect() as conn:
            for svc_roles in roles.values():
                database_roles.create(conn, svc_roles)
        yield roles
    finally:
        failures = []
        with postgres_connect() as conn:
            for svc_roles in roles.values():  # each service's roles go even when another's drop failed
                try:
                    database_roles.drop(conn, svc_roles)
                    conn.execute(f'DROP SCHEMA IF EXISTS "{svc_roles.schema}" CASCADE')
                except psycopg.Error as exc:
                    failures.append(f"{svc_roles.role}: {exc}")
        if failures:
            raise AssertionError(f"test roles left behind: {failures}")


def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise AssertionError(f"Redis at {TEST_REDIS_URL} is required and unreachable: {exc}") from exc
    return client


def delete_prefix(prefix: str) -> int:
    client = redis_client()
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    return len(keys)
