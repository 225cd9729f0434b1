"""Fixtures of the notifier tests: real notifier processes and real Slack, Monday.com and SMTP receivers."""
from __future__ import annotations

import pytest

from tests.notifier.helpers import NotifierProcess
from tests.support.receivers import HttpReceiver, monday_graphql
from tests.support.smtp import SmtpReceiver


@pytest.fixture
def smtp_receiver():
    with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture
def start_notifier(tmp_path):
    """start_notifier(env, data_dir=None, name=...) -> a SERVING NotifierProcess, stopped after the test."""
    started: list[NotifierProcess] = []

    def start(env: dict[str, str], data_dir=None, name: str = "notifier") -> NotifierProcess:
        process = NotifierProcess(data_dir or tmp_path, env, name)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def module_receivers():
    """Slack, Monday.com and SMTP receivers shared by the tests of one module."""
    with HttpReceiver() as slack, HttpReceiver(respond=monday_graphql) as monday, SmtpReceiver() as smtp:
        yield slack, monday, smtp
