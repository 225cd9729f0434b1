"""Fixtures shared by every test: private PostgreSQL schemas, private Redis prefixes, fake Slack and Monday.com."""
from __future__ import annotations

import pytest

from tests.support import backing
from tests.support.receivers import HttpReceiver, monday_graphql


@pytest.fixture
def pg_schema():
    """A fresh schema name on the test PostgreSQL, dropped (with everything in it) after the test."""
    backing.postgres_connect().close()
    schema = backing.unique_name("t")
    yield schema
    backing.drop_schema(schema)


@pytest.fixture
def pg_url() -> str:
    backing.postgres_connect().close()
    return backing.TEST_DATABASE_URL


@pytest.fixture
def redis_prefix():
    """A key prefix on the test Redis; every key under it is deleted after the test."""
    backing.redis_client()
    prefix = backing.unique_name("novahouse-test") + ":"
    yield prefix
    backing.delete_prefix(prefix)


@pytest.fixture
def redis_url() -> str:
    backing.redis_client()
    return backing.TEST_REDIS_URL


@pytest.fixture
def slack_receiver():
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
def monday_receiver():
    with HttpReceiver(respond=monday_graphql) as receiver:
        yield receiver
