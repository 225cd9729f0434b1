"""Wait until a service's database schema is at the newest revision its code has (a Deployment's init container).

    python -m services.runtime.schema_wait chat|consent|notifier [--timeout-s 600] [--interval-s 2]

It connects as the service's own role (DATABASE_URL, DB_SCHEMA), which cannot migrate: the migration Job does that
with MIGRATION_DATABASE_URL, and a pod scheduled before the Job has finished waits here instead of serving on an
older schema. Exits 0 once at head, 1 when the time runs out (the kubelet then restarts the init container).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from services.runtime.db import Database
from services.runtime.migrate import at_head

SERVICES = ("chat", "consent", "notifier")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.runtime.schema_wait", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--interval-s", type=float, default=2.0)
    args = parser.parse_args(argv)
    migrations = Path(__file__).resolve().parents[1] / args.service / "migrations"
    db = Database(args.service)
    deadline = time.monotonic() + args.timeout_s
    last_error = "not at head yet"
    try:
        while True:
            try:
                if at_head(db, migrations):
                    print(f"{args.service} database schema is at head (schema {db.schema or '-'})", flush=True)
                    return 0
                last_error = "not at head yet"
            except SQLAlchemyError as exc:
                last_error = type(exc).__name__
            if time.monotonic() >= deadline:
                print(f"{args.service} database schema not at head after {args.timeout_s:.0f} s: {last_error}",
                      file=sys.stderr)
                return 1
            time.sleep(args.interval_s)
    finally:
        db.dispose()


if __name__ == "__main__":
    sys.exit(main())
