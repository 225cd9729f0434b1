"""The operator commands: migrate, and purge-dlq as the Kubernetes CronJob runs it."""
from __future__ import annotations

import os
import subprocess
import sys

from deploy.local.processes import free_port
from novahouse.notifier.v1 import notifier_pb2 as pb


def manage(data_dir, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DLQ_CLEANUP_DAYS")}
    full_env.update({"DATA_DIR": str(data_dir), **env})
    return subprocess.run(
        [sys.executable, "-m", "services.notifier.manage", *args],
        env=full_env, capture_output=True, text=True, timeout=60,
    )


def test_purge_dlq_deletes_delivered_entries_older_than_the_cleanup_age(start_notifier, slack_receiver, tmp_path):
    notifier = start_notifier({"SLACK_WEBHOOK_URL": slack_receiver.url})
    for n in range(3):
        notifier.slack(f"purge-{n}", f"Purge alert {n}")
    for n in range(3):
        notifier.wait_status(f"purge-{n}", pb.DELIVERED)
    slack_receiver.fail(404, times=1)
    notifier.slack("purge-dead", "Dead alert")
    notifier.wait_status("purge-dead", pb.DEAD)

    default = manage(tmp_path, "purge-dlq")
    assert default.returncode == 0 and "purged 0 delivered entries older than 30 days" in default.stdout
    everything = manage(tmp_path, "purge-dlq", DLQ_CLEANUP_DAYS="0")
    assert everything.returncode == 0 and "purged 3 delivered entries" in everything.stdout

    stats = manage(tmp_path, "dlq-stats")
    assert stats.returncode == 0 and "dead" in stats.stdout and "delivered" not in stats.stdout
    assert notifier.stats().dead == 1  # what was not delivered stays for the operator


def test_migrate_prints_what_it_did_and_fails_loudly_without_a_database(tmp_path):
    done = manage(tmp_path, "migrate")
    assert done.returncode == 0 and "notifier schema is at head" in done.stdout
    unreachable = manage(tmp_path, "migrate", DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    assert unreachable.returncode == 1 and "migrate failed" in unreachable.stderr
