"""The operator and CronJob command line every service's manage.py is made of.

A command gets the service's settings and, the first time it asks, the app that `build()` wires from them: so a
command run by a Job without the service's secrets (a migration, say) never builds what needs them. Each run is
one job with a request id of its own, prints what it did, and exits non-zero on failure without a traceback.
"""
from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from services.runtime import logs
from services.runtime.request_context import request_scope


class App(Protocol):
    def close(self) -> None: ...


S = TypeVar("S")
A = TypeVar("A", bound=App)


class CommandContext(Generic[S, A]):
    def __init__(self, settings: S, build: Callable[[S], A]):
        self.settings = settings
        self._build = build
        self.built = False

    @functools.cached_property
    def app(self) -> A:
        self.built = True
        return self._build(self.settings)


@dataclass(frozen=True)
class Command(Generic[S, A]):
    name: str
    help: str
    run: Callable[[CommandContext[S, A], argparse.Namespace], int]  # the exit code
    arguments: Callable[[argparse.ArgumentParser], object] = field(default=lambda _parser: None)


def run_command(service: str, description: str, settings: Callable[[], S], build: Callable[[S], A],
                commands: Sequence[Command[S, A]], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m services.{service}.manage", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in commands:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(sub)
        sub.set_defaults(command=command)
    args = parser.parse_args(argv)
    chosen: Command[S, A] = args.command
    logs.configure(f"{service}-manage")
    context: CommandContext[S, A] | None = None
    with request_scope():  # a command is a job: its log lines and the calls it makes share a minted id
        try:
            context = CommandContext(settings(), build)
            return chosen.run(context, args)
        except Exception as exc:  # noqa: BLE001 - a CronJob needs a message and a non-zero exit, not a traceback
            print(f"{chosen.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        finally:
            if context is not None and context.built:
                context.app.close()
