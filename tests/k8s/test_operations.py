"""What the cluster runs, run here: the migration Jobs' and CronJobs' commands, taken from the rendered kind overlay,
and every curl/grpcurl line of docs/runbooks, against a local stack configured from the overlay's ConfigMaps
(PostgreSQL with a schema per service, Redis, MIGRATE_ON_START=false, SCHEDULER_ENABLED=false, consent secrets
required) with the runbooks' port-forwarded ports mapped to the stack's."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.k8s import check, kind_secrets
from deploy.local.processes import free_port
from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from novahouse.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from testsupport import backing
from testsupport.receivers import HttpReceiver
from testsupport.stack import running_stack
from testsupport.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "docs" / "runbooks"
SERVICES = ("chat", "consent", "notifier", "ratelimit")
DB_SERVICES = ("chat", "consent", "notifier")
# Set by the stack for every process, or meaningful only inside a cluster.
CLUSTER_ONLY = {"GRPC_HOST", "GRPC_PORT", "METRICS_HOST", "METRICS_PORT", "DATA_DIR", "REDIS_URL", "REDIS_KEY_PREFIX",
                "RATELIMIT_POLICY",
                "CHAT_ADDR", "CONSENT_ADDR", "NOTIFIER_ADDR", "RATELIMIT_ADDR",
                # The checkpoint bucket exists only in the cluster; here the checkpoints go to DATA_DIR.
                "CONSENT_CHECKPOINT_S3_BUCKET", "CONSENT_CHECKPOINT_S3_ENDPOINT",
                # The kind overlay's journal volume; here the journal goes to DATA_DIR/erasure-journal.
                "CONSENT_ERASURE_JOURNAL_DIR",
                # The chat-knowledge ConfigMap's mount; here chat reads the same files from services/chat/knowledge.
                "KNOWLEDGE_DIR",
                # Envoy's health checks and the endpoints controller need the drain delay; here nothing routes around
                # a stopping process, and each stop would wait it out.
                "DRAIN_DELAY_S"}
CRON_OUTPUT = {
    "chat-purge-cache": r"expired cache entries removed: \d+",
    "chat-run-followups": r"follow-ups due: \d+, sent: \d+",
    "chat-purge-retention": r"conversations deleted: \d+",
    "notifier-purge-dlq": r"purged \d+ delivered entries older than \d+ days",
    "consent-checkpoint-ledger": r"ledger checkpoint signed: entry \d+",
}


def kind_overlay() -> list[dict]:
    return check.render(REPO / "deploy" / "k8s" / "overlays" / "kind")


def pod_containers(objects: list[dict], kind: str) -> dict[str, dict]:
    """Name -> main container of every rendered object of this kind."""
    return {w.name: w.pod["containers"][0] for w in check.workloads("kind", objects) if w.kind == kind}


def manifest_env(objects: list[dict], deployment: str) -> dict[str, str]:
    """The literal env the overlay gives a Deployment's main container, less what only makes sense in a cluster."""
    work = next(w for w in check.workloads("kind", objects) if w.kind == "Deployment" and w.name == deployment)
    env, _ = check.Config(objects, {}).container_env(work, work.pod["containers"][0])
    return {k: v for k, v in env.items() if v is not None and k not in CLUSTER_ONLY}


def local_argv(container: dict) -> list[str]:
    command = list(container["command"]) + list(container.get("args") or [])
    assert command[:2] == ["python", "-m"]
    return [sys.executable, *command[1:]]


@pytest.fixture(scope="module")
def cluster_like(tmp_path_factory):
    """Migrate with the Jobs' commands as each service's migration role, then start the stack as the cluster runs it
    (each server as its service role, which owns nothing); yield (gw, env per service)."""
    objects = kind_overlay()
    secrets = kind_secrets.generated_values()
    prefix = backing.unique_name("novahouse-k8s") + ":"
    backing.postgres_connect().close()
    backing.redis_client()
    common = {"REDIS_URL": backing.TEST_REDIS_URL, "REDIS_KEY_PREFIX": prefix, "METRICS_HOST": "127.0.0.1"}
    metrics = {svc: free_port() for svc in SERVICES}
    with HttpReceiver() as slack, backing.service_roles("k8s", DB_SERVICES) as roles:
        schemas = {svc: roles[svc].schema for svc in DB_SERVICES}
        service_env = {svc: {**manifest_env(objects, svc), "METRICS_PORT": str(metrics[svc])} for svc in SERVICES}
        database_env = {svc: roles[svc].env(backing.TEST_DATABASE_URL) for svc in DB_SERVICES}
        for svc in DB_SERVICES:
            service_env[svc].update({k: database_env[svc][k] for k in ("DATABASE_URL", "DB_SCHEMA")})
        service_env["consent"].update({k: secrets[k] for k in ("CONSENT_HMAC_KEY", "CONSENT_KEY_ENCRYPTION_KEY",
                                                               "CONSENT_CHAIN_KEYS", "CONSENT_CHECKPOINT_SIGNING_KEY")})
        service_env["notifier"]["SLACK_WEBHOOK_URL"] = slack.url
        data_dir = tmp_path_factory.mktemp("cluster-like")
        jobs = pod_containers(objects, "Job")
        migrations = {}
        for svc in DB_SERVICES:
            env = {**os.environ, **common, **service_env[svc], **database_env[svc], "DATA_DIR": str(data_dir)}
            migrations[svc] = subprocess.run(local_argv(jobs[f"{svc}-migrate"]), env=env, cwd=REPO,
                                             capture_output=True, text=True, timeout=120)
        try:
            with running_stack(data_dir, env=common, service_env=service_env) as gw:
                yield {"gw": gw, "objects": objects, "migrations": migrations, "metrics": metrics, "schemas": schemas,
                       "common": common, "service_env": service_env, "data_dir": data_dir, "slack": slack}
        finally:
            backing.delete_prefix(prefix)


