"""Configuration in the cluster is complete (issue 17, part 4): every command the kind overlay runs, started with the
environment the manifests give it but without DATABASE_URL, stops with an error naming the variable (the manifests
set REQUIRE_DATABASE_URL=true) instead of serving or migrating a SQLite file in its container; the notifier gets
the Monday.com board and the escalation address."""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deploy.k8s import check, env_reads

REPO = Path(__file__).resolve().parents[2]


def kind_commands() -> dict[tuple[str, ...], tuple[str, dict[str, str]]]:
    """Each distinct project command of the kind overlay that reads DATABASE_URL: one place it runs, and the literal
    environment the manifests give it there (Secret values, which are not in the manifests, left out)."""
    objects = check.render(REPO / "deploy" / "k8s" / "overlays" / "kind")
    config = check.Config(objects, {})
    commands: dict[tuple[str, ...], tuple[str, dict[str, str]]] = {}
    for work in check.workloads("kind", objects):
        for container in work.containers():
            module = check.entrypoint_module(container)
            if not module or not container["image"].startswith("novahouse/"):
                continue
            if "DATABASE_URL" not in env_reads.reads(REPO, module):
                continue
            env, _ = config.container_env(work, container)
            argv = tuple(container["command"]) + tuple(container.get("args") or [])
            literal = {k: v for k, v in env.items() if v is not None}
            commands.setdefault(argv, (work.where(container), literal))
    return commands


def run_without_database(argv: tuple[str, ...], env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess:
    data = tmp / "data"
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MIGRATION_DATABASE_URL")}
    # The cluster's values, except where a pod's paths and ports mean nothing here.
    environment.update({k: v for k, v in env.items() if not v.startswith("/")})
    environment.update(DATA_DIR=str(data), GRPC_HOST="127.0.0.1", GRPC_PORT="0", METRICS_PORT="0",
                       CONSENT_REQUIRE_SECRETS="false")
    return subprocess.run([sys.executable, *argv[1:]], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=120)


def test_every_database_command_of_the_cluster_refuses_to_start_without_database_url(tmp_path):
    commands = kind_commands()
    # servers, migrations, CronJobs and the init containers that wait for the schema
    assert {argv[2] for argv in commands} >= {
        "services.chat.server", "services.consent.server", "services.notifier.server",
        "services.chat.manage", "services.consent.manage", "services.notifier.manage", "services.runtime.schema_wait"}
    assert all(env.get("REQUIRE_DATABASE_URL") == "true" for _, env in commands.values())

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(commands, pool.map(
            lambda item: run_without_database(item[0], item[1][1], tmp_path / str(abs(hash(item[0])))),
            commands.items()), strict=True))

    for argv, result in results.items():
        where = commands[argv][0]
        assert result.returncode != 0, f"{where}: `{' '.join(argv)}` exited 0 without DATABASE_URL"
        assert "DATABASE_URL is not set" in result.stdout + result.stderr, where
    # and nothing made a SQLite file of its own
    assert not list(tmp_path.rglob("*.db"))


def test_the_notifier_gets_the_monday_board_and_the_escalation_address():
    objects = check.render(REPO / "deploy" / "k8s" / "overlays" / "kind")
    notifier = next(w for w in check.workloads("kind", objects) if w.kind == "Deployment" and w.name == "notifier")
    env, dangling = check.Config(objects, check.secret_template_keys(REPO)).container_env(
        notifier, notifier.pod["containers"][0])
    assert dangling == []
    assert {"MONDAY_BOARD_ID", "ESCALATION_EMAIL", "MONDAY_API_KEY", "SLACK_WEBHOOK_URL", "SMTP_URL"} <= set(env)
