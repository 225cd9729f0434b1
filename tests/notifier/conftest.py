"""Fixtures of the notifier tests: real notifier processes and real Slack, Monday.com and SMTP receivers."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testsupport.notifier import NotifierProcess
from testsupport.receivers import HttpReceiver, monday_graphql
from testsupport.smtp import SmtpReceiver


@pytest.fixture
def smtp_receiver():
    with SmtpReceiver() as receiver:
        yield receiver


@contextlib.contextmanager
def _notifiers(default_dir: Callable[[], Path]) -> Iterator[Callable[..., NotifierProcess]]:
    """A start(env, data_dir=None, name=...) function; every notifier it started is stopped on exit."""
    started: list[NotifierProcess] = []

    def start(env: dict[str, str], data_dir: Path | None = None, name: str = "notifier") -> NotifierProcess:
        process = NotifierProcess(data_dir or default_dir(), env, name)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.stop()


@pytest.fixture
def start_notifier(tmp_path):
    """start_notifier(env, data_dir=None, name=...) -> a SERVING NotifierProcess, stopped after the test."""
    with _notifiers(lambda: tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def start_module_notifier(tmp_path_factory):
    """The same for a notifier the tests of one module share, stopped after the module; each in its own directory."""
    with _notifiers(lambda: tmp_path_factory.mktemp("notifier")) as start:
        yield start


@pytest.fixture(scope="module")
def module_receivers():
    """Slack, Monday.com and SMTP receivers shared by the tests of one module."""
    with HttpReceiver() as slack, HttpReceiver(respond=monday_graphql) as monday, SmtpReceiver() as smtp:
        yield slack, monday, smtp
