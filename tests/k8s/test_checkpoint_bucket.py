"""The kind overlay's checkpoint bucket and erasure journal, read from the rendered manifests (no cluster runs here):
consent's checkpoint endpoint is a Service of the overlay that serves MinIO, the bucket Job creates consent's bucket
with object lock as the same user consent writes as, MinIO and the journal keep their data on PersistentVolumes, and
the NetworkPolicies let exactly the consent servers, the checkpoint CronJob and the bucket Job reach MinIO."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from deploy.k8s import check
from tests.k8s.test_manifests import edit_yaml

REPO = Path(__file__).resolve().parents[2]
KIND = Path("deploy/k8s/overlays/kind")
CHECKPOINT_CRONJOB = "consent-checkpoint-ledger"
BUCKET_JOB = "minio-checkpoint-bucket"


@pytest.fixture(scope="module")
def kind() -> list[dict]:
    return check.render(REPO / KIND)


def named(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def workload(objects: list[dict], kind: str, name: str) -> check.Workload:
    return next(w for w in check.workloads("kind", objects) if w.kind == kind and w.name == name)


def literal_env(objects: list[dict], work: check.Workload) -> dict[str, str | None]:
    config = check.Config(objects, check.secret_template_keys(REPO))
    env, problems = config.container_env(work, work.pod["containers"][0])
    assert problems == [], problems
    return env


def secret_keys(container: dict) -> dict[str, str]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container.get("env") or []
            if "secretKeyRef" in (e.get("valueFrom") or {})}


def serving_pods(objects: list[dict], host: str, port: int) -> tuple[check.Workload, dict]:
    """The workload a Service name and port lead to, and its container that declares the target port."""
    service = named(objects, "Service", host)
    target = next(p.get("targetPort", p["port"]) for p in service["spec"]["ports"] if p["port"] == port)
    selector = service["spec"]["selector"]
    for work in check.workloads("kind", objects):
        labels = pod_labels(objects, work)
        if work.kind in ("Deployment", "StatefulSet") and selector.items() <= labels.items():
            for container in work.pod["containers"]:
                numbers, names = check.declared_ports(container)
                if target in numbers or target in names:
                    return work, container
    raise AssertionError(f"Service {host} port {port} selects no pod that declares {target!r}")


def pod_labels(objects: list[dict], work: check.Workload) -> dict[str, str]:
    obj = named(objects, work.kind, work.name)
    template = obj["spec"]["jobTemplate"]["spec"]["template"] if work.kind == "CronJob" else obj["spec"]["template"]
    return dict(template["metadata"].get("labels") or {})


def test_consent_and_its_checkpoint_cronjob_publish_to_a_minio_service_of_the_overlay(kind):
    for kind_name, name in (("Deployment", "consent"), ("CronJob", CHECKPOINT_CRONJOB)):
        work = workload(kind, kind_name, name)
        env = literal_env(kind, work)
        endpoint = urlsplit(env["CONSENT_CHECKPOINT_S3_ENDPOINT"] or "")
        assert endpoint.scheme == "http" and endpoint.hostname and endpoint.port, (name, endpoint)
        assert env["CONSENT_CHECKPOINT_S3_BUCKET"], name
        server, container = serving_pods(kind, endpoint.hostname, endpoint.port)
        assert container["image"].startswith("quay.io/minio/minio:RELEASE."), container["image"]
        assert server.kind == "StatefulSet"
        # consent signs in as the user MinIO is started with
        keys = secret_keys(work.pod["containers"][0])
        minio_keys = secret_keys(container)
        assert keys["AWS_ACCESS_KEY_ID"] == minio_keys["MINIO_ROOT_USER"]
        assert keys["AWS_SECRET_ACCESS_KEY"] == minio_keys["MINIO_ROOT_PASSWORD"]


def test_the_base_alone_names_no_endpoint_so_only_the_overlay_points_at_minio():
    base = check.render(REPO / "deploy/k8s/base")
    env = literal_env(base, workload(base, "Deployment", "consent"))
    assert env["CONSENT_CHECKPOINT_S3_ENDPOINT"] == ""
    assert not any(o["metadata"]["name"].startswith("minio") for o in base)


def test_the_bucket_job_creates_consents_bucket_with_object_lock_on_the_same_minio(kind):
    job = workload(kind, "Job", BUCKET_JOB)
    container = job.pod["containers"][0]
    argv = list(container["command"]) + list(container.get("args") or [])
    assert argv[0] == "mc" and "mb" in argv
    assert "--with-lock" in argv, "object lock can only be enabled when the bucket is created"
    assert "--ignore-existing" in argv, "a rerun of the Job must not fail on the bucket it made"
    target = argv[-1]
    alias, _, bucket_ref = target.partition("/")
    env_items = {e["name"]: e for e in container["env"]}
    # the bucket is consent's: the same key of the same ConfigMap the consent Deployment reads it from
    assert bucket_ref == "$(BUCKET)"
    ref = env_items["BUCKET"]["valueFrom"]["configMapKeyRef"]
    consent = workload(kind, "Deployment", "consent")
    consent_maps = {e["configMapRef"]["name"] for e in consent.pod["containers"][0]["envFrom"] if "configMapRef" in e}
    assert ref["key"] == "CONSENT_CHECKPOINT_S3_BUCKET" and ref["name"] in consent_maps
    # the alias is MinIO's address as consent uses it, signed in as the user consent writes as
    alias_url = urlsplit(env_items[f"MC_HOST_{alias}"]["value"])
    endpoint = urlsplit(literal_env(kind, consent)["CONSENT_CHECKPOINT_S3_ENDPOINT"] or "")
    assert (alias_url.hostname, alias_url.port) == (endpoint.hostname, endpoint.port)
    assert (alias_url.username, alias_url.password) == ("$(MINIO_ROOT_USER)", "$(MINIO_ROOT_PASSWORD)")
    # Kubernetes expands $(VAR) only from variables defined earlier in the list
    names = [e["name"] for e in container["env"]]
    assert names.index("MINIO_ROOT_USER") < names.index(f"MC_HOST_{alias}") > names.index("MINIO_ROOT_PASSWORD")
    keys = secret_keys(container)
    assert keys["MINIO_ROOT_USER"] == secret_keys(consent.pod["containers"][0])["AWS_ACCESS_KEY_ID"]
    assert container["image"].startswith("quay.io/minio/mc:RELEASE.")


def test_minio_keeps_its_objects_on_a_persistent_volume(kind):
    minio = named(kind, "StatefulSet", "minio")
    claims = {t["metadata"]["name"] for t in minio["spec"].get("volumeClaimTemplates") or []}
    container = minio["spec"]["template"]["spec"]["containers"][0]
    data_dir = container["command"][container["command"].index("server") + 1]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == data_dir)
    assert mount["name"] in claims, "object lock on a volume that dies with the pod protects nothing"


def test_every_consent_replica_mounts_the_erasure_journal_from_a_claim_of_the_overlay(kind):
    consent = workload(kind, "Deployment", "consent")
    container = consent.pod["containers"][0]
    journal_dir = literal_env(kind, consent)["CONSENT_ERASURE_JOURNAL_DIR"]
    assert journal_dir and journal_dir.startswith("/")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == journal_dir)
    assert not mount.get("readOnly")
    volume = next(v for v in consent.pod["volumes"] if v["name"] == mount["name"])
    claim = named(kind, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]  # one node: kind's; see the README for more nodes


# ------------------------------------------------------------------------------------------- NetworkPolicies

def selects(selector: dict, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against a pod's labels; {} selects every pod."""
    if not (selector.get("matchLabels") or {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if not {"In": present and labels[key] in values, "NotIn": not present or labels[key] not in values,
                "Exists": present, "DoesNotExist": not present}[operator]:
            return False
    return True


def allowed(policies: list[dict], pod: dict[str, str], direction: str, peer: dict[str, str], port: int) -> bool:
    """Whether the namespace's NetworkPolicies let `pod` talk to (Egress) or hear from (Ingress) the pod `peer` in the
    same namespace on a TCP port: unrestricted unless a policy of that direction selects the pod, then only as one of
    their rules allows."""
    section, peers = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = [p["spec"] for p in policies
                 if selects(p["spec"]["podSelector"], pod) and direction in p["spec"].get("policyTypes", [])]
    if not selecting:
        return True
    for spec in selecting:
        for rule in spec.get(section) or []:
            ports = rule.get("ports")
            port_ok = not ports or any(p.get("protocol", "TCP") == "TCP" and p.get("port") in (None, port)
                                       for p in ports)
            peer_ok = not rule.get(peers) or any(
                "podSelector" in item and "namespaceSelector" not in item and selects(item["podSelector"], peer)
                for item in rule[peers])
            if port_ok and peer_ok:
                return True
    return False


def who_reaches_minio(objects: list[dict]) -> set[str]:
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    minio = pod_labels(objects, workload(objects, "StatefulSet", "minio"))
    reaching = set()
    for work in check.workloads("kind", objects):
        labels = pod_labels(objects, work)
        if work.name != "minio" and allowed(policies, labels, "Egress", minio, 9000) \
                and allowed(policies, minio, "Ingress", labels, 9000):
            reaching.add(f"{work.kind}/{work.name}")
    return reaching


def test_only_the_consent_servers_the_checkpoint_cronjob_and_the_bucket_job_reach_minio(kind):
    assert who_reaches_minio(kind) == {"Deployment/consent", f"CronJob/{CHECKPOINT_CRONJOB}", f"Job/{BUCKET_JOB}"}


def test_the_bucket_job_reaches_nothing_but_minio(kind):
    policies = [o for o in kind if o["kind"] == "NetworkPolicy"]
    job = pod_labels(kind, workload(kind, "Job", BUCKET_JOB))
    for work in check.workloads("kind", kind):
        if work.name in ("minio", BUCKET_JOB):
            continue
        for container in work.pod["containers"]:
            for port in check.declared_ports(container)[0]:
                assert not allowed(policies, job, "Egress", pod_labels(kind, work), port), (work.name, port)


def test_a_policy_that_lets_chat_reach_minio_is_caught(tree):
    """The evaluator above is no formality: MinIO's ingress opened to chat is not enough while chat's egress stays
    closed, and both opened show chat among those who reach it."""
    def open_ingress(doc):
        if doc["kind"] == "NetworkPolicy" and doc["metadata"]["name"] == "minio":
            chat = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "chat"}}}
            doc["spec"]["ingress"][0]["from"].append(chat)

    def open_egress(doc):
        if doc["kind"] == "NetworkPolicy" and doc["metadata"]["name"] == "checkpoint-egress-minio":
            doc["spec"]["podSelector"] = {"matchExpressions": [
                {"key": "app.kubernetes.io/name", "operator": "In", "values": ["consent", "chat"]}]}

    edit_yaml(tree / KIND / "minio.yaml", open_ingress)
    assert "Deployment/chat" not in who_reaches_minio(check.render(tree / KIND))

    edit_yaml(tree / KIND / "minio.yaml", open_egress)
    reaching = who_reaches_minio(check.render(tree / KIND))
    assert {"Deployment/chat", "CronJob/chat-purge-cache"} <= reaching
    assert "Job/consent-migrate" not in reaching  # MinIO's ingress still names consent's servers and CronJob only