def process_env(setup: dict, service: str) -> dict[str, str]:
    gw = setup["gw"]
    addrs = {f"{name.upper()}_ADDR": gw.stack.config.addr(name) for name in SERVICES}
    return {**os.environ, **setup["common"], **setup["service_env"][service], **addrs,
            "DATA_DIR": str(setup["data_dir"])}


def test_the_migration_jobs_commands_bring_every_schema_to_head_before_the_servers_start(cluster_like):
    for svc, result in cluster_like["migrations"].items():
        assert result.returncode == 0, result.stderr
        assert "head" in result.stdout, result.stdout
        schema = cluster_like["schemas"][svc]
        with backing.postgres_connect() as conn:
            versions = conn.execute(f'SELECT version_num FROM "{schema}".alembic_version').fetchall()
        assert len(versions) == 1, f"{svc}: {versions}"
    for deployment in DB_SERVICES:
        work = next(w for w in check.workloads("kind", cluster_like["objects"])
                    if w.kind == "Deployment" and w.name == deployment)
        for init in work.pod["initContainers"]:
            waited = subprocess.run(local_argv(init), env=process_env(cluster_like, deployment), cwd=REPO,
                                    capture_output=True, text=True, timeout=120)
            assert waited.returncode == 0 and "at head" in waited.stdout, waited.stderr
    gw = cluster_like["gw"]
    assert cluster_like["service_env"]["chat"]["MIGRATE_ON_START"] == "false"
    assert "MIGRATION_DATABASE_URL" not in cluster_like["service_env"]["chat"]
    reply = gw.rest("POST", "/api/chatbot/chat", json={"message": "Dzień dobry"})
    assert reply.status_code == 200, reply.text


def test_every_cronjob_command_runs_against_the_stack_and_prints_what_it_did(cluster_like):
    crons = pod_containers(cluster_like["objects"], "CronJob")
    assert set(crons) == set(CRON_OUTPUT)
    for name, container in crons.items():
        service = container["image"].split("/")[1].split(":")[0]
        result = subprocess.run(local_argv(container), env=process_env(cluster_like, service), cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert re.search(CRON_OUTPUT[name], result.stdout), f"{name} printed: {result.stdout!r}"


def runbook_commands() -> list[tuple[str, str]]:
    """(runbook, line) for every curl and grpcurl line inside a ```sh block of docs/runbooks."""
    commands = []
    for path in sorted(RUNBOOKS.glob("*.md")):
        for block in re.findall(r"```sh\n(.*?)```", path.read_text(), re.S):
            for line in block.splitlines():
                line = line.strip()
                if line.startswith(("curl ", "grpcurl ")):
                    commands.append((path.name, line))
    return commands


def local_ports(setup: dict) -> dict[int, int]:
    cfg = setup["gw"].stack.config
    ports = {8080: cfg.public_port, 8081: cfg.admin_port, 9901: cfg.envoy_admin_port}
    for offset, svc in enumerate(SERVICES, start=1):
        ports[50050 + offset] = cfg.ports[svc]
        ports[9090 + offset] = setup["metrics"][svc]
    return ports


def localize(line: str, ports: dict[int, int]) -> str:
    def swap(match: re.Match) -> str:
        port = int(match.group(1))
        assert port in ports, f"runbook line uses localhost:{port}, which no access command forwards: {line}"
        return f"127.0.0.1:{ports[port]}"

    return re.sub(r"localhost:(\d+)", swap, line)


def deliver_one_slack_alert(setup: dict) -> None:
    """A real delivery, so the runbooks' breaker and attempt metrics have something to show."""
    admin = setup["gw"].channel(admin=True)
    notifier = notifier_pb2_grpc.NotifierInternalStub(admin)
    alert = notifier_pb2.SlackAlert(title="runbook", text="check")
    notifier.Notify(notifier_pb2.NotifyRequest(idempotency_key="runbook-alert-1", slack=alert), timeout=10)
    wait_for(lambda: setup["slack"].requests, what="the alert at the Slack stand-in")
    chat_pb2_grpc.ChatAdminStub(admin).PurgeCache(chat_pb2.PurgeCacheRequest(), timeout=10)


def test_every_runbook_curl_and_grpcurl_command_works_against_the_local_stack(cluster_like):
    commands = runbook_commands()
    assert {book for book, _ in commands} == {
        "README.md", "redis-down.md", "breaker-stuck-open.md", "rate-limiter-blocking.md",
        "unsubscribe-failing.md", "dlq-growing.md", "gateway-errors.md", "service-not-serving.md", "database-down.md",
        "followups-not-running.md", "erasures-pending.md", "ledger-verification-failing.md", "metrics-absent.md"}
    deliver_one_slack_alert(cluster_like)
    ports = local_ports(cluster_like)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    failures = []
    for book, line in commands:
        result = subprocess.run(["bash", "-o", "pipefail", "-c", localize(line, ports)], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            failures.append(f"{book}: {line}\n  exit {result.returncode}: {(result.stdout + result.stderr)[-300:]}")
    assert failures == [], "\n".join(failures)
