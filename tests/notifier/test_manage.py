"""The operator commands: migrate, and purge-dlq as the Kubernetes CronJob runs it."""
from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest
from psycopg import sql

from deploy.local.processes import free_port
from novahouse.notifier.v1 import notifier_pb2 as pb
from testsupport.waiting import wait_for


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

    default = manage(tmp_path, "purge-dlq")
    assert default.returncode == 0 and "purged 0 delivered entries older than 30 days" in default.stdout
    everything = manage(tmp_path, "purge-dlq", DLQ_CLEANUP_DAYS="0")
    assert everything.returncode == 0 and "purged 3 delivered entries" in everything.stdout

    stats = manage(tmp_path, "dlq-stats")
    assert stats.returncode == 0 and "no deliveries" in stats.stdout


@pytest.mark.postgres
def test_purge_dlq_also_ends_old_failed_dead_and_cancelled_entries_and_keeps_fresh_ones(
    start_notifier, slack_receiver, tmp_path, pg_url, pg_schema
):
    database = {"DATABASE_URL": pg_url, "DB_SCHEMA": pg_schema}
    # No Monday.com key: its items wait in the queue until an erasure cancels them.
    notifier = start_notifier({"SLACK_WEBHOOK_URL": slack_receiver.url, "DLQ_MAX_RETRIES": "0",
                               "MONDAY_API_KEY": "", **database})
    ids: dict[str, str] = {}
    for age in ("old", "fresh"):
        notifier.slack(f"delivered-{age}", f"Delivered {age}")
        ids[f"delivered-{age}"] = notifier.wait_status(f"delivered-{age}", pb.DELIVERED).delivery_id
        slack_receiver.fail(500, times=1)
        notifier.slack(f"failed-{age}", f"Failed {age}")
        ids[f"failed-{age}"] = notifier.wait_status(f"failed-{age}", pb.FAILED).delivery_id
        slack_receiver.fail(404, times=1)
        notifier.slack(f"dead-{age}", f"Dead {age}")
        ids[f"dead-{age}"] = notifier.wait_status(f"dead-{age}", pb.DEAD).delivery_id
        queued = notifier.monday(f"cancelled-{age}", f"Lead {age}", {"lead": f"lead-{age}-0001"})
        ids[f"cancelled-{age}"] = queued.delivery_id
        notifier.erase(f"erasure-{age}", lead_ids=[f"lead-{age}-0001"])
    old = [ids[f"{status}-old"] for status in ("delivered", "failed", "dead", "cancelled")]
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            sql.SQL("UPDATE {}.deliveries SET updated_at = updated_at - interval '31 days', "
                    "delivered_at = delivered_at - interval '31 days' WHERE id = ANY(%s)").format(
                sql.Identifier(pg_schema)), (old,))

    purged = manage(tmp_path, "purge-dlq", **database)
    assert purged.returncode == 0, purged.stderr
    for status in ("delivered", "failed", "dead", "cancelled"):
        assert f"purged 1 {status} entries older than 30 days" in purged.stdout
    with psycopg.connect(pg_url) as conn:
        left = {r[0] for r in conn.execute(
            sql.SQL("SELECT id FROM {}.deliveries").format(sql.Identifier(pg_schema)))}
    fresh = {ids[f"{status}-fresh"] for status in ("delivered", "failed", "dead", "cancelled")}
    assert fresh <= left and not set(old) & left


def test_the_in_process_purge_job_ends_old_entries_without_a_cronjob(start_notifier, slack_receiver):
    """`make up` has no CronJob: the server's own dlq-purge job (here every 1.8 s, everything ended counting as old)."""
    notifier = start_notifier({"SLACK_WEBHOOK_URL": slack_receiver.url, "DLQ_CLEANUP_DAYS": "0",
                               "DLQ_PURGE_INTERVAL_HOURS": "0.0005", "DLQ_MAX_RETRIES": "0"})
    notifier.slack("in-process-delivered", "Purged by the server itself")
    slack_receiver.fail(404, times=1)
    notifier.slack("in-process-dead", "Dead and purged")
    assert notifier.stats().counts  # stored before Notify answered; pending rows are never purged
    wait_for(lambda: not notifier.stats().counts, what="the in-process purge to delete the ended rows")
    assert slack_receiver.attempts == 2  # both were sent (one delivered, one refused with a 404) before they went


def test_migrate_prints_what_it_did_and_fails_loudly_without_a_database(tmp_path):
    done = manage(tmp_path, "migrate")
    assert done.returncode == 0 and "notifier schema is at head" in done.stdout
    unreachable = manage(tmp_path, "migrate", DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    assert unreachable.returncode == 1 and "migrate failed" in unreachable.stderr
