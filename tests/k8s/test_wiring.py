"""`make k8s-check` catches wiring mistakes: the twelve an SRE's review found the old check missing (issue 17), each
made in a copy of the manifests, and the same kinds of mistake generated over every object of each kind in the
rendered kind overlay. Each must fail with a message naming the object and the field."""
from __future__ import annotations

import contextlib
import copy
import io
import re
from pathlib import Path

import pytest
import yaml

from deploy.k8s import check, env_reads

REPO = Path(__file__).resolve().parents[2]
BASE = Path("deploy/k8s/base")
KIND = Path("deploy/k8s/overlays/kind")


def run_check(root: Path) -> tuple[int, str]:
    """`python -m deploy.k8s.check --root root` (schemas and commands left out: no breakage here touches them)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = check.main(["--root", str(root), "--no-entrypoints", "--no-schema"])
    return code, out.getvalue()


def replace(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


def edit_yaml(path: Path, edit) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for doc in docs:
        edit(doc)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def named(doc: dict, kind: str, name: str) -> bool:
    return doc["kind"] == kind and doc["metadata"]["name"] == name


def drop_env(kind: str, name: str, variable: str):
    def edit(doc):
        if named(doc, kind, name):
            spec = doc["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else doc["spec"]
            container = spec["template"]["spec"]["containers"][0]
            before = len(container["env"])
            container["env"] = [e for e in container["env"] if e["name"] != variable]
            assert len(container["env"]) == before - 1
    return edit


def break_networkpolicy_selector(tree):
    replace(tree / BASE / "networkpolicies.yaml", "podSelector: {matchLabels: {app.kubernetes.io/name: consent}}\n"
            "  policyTypes", "podSelector: {matchLabels: {app.kubernetes.io/name: consnet}}\n  policyTypes")


def break_networkpolicy_port(tree):
    def edit(doc):
        if named(doc, "NetworkPolicy", "chat"):
            doc["spec"]["ingress"][0]["ports"][0]["port"] = 50015
    edit_yaml(tree / BASE / "networkpolicies.yaml", edit)


def break_service_target_port(tree):
    def edit(doc):
        if named(doc, "Service", "consent"):
            doc["spec"]["ports"][0]["targetPort"] = "grcp"
    edit_yaml(tree / BASE / "consent.yaml", edit)


def break_service_selector(tree):
    def edit(doc):
        if named(doc, "Service", "notifier"):
            doc["spec"]["selector"]["app.kubernetes.io/name"] = "notifer"
    edit_yaml(tree / BASE / "notifier.yaml", edit)


def break_cronjob_database(tree):
    edit_yaml(tree / BASE / "cronjobs.yaml", drop_env("CronJob", "chat-purge-retention", "DATABASE_URL"))


def break_migration_database(tree):
    edit_yaml(tree / BASE / "migrate-jobs.yaml", drop_env("Job", "consent-migrate", "DATABASE_URL"))


def break_ratelimit_redis(tree):
    replace(tree / BASE / "config" / "ratelimit.env", "REDIS_URL=redis://redis:6379/0\n", "")


def break_scheduler(tree):
    replace(tree / BASE / "config" / "chat.env", "SCHEDULER_ENABLED=false", "SCHEDULER_ENABLED=true")


def break_gateway_upstream(tree):
    replace(tree / BASE / "config" / "gateway.env", "CONSENT_ADDR=consent-pods:50052", "CONSENT_ADDR=consent-pod:50052")


def break_pull_policy(tree):
    def edit(doc):
        if named(doc, "Deployment", "chat"):
            doc["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Always"
    edit_yaml(tree / BASE / "chat.yaml", edit)


def break_pdb_selector(tree):
    def edit(doc):
        if named(doc, "PodDisruptionBudget", "gateway"):
            doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "gatewya"
    edit_yaml(tree / BASE / "gateway.yaml", edit)


def break_termination_grace(tree):
    def edit(doc):
        if named(doc, "Deployment", "consent"):
            doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 15
    edit_yaml(tree / BASE / "consent.yaml", edit)


KIND_SOURCE = "deploy/k8s/overlays/kind"
# (the breakage, a piece of the message naming the object and the field)
BREAKAGES = {
    "networkpolicy-selector": (break_networkpolicy_selector,
                               "[wiring] deploy/k8s/overlays/kind: NetworkPolicy/consent: spec.podSelector"),
    "networkpolicy-port": (break_networkpolicy_port,
                           "NetworkPolicy/chat: spec.ingress[0].ports[0].port 50015 is a container port of none"),
    "service-target-port": (break_service_target_port,
                            "Service/consent: spec.ports[0].targetPort 'grcp' is not a container port of "
                            "Deployment/consent"),
    "service-selector": (break_service_selector, "Service/notifier: spec.selector"),
    "cronjob-database-url": (break_cronjob_database,
                             "CronJob/chat-purge-retention container purge-retention: the code reads DATABASE_URL"),
    "migration-database-url": (break_migration_database,
                               "Job/consent-migrate container migrate: the code reads DATABASE_URL"),
    "ratelimit-redis-url": (break_ratelimit_redis,
                            "Deployment/ratelimit container ratelimit: the code reads REDIS_URL"),
    "scheduler-beside-cronjobs": (break_scheduler,
                                  "Deployment/chat: spec.template.spec.containers[0] (chat) env "
                                  "SCHEDULER_ENABLED=true"),
    "gateway-missing-service": (break_gateway_upstream,
                                "Deployment/gateway: spec.template.spec.containers[0] (envoy) env CONSENT_ADDR: "
                                "Service consent-pod does not exist"),
    "pull-always-on-kind": (break_pull_policy,
                            "Deployment/chat: spec.template.spec.containers[0].imagePullPolicy Always"),
    "pdb-selector": (break_pdb_selector, "PodDisruptionBudget/gateway: spec.selector"),
    "grace-below-shutdown": (break_termination_grace,
                             "Deployment/consent: spec.template.spec.terminationGracePeriodSeconds 15 does not "
                             "exceed"),
}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> set[str]:
    """The problems of an unbroken copy (none on a clean tree; work in progress elsewhere must not pass a test)."""
    root = tmp_path_factory.mktemp("baseline") / "repo"
    copy_tree(root)
    _, problems = check.run_checks(root, entrypoints=False, schema=False)
    return {str(p) for p in problems}


def copy_tree(root: Path) -> None:
    import shutil
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "secrets.env")
    for folder in ("deploy", "services", "gateway"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    shutil.copy2(REPO / "Dockerfile", root / "Dockerfile")


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_each_wiring_mistake_of_the_review_fails_the_check_naming_object_and_field(tree, baseline, name):
    breakage, expected = BREAKAGES[name]
    assert not any(expected in line for line in baseline)

    breakage(tree)
    code, output = run_check(tree)

    assert code == 1
    new = [line for line in output.splitlines() if line.startswith("[") and line not in baseline]
    assert any(expected in line and KIND_SOURCE in line for line in new), "\n".join(new)


# ------------------------------------------------------------------------- generated over every object of a kind

@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return check.render(REPO / KIND)


def problems_of(objects: list[dict]) -> set[str]:
    found, _, _ = check.check_rendered(REPO, KIND_SOURCE, objects, check.kind_config_of(REPO / KIND),
                                       check.secret_template_keys(REPO))
    return {str(p) for p in found}


def mutations(objects: list[dict], kind: str):
    """(index, deep copy of the objects) for every object of this kind."""
    for index, obj in enumerate(objects):
        if obj["kind"] == kind:
            yield index, copy.deepcopy(objects)


def caught(objects: list[dict], before: set[str], *pieces: str) -> bool:
    return any(all(piece in line for piece in pieces) for line in problems_of(objects) - before)


def pod_spec(obj: dict) -> dict:
    return (obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"])["template"]["spec"]


def typo(value: str) -> str:
    return value + "x"


def test_a_selector_typo_in_any_service_pdb_or_networkpolicy_fails_the_check(rendered):
    before = problems_of(rendered)
    tried = {"Service": 0, "PodDisruptionBudget": 0, "NetworkPolicy": 0}
    for kind, field in (("Service", "spec.selector"), ("PodDisruptionBudget", "spec.selector"),
                        ("NetworkPolicy", "spec.podSelector")):
        for index, objects in mutations(rendered, kind):
            obj = objects[index]
            selector = obj["spec"]["selector"] if kind == "Service" else \
                obj["spec"]["selector"]["matchLabels"] if kind == "PodDisruptionBudget" else \
                (obj["spec"]["podSelector"] or {}).get("matchLabels")
            if not selector:
                continue  # an empty podSelector (default deny, DNS) means every pod
            key = sorted(selector)[0]
            selector[key] = typo(selector[key])
            assert caught(objects, before, f"{kind}/{obj['metadata']['name']}: {field}"), obj["metadata"]["name"]
            tried[kind] += 1
    assert tried["Service"] >= 10 and tried["PodDisruptionBudget"] >= 1 and tried["NetworkPolicy"] >= 8, tried


def test_a_typo_in_any_networkpolicy_peer_selector_fails_the_check(rendered):
    before, tried = problems_of(rendered), 0
    for index, objects in mutations(rendered, "NetworkPolicy"):
        obj = objects[index]
        outside = (obj["metadata"].get("annotations") or {}).get("novahouse.io/selects-outside", "")
        for direction, peers in (("ingress", "from"), ("egress", "to")):
            for r, rule in enumerate(obj["spec"].get(direction) or []):
                for q, peer in enumerate(rule.get(peers) or []):
                    labels = (peer.get("podSelector") or {}).get("matchLabels")
                    if not labels or "namespaceSelector" in peer or set(labels) & {outside}:
                        continue
                    mutated = copy.deepcopy(objects)
                    key = sorted(labels)[0]
                    mutated[index]["spec"][direction][r][peers][q]["podSelector"]["matchLabels"][key] += "x"
                    field = f"spec.{direction}[{r}].{peers}[{q}].podSelector"
                    assert caught(mutated, before, f"NetworkPolicy/{obj['metadata']['name']}: {field}"), field
                    tried += 1
    assert tried >= 20


def test_a_wrong_port_in_any_service_or_networkpolicy_fails_the_check(rendered):
    before, services, policies = problems_of(rendered), 0, 0
    for index, objects in mutations(rendered, "Service"):
        obj = objects[index]
        if not obj["spec"].get("selector"):
            continue
        for p, port in enumerate(obj["spec"]["ports"]):
            mutated = copy.deepcopy(objects)
            target = port.get("targetPort", port["port"])
            wrong = typo(target) if isinstance(target, str) else target + 10000
            mutated[index]["spec"]["ports"][p]["targetPort"] = wrong
            assert caught(mutated, before, f"Service/{obj['metadata']['name']}: spec.ports[{p}].targetPort")
            services += 1
    for index, objects in mutations(rendered, "NetworkPolicy"):
        obj = objects[index]
        for direction, peers in (("ingress", "from"), ("egress", "to")):
            for r, rule in enumerate(obj["spec"].get(direction) or []):
                in_namespace = all(set(peer) == {"podSelector"} for peer in rule.get(peers) or [{}])
                if direction == "egress" and not (rule.get(peers) and in_namespace):
                    continue  # ports of DNS or the internet: nothing here to hold them against
                for p, port in enumerate(rule.get("ports") or []):
                    mutated = copy.deepcopy(objects)
                    mutated[index]["spec"][direction][r]["ports"][p]["port"] = port["port"] + 10000
                    field = f"spec.{direction}[{r}].ports[{p}].port"
                    assert caught(mutated, before, f"NetworkPolicy/{obj['metadata']['name']}: {field}"), field
                    policies += 1
    assert services >= 14 and policies >= 20, (services, policies)


def test_removing_any_setting_a_workload_reads_fails_the_check(rendered):
    """Every env entry, in every container of every Deployment, Job and CronJob (init containers too), whose
    variable the code reads; and every key of every env ConfigMap."""
    before, entries, keys = problems_of(rendered), 0, 0
    config_maps = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "ConfigMap"}
    for kind in ("Deployment", "Job", "CronJob"):
        for index, objects in mutations(rendered, kind):
            obj = objects[index]
            for section in ("initContainers", "containers"):
                for c, container in enumerate(pod_spec(obj).get(section) or []):
                    module = check.entrypoint_module(container)
                    if not module or not container["image"].startswith("novahouse/"):
                        continue
                    from_maps = {k for s in container.get("envFrom") or [] if "configMapRef" in s
                                 for k in config_maps[s["configMapRef"]["name"]].get("data") or {}}
                    for e, item in enumerate(container.get("env") or []):
                        name = item["name"]
                        if name not in env_reads.reads(REPO, module) or name in from_maps:
                            continue
                        mutated = copy.deepcopy(objects)
                        del pod_spec(mutated[index])[section][c]["env"][e]
                        assert caught(mutated, before, f"{kind}/{obj['metadata']['name']} container "
                                                       f"{container['name']}: the code reads {name}"), name
                        entries += 1
    for index, objects in mutations(rendered, "ConfigMap"):
        obj = objects[index]
        if not re.match(r"^[a-z]+-env-", obj["metadata"]["name"]):
            continue
        for key in obj["data"]:
            mutated = copy.deepcopy(objects)
            del mutated[index]["data"][key]
            if caught(mutated, before, f"the code reads {key}, which no ConfigMap"):
                keys += 1
            else:  # a key no container reads is caught by the opposite rule (sets X, which the code never reads)
                pytest.fail(f"{obj['metadata']['name']} {key}: removing it went unnoticed")
    assert entries >= 20 and keys >= 100, (entries, keys)


def test_any_address_naming_a_missing_service_or_port_fails_the_check(rendered):
    before, tried = problems_of(rendered), 0
    for index, objects in mutations(rendered, "ConfigMap"):
        obj = objects[index]
        for key, value in (obj.get("data") or {}).items():
            match = re.match(r"^(?P<scheme>[a-z]+://)?(?P<host>[a-z][-a-z0-9]*):(?P<port>\d+)", value)
            if not match or not (key.endswith("_ADDR") or match["scheme"]):
                continue
            address = f"{match['host']}:{match['port']}"
            for mutated_value, why in ((value.replace(address, f"{typo(match['host'])}:{match['port']}", 1),
                                        "does not exist"),
                                       (value.replace(f":{match['port']}", f":{int(match['port']) + 1}", 1),
                                        "has no port")):
                mutated = copy.deepcopy(objects)
                mutated[index]["data"][key] = mutated_value
                assert caught(mutated, before, f"env {key}: Service", why), (key, mutated_value)
                tried += 1
    assert tried >= 16


def test_any_deployment_whose_grace_does_not_cover_its_shutdown_fails_the_check(rendered):
    before, tried = problems_of(rendered), 0
    for index, objects in mutations(rendered, "Deployment"):
        obj = objects[index]
        container = obj["spec"]["template"]["spec"]["containers"][0]
        module = check.entrypoint_module(container)
        drains = module and "SHUTDOWN_GRACE_S" in env_reads.reads(REPO, module)
        if not drains and "preStop" not in (container.get("lifecycle") or {}):
            continue  # a datastore: no drain of its own
        obj["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
        assert caught(objects, before, f"Deployment/{obj['metadata']['name']}: "
                                       "spec.template.spec.terminationGracePeriodSeconds 1"), obj["metadata"]["name"]
        tried += 1
    assert tried == 5


def test_any_project_container_pulled_always_on_kind_fails_the_check(rendered):
    before, tried = problems_of(rendered), 0
    for kind in ("Deployment", "Job", "CronJob"):
        for index, objects in mutations(rendered, kind):
            for section in ("initContainers", "containers"):
                for c, container in enumerate(pod_spec(objects[index]).get(section) or []):
                    if not container["image"].startswith("novahouse/"):
                        continue
                    mutated = copy.deepcopy(objects)
                    pod_spec(mutated[index])[section][c]["imagePullPolicy"] = "Always"
                    field = f"{section}[{c}].imagePullPolicy Always"
                    assert caught(mutated, before, f"{kind}/{objects[index]['metadata']['name']}: ", field)
                    tried += 1
    assert tried >= 15


def test_any_in_process_scheduler_left_on_beside_its_cronjobs_fails_the_check(rendered):
    before, tried = problems_of(rendered), 0
    for index, objects in mutations(rendered, "ConfigMap"):
        for key, on in (("SCHEDULER_ENABLED", "true"), ("DLQ_PURGE_INTERVAL_HOURS", "24")):
            if key in (objects[index].get("data") or {}):
                objects_on = copy.deepcopy(objects)
                objects_on[index]["data"][key] = on
                assert caught(objects_on, before, f"env {key}={on}: CronJobs run")
                tried += 1
    assert tried == 2


def test_an_object_of_a_kind_without_a_schema_or_a_wiring_model_is_named_not_passed(tree):
    extra = tree / KIND / "extra.yaml"
    extra.write_text(yaml.safe_dump_all([
        {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": "novahouse-db"},
         "spec": {"instances": 3}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "public"},
         "spec": {"defaultBackend": {"service": {"name": "gateway", "port": {"number": 8080}}}}},
    ]))
    replace(tree / KIND / "kustomization.yaml", "  - consent-erasure-journal.yaml\n",
            "  - consent-erasure-journal.yaml\n  - extra.yaml\n")

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = check.main(["--root", str(tree), "--no-entrypoints"])

    assert code == 1
    output = out.getvalue()
    assert "[schema] deploy/k8s/overlays/kind: Cluster/novahouse-db" in output
    assert "deploy/k8s/overlays/kind: Ingress/public is of a kind the wiring rules have no model for" in output
    assert "deploy/k8s/overlays/kind: Cluster/novahouse-db is of a kind the wiring rules have no model for" in output


@pytest.mark.parametrize("name, value", [("RATELIMIT_FAIL_CLOSED", "false"), ("RATELIMIT_TIMEOUT_MS", "50")])
def test_a_configmap_contradicting_the_rate_limit_policy_fails_the_check(rendered, name, value):
    """The shipped manifests keep the README's measured policy; a ConfigMap that fails the limiter open again, or
    waits less than its p99 at saturation, is named."""
    before = problems_of(rendered)
    assert not any("[policy]" in line for line in before), before
    objects = copy.deepcopy(rendered)
    (config,) = [o for o in objects if o["kind"] == "ConfigMap" and name in (o.get("data") or {})]
    config["data"][name] = value
    assert caught(objects, before, "[policy]", "Deployment/gateway", f"{name}={value} contradicts")
