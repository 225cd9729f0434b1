"""The production overlay (issue 17, part 6) renders, validates strictly and passes every check, including the rules
a registry overlay has beyond kind's: images by digest, a PDB and zone/node spreading for every Deployment, a
ServiceAccount of its own for every workload. Each of those, broken on any object, fails the check by name."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from deploy.k8s import check, env_reads

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / "deploy" / "k8s" / "overlays" / "production"
SOURCE = "deploy/k8s/overlays/production"


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return check.render(PRODUCTION)


def problems_of(objects: list[dict]) -> set[str]:
    found, _, _ = check.check_rendered(REPO, SOURCE, objects, None, check.secret_template_keys(REPO))
    return {str(p) for p in found}


def project_deployments(objects: list[dict]) -> list[int]:
    return [i for i, o in enumerate(objects) if o["kind"] == "Deployment"
            and "/novahouse/" in o["spec"]["template"]["spec"]["containers"][0]["image"]]


def test_the_production_overlay_renders_validates_strictly_and_passes_every_check(rendered):
    assert check.check_schema(SOURCE, rendered) == []
    assert problems_of(rendered) == set()
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    assert not {name for kind, name in kinds if kind == "StatefulSet"}  # PostgreSQL and Redis are managed, outside
    assert len(project_deployments(rendered)) == 5


def test_datastores_come_from_secrets_and_the_notifier_goes_out_through_the_proxy(rendered):
    config = check.Config(rendered, check.secret_template_keys(REPO))
    for work in check.workloads("production", rendered):
        for container in work.containers():
            module = check.entrypoint_module(container)
            if not module or "/novahouse/" not in container["image"]:
                continue
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container.get("env") or []
                    if "secretKeyRef" in (e.get("valueFrom") or {})}
            reads = env_reads.reads(REPO, module)
            if "REDIS_URL" in reads and work.kind != "Job" and module != "services.runtime.schema_wait":
                assert refs["REDIS_URL"] == {"name": "novahouse-datastores", "key": "REDIS_URL"}, work.where(container)
            if "DATABASE_URL" in reads:
                assert refs["DATABASE_URL"]["name"] == "novahouse-secrets", work.where(container)
    notifier = next(w for w in check.workloads("production", rendered)
                    if w.name == "notifier" and w.kind == "Deployment")
    env, _ = config.container_env(notifier, notifier.pod["containers"][0])
    assert env["HTTPS_PROXY"] == "http://egress-proxy.example.internal:3128"
    policy = next(o for o in rendered if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "notifier")
    assert all(peer.get("ipBlock", {}).get("cidr") != "0.0.0.0/0" for rule in policy["spec"]["egress"]
               for peer in rule["to"])


def test_any_deployment_without_a_budget_or_spreading_fails_the_check(rendered):
    before = problems_of(rendered)
    for index in project_deployments(rendered):
        name = rendered[index]["metadata"]["name"]
        labels = rendered[index]["spec"]["template"]["metadata"]["labels"]
        without_budget = [o for o in rendered if not (o["kind"] == "PodDisruptionBudget" and all(
            labels.get(k) == v for k, v in o["spec"]["selector"]["matchLabels"].items()))]
        assert any(f"Deployment/{name}: spec.selector: no PodDisruptionBudget" in p
                   for p in problems_of(without_budget) - before), name
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname"):
            objects = copy.deepcopy(rendered)
            spec = objects[index]["spec"]["template"]["spec"]
            spec["topologySpreadConstraints"] = [c for c in spec["topologySpreadConstraints"]
                                                 if c["topologyKey"] != key]
            assert any(f"Deployment/{name}: spec.template.spec.topologySpreadConstraints: none over {key}" in p
                       for p in problems_of(objects) - before), (name, key)


def test_any_workload_without_its_own_service_account_or_pinned_image_fails_the_check(rendered):
    before = problems_of(rendered)
    workloads = [i for i, o in enumerate(rendered) if o["kind"] in ("Deployment", "Job", "CronJob")]
    assert len(workloads) == 13
    for index in workloads:
        obj = rendered[index]
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        spec = (obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"])["template"]["spec"]
        path = ("spec.jobTemplate.spec.template" if obj["kind"] == "CronJob" else "spec.template") + ".spec"
        other = "chat" if obj["metadata"]["name"] != "chat" else "consent"
        for account, expected in ((spec["serviceAccountName"] + "x", f"{path}.serviceAccountName "
                                   f"{spec['serviceAccountName']}x does not exist"),
                                  (other, "is not the workload's own"),
                                  (None, "serviceAccountName is not set")):
            objects = copy.deepcopy(rendered)
            target = (objects[index]["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob"
                      else objects[index]["spec"])["template"]["spec"]
            if account is None:
                del target["serviceAccountName"]
            else:
                target["serviceAccountName"] = account
            assert any(f"{name}: " in p and expected in p for p in problems_of(objects) - before), (name, expected)
        objects = copy.deepcopy(rendered)
        target = (objects[index]["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob"
                  else objects[index]["spec"])["template"]["spec"]
        image = target["containers"][0]["image"]
        target["containers"][0]["image"] = image.split("@")[0] + ":v1"
        assert any(f"{name}: " in p and "is not pinned by digest" in p for p in problems_of(objects) - before), name
