"""Fixtures shared by every test: private PostgreSQL schemas, private Redis prefixes, fake Slack and Monday.com."""
from __future__ import annotations

import pytest

from testsupport import backing
from testsupport.receivers import HttpReceiver, monday_graphql


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


def _ran_whole_suite(session) -> bool:
    opts = session.config.option
    whole = ("tests", str(session.config.rootpath / "tests"))
    explicit = [a for a in session.config.args if a.rstrip("/") not in whole]
    return not explicit and not opts.keyword and not opts.markexpr and not getattr(opts, "deselect", None) \
        and not getattr(opts, "lf", False)


def pytest_sessionfinish(session, exitstatus):
    """Contract coverage: a full run fails if some RPC in protos/ was never called through Envoy."""
    from testsupport import contracts

    if not _ran_whole_suite(session) or session.testsfailed:
        return
    missing = contracts.missing_rpcs(contracts.RECORDED)
    if missing:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["", "CONTRACT COVERAGE FAILED: these RPCs were never called through Envoy by any test:"]
        lines += [f"  {rpc}" for rpc in missing]
        if reporter:
            reporter.write_line("\n".join(lines), red=True)
        session.exitstatus = 1
