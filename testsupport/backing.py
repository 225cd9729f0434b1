"""PostgreSQL schemas and Redis key prefixes private to one test, removed afterwards.

TEST_DATABASE_URL and TEST_REDIS_URL default to the servers on 127.0.0.1. A test that needs them fails (never
skips) when they cannot be reached: a skipped test in CI is a failed test.
"""
from __future__ import annotations

import os
import uuid

import psycopg
import redis

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
