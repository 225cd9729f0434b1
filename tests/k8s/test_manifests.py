"""`make k8s-check` as part of `make test`: the manifests render, validate and pass the project's checks, and each
check really catches the mistake it exists for (shown on a mutated copy of the tree, never on the real one)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from deploy.k8s import check

REPO = Path(__file__).resolve().parents[2]
BASE = Path("deploy/k8s/base")


def edit_yaml(path: Path, edit) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for doc in docs:
        edit(doc)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def problems(root: Path, kind: str) -> list[str]:
    _, found = check.run_checks(root, entrypoints=False, schema=False)
    return [str(p) for p in found if p.check == kind]


def test_every_kustomization_renders_validates_and_passes_every_project_check():
    rendered, found = check.run_checks(REPO)
    assert [str(p) for p in found] == []
    sources = " ".join(rendered)
    for source in ("deploy/k8s/base", "deploy/k8s/overlays/kind", "deploy/k8s/secrets-template"):
        assert source in sources
    assert "distinct container commands run with --help" in sources


def test_a_cron_expression_changed_to_bad_fails_the_check(tree):
    assert problems(tree, "cron") == []
    path = tree / BASE / "cronjobs.yaml"
    path.write_text(path.read_text().replace("schedule: '*/10 * * * *'", "schedule: bad", 1))

    result = subprocess.run([sys.executable, "-m", "deploy.k8s.check", "--root", str(tree), "--no-entrypoints"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)

    assert result.returncode == 1
    assert "[cron] deploy/k8s/overlays/kind: CronJob/chat-purge-cache: schedule 'bad'" in result.stdout


def test_an_out_of_range_cron_field_fails_the_check():
    assert check.cron_problem("*/10 * * * *", "Etc/UTC") is None
    assert check.cron_problem("@daily", None) is None
    assert "does not parse" in (check.cron_problem("61 * * * *", None) or "")
    assert "five cron fields" in (check.cron_problem("*/10 * * *", None) or "")
    assert "not a known zone" in (check.cron_problem("0 3 * * *", "Mars/Olympus") or "")


def test_a_probe_on_a_port_the_container_does_not_expose_fails_the_check(tree):
    assert problems(tree, "probes") == []

    def readiness_on_wrong_port(doc):
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = 50099

    edit_yaml(tree / BASE / "chat.yaml", readiness_on_wrong_port)

    found = problems(tree, "probes")
    assert any("Deployment/chat container chat: readinessProbe grpc port 50099 is not a declared" in p for p in found)


def test_a_liveness_probe_on_the_overall_health_fails_the_check(tree):
    def liveness_on_overall_status(doc):
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"].pop("service")

    edit_yaml(tree / BASE / "consent.yaml", liveness_on_overall_status)

    assert any("consent container consent: livenessProbe must ask for 'novahouse.liveness'" in p
               for p in problems(tree, "probes"))


def test_a_secret_with_a_real_value_fails_the_check(tree):
    assert problems(tree, "secrets") == []
    path = tree / "deploy/k8s/secrets-template/secret.yaml"
    path.write_text(path.read_text().replace('MONDAY_API_KEY: "REPLACE_ME"', 'MONDAY_API_KEY: "eyJhbGciOiJIUzI1NiJ9"'))

    assert any("Secret/novahouse-secrets: MONDAY_API_KEY holds a value" in p for p in problems(tree, "secrets"))


def test_a_secret_value_in_a_config_map_fails_the_check(tree):
    with open(tree / BASE / "config" / "notifier.env", "a") as env:
        env.write("SLACK_WEBHOOK_URL=https://hooks.example.invalid/T000/B000/XXXX\n")

    assert any("SLACK_WEBHOOK_URL looks like a secret and has a value in a ConfigMap" in p
               for p in problems(tree, "secrets"))


def test_the_migration_role_given_to_a_deployment_or_a_cronjob_fails_the_check(tree):
    assert problems(tree, "secrets") == []

    def migration_env(doc):
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["spec"]["containers"][0]["env"].append({
                "name": "MIGRATION_DATABASE_URL",
                "valueFrom": {"secretKeyRef": {"name": "novahouse-secrets", "key": "CHAT_MIGRATION_DATABASE_URL"}}})

    def migration_key(doc):
        if doc["kind"] == "CronJob" and doc["metadata"]["name"] == "chat-purge-cache":
            env = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
            next(e for e in env if e["name"] == "DATABASE_URL")["valueFrom"]["secretKeyRef"]["key"] = \
                "CHAT_MIGRATION_DATABASE_URL"

    edit_yaml(tree / BASE / "chat.yaml", migration_env)
    edit_yaml(tree / BASE / "cronjobs.yaml", migration_key)

    found = problems(tree, "secrets")
    assert any("Deployment/chat container chat: gets the migration role (MIGRATION_DATABASE_URL)" in p for p in found)
    assert any("CronJob/chat-purge-cache container purge-cache: gets the migration role (DATABASE_URL)" in p
               for p in found)


def test_only_the_migration_jobs_get_the_migration_role_and_each_workload_its_own_services_role():
    objects = check.render(REPO / "deploy" / "k8s" / "overlays" / "kind")
    seen = set()
    for work in check.workloads("kind", objects):
        for container in work.containers():
            image = container.get("image", "")
            if not image.startswith(("novahouse/chat", "novahouse/consent", "novahouse/notifier")):
                continue
            service = image.split("/")[1].split(":")[0].upper()
            keys = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container.get("env") or []
                    if "secretKeyRef" in (e.get("valueFrom") or {})}
            assert keys.get("DATABASE_URL") == f"{service}_DATABASE_URL", work.where(container)
            if work.kind == "Job":
                assert keys["MIGRATION_DATABASE_URL"] == f"{service}_MIGRATION_DATABASE_URL", work.where(container)
            else:
                assert not any("MIGRATION" in k for k in (*keys, *keys.values())), work.where(container)
            seen.add((work.kind, service))
    assert {kind for kind, _ in seen} == {"Deployment", "Job", "CronJob"}
    assert {service for _, service in seen} == {"CHAT", "CONSENT", "NOTIFIER"}


def test_exposing_the_admin_listener_on_a_node_port_fails_the_check(tree):
    assert problems(tree, "exposure") == []
    path = tree / "deploy/k8s/overlays/kind/gateway-nodeport.yaml"
    path.write_text(path.read_text() + "    - {name: admin, port: 8081, targetPort: admin, nodePort: 30081}\n")

    assert any("Service/gateway: exposes the admin listener" in p for p in problems(tree, "exposure"))


def test_an_env_var_no_code_reads_fails_the_check(tree):
    assert problems(tree, "env") == []
    with open(tree / BASE / "config" / "chat.env", "a") as env:
        env.write("CHAT_TURBO_MODE=true\n")

    assert any("container chat: sets CHAT_TURBO_MODE, which services.chat.server's code never reads" in p
               for p in problems(tree, "env"))


def test_a_peer_address_the_code_needs_but_the_manifest_omits_fails_the_check(tree):
    path = tree / BASE / "config" / "consent.env"
    path.write_text(path.read_text().replace("CHAT_ADDR=chat:50051\n", ""))

    assert any("consent container consent: the code reads CHAT_ADDR" in p for p in problems(tree, "env"))


def test_a_rate_limit_policy_copy_out_of_sync_fails_the_check(tree):
    with open(tree / "gateway/ratelimit/policy.yaml", "a") as policy:
        policy.write("# changed in the gateway only\n")

    assert any("differs from gateway/ratelimit/policy.yaml" in p for p in problems(tree, "config"))


def test_the_chat_replicas_read_the_knowledge_base_from_a_configmap_that_matches_the_source(tree):
    assert problems(tree, "config") == []
    rendered = check.render(tree / BASE)
    chat = next(o for o in rendered if o["kind"] == "Deployment" and o["metadata"]["name"] == "chat")
    pod = chat["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "knowledge")
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["KNOWLEDGE_DIR"] == mount["mountPath"]
    volume = next(v for v in pod["volumes"] if v["name"] == "knowledge")
    config_map = next(o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "chat-knowledge")
    assert volume["configMap"]["name"] == "chat-knowledge"  # no hash suffix: an edit reaches running replicas
    assert set(config_map["data"]) == {"faq.yaml", "dialogue.yaml"}

    with open(tree / "services/chat/knowledge/faq.yaml", "a") as faq:
        faq.write("# edited in the source only\n")
    assert any("differs from services/chat/knowledge/faq.yaml" in p for p in problems(tree, "config"))


def test_a_command_that_is_no_entrypoint_fails_the_check():
    assert check.run_help(REPO, ("python", "-m", "services.chat.manage", "purge-cache")) is None
    assert "exited 2" in (check.run_help(REPO, ("python", "-m", "services.chat.manage", "purge-everything")) or "")
    assert "exited 1" in (check.run_help(REPO, ("python", "-m", "services.chat.no_such_module")) or "")


def test_fixed_replicas_on_an_autoscaled_deployment_fails_the_check(tree):
    assert problems(tree, "replicas") == []

    def fixed_replicas(doc):
        if doc["kind"] == "Deployment":
            doc["spec"]["replicas"] = 3

    edit_yaml(tree / BASE / "gateway.yaml", fixed_replicas)

    assert any("Deployment/gateway: sets spec.replicas although an HPA scales it" in p
               for p in problems(tree, "replicas"))


def test_the_cache_purge_cronjob_addresses_every_chat_pod_through_a_headless_service():
    """Each chat pod keeps its own in-process fallback entries: a ClusterIP name would reach one pod per run."""
    objects = check.render(REPO / "deploy" / "k8s" / "overlays" / "kind")
    cron = next(w for w in check.workloads("kind", objects) if w.kind == "CronJob" and w.name == "chat-purge-cache")
    env, _ = check.Config(objects, {}).container_env(cron, cron.pod["containers"][0])
    address = env["CHAT_ADDR"]
    assert address
    service_name = address.rsplit(":", 1)[0]
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == service_name)
    assert service["spec"].get("clusterIP") == "None"
    assert service["spec"]["selector"]["app.kubernetes.io/name"] == "chat"
