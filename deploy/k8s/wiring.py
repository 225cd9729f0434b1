"""Wiring rules over one rendered overlay: every reference between objects resolves to the object it means.

Schemas validate each object alone; these rules look at how they connect, in general terms, never one rule per
known mistake:
- every selector (Service, PodDisruptionBudget, NetworkPolicy and its in-namespace peers, HPA target) selects a
  pod template or object of this overlay;
- every port reference resolves: a Service's targetPort in each pod it selects, a NetworkPolicy's ingress port in
  the pods it protects and its egress port in the peers it allows;
- every Service a workload names in its environment (host:port, scheme://host:port) exists with that port;
- a service whose CronJobs run its periodic jobs runs its server with the in-process copy of them off;
- a pod's terminationGracePeriodSeconds covers its preStop, its drain delay and its shutdown grace;
- image pull policies and references fit the overlay: images `kind load`ed are never pulled (IfNotPresent or
  Never), and a registry overlay pins each project image by digest.
Objects of a kind these rules have no model for are returned by `unmodelled`, so the check names them.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
# Kinds whose references these rules follow (or which refer to nothing); any other kind is named, not passed.
MODELLED_KINDS = POD_KINDS | {"Service", "NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                              "ConfigMap", "Secret", "Namespace", "PersistentVolumeClaim", "ServiceAccount"}
# A project image, as the base names it or as an overlay renames it into a registry (REGISTRY/novahouse/<name>).
PROJECT_IMAGE = re.compile(r"(^|/)novahouse/[a-z-]+([:@].+)?$")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# A service's periodic jobs, when a CronJob runs them (`python -m services.<svc>.manage ...`): the server setting
# that must turn the in-process copy off, and the value that does (two copies would each run every job).
IN_PROCESS_SCHEDULERS = {
    "services.chat": ("SCHEDULER_ENABLED", "false"),
    "services.notifier": ("DLQ_PURGE_INTERVAL_HOURS", "0"),
}
DEFAULT_GRACE_S = 30  # Kubernetes' default terminationGracePeriodSeconds
# An address in a literal env value: scheme://host:port/... or host:port (host a Service name, maybe qualified).
ADDRESS = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:[^@/]*@)?(?P<host>[a-z0-9]([-a-z0-9.]*[a-z0-9])?):(?P<port>\d+)")


@dataclass(frozen=True)
class Finding:
    where: str  # "<source>: Kind/name"
    what: str   # "<field>: why"


@dataclass
class Pod:
    """One pod template: the object that owns it, its labels, its spec, and the path of the spec in the object."""
    kind: str
    name: str
    labels: dict
    spec: dict
    path: str

    def containers(self) -> Iterator[tuple[str, dict]]:
        for section in ("initContainers", "containers"):
            for index, container in enumerate(self.spec.get(section) or []):
                yield f"{self.path}.{section}[{index}]", container

    def port_names(self) -> set[str]:
        return {p["name"] for _, c in self.containers() for p in c.get("ports") or [] if p.get("name")}

    def port_numbers(self) -> set[int]:
        return {p["containerPort"] for _, c in self.containers() for p in c.get("ports") or []}

    def has_port(self, port: object) -> bool:
        return port in self.port_names() if isinstance(port, str) else port in self.port_numbers()


def pods(objects: list[dict]) -> list[Pod]:
    found = []
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "CronJob":
            template, path = obj["spec"]["jobTemplate"]["spec"]["template"], "spec.jobTemplate.spec.template"
        elif kind in POD_KINDS:
            template, path = obj["spec"]["template"], "spec.template"
        else:
            continue
        found.append(Pod(kind, name, dict((template.get("metadata") or {}).get("labels") or {}),
                         template["spec"], f"{path}.spec"))
    return found


def matches(selector: dict | None, labels: dict) -> bool:
    """A label selector (matchLabels/matchExpressions, or a Service's plain map) against a set of labels."""
    if not selector:
        return True
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], set(expr.get("values") or [])
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) or \
                (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def where(source: str, obj: dict) -> str:
    return f"{source}: {obj['kind']}/{obj['metadata']['name']}"


def unmodelled(objects: list[dict]) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objects if o["kind"] not in MODELLED_KINDS]


# ------------------------------------------------------------------------------------------------- selectors

def check_services(source: str, objects: list[dict], all_pods: list[Pod]) -> list[Finding]:
    found = []
    for obj in objects:
        if obj["kind"] != "Service" or obj["spec"].get("type") == "ExternalName":
            continue
        selector = obj["spec"].get("selector")
        if not selector:
            continue  # endpoints managed by hand: nothing to resolve here
        selected = [p for p in all_pods if matches(selector, p.labels) and p.kind != "CronJob" and p.kind != "Job"]
        if not selected:
            found.append(Finding(where(source, obj), f"spec.selector {selector} selects no pod template"))
            continue
        for index, port in enumerate(obj["spec"].get("ports") or []):
            target = port.get("targetPort", port.get("port"))
            missing = [f"{p.kind}/{p.name}" for p in selected if not p.has_port(target)]
            if missing:
                found.append(Finding(where(source, obj), f"spec.ports[{index}].targetPort {target!r} is not a "
                                                         f"container port of {', '.join(missing)}"))
    return found


def check_budgets(source: str, objects: list[dict], all_pods: list[Pod]) -> list[Finding]:
    found = []
    for obj in objects:
        if obj["kind"] == "PodDisruptionBudget":
            selector = obj["spec"].get("selector") or {}
            if not any(matches(selector, p.labels) for p in all_pods if p.kind not in ("Job", "CronJob")):
                found.append(Finding(where(source, obj), f"spec.selector {selector} selects no pod template"))
        elif obj["kind"] == "HorizontalPodAutoscaler":
            ref = obj["spec"]["scaleTargetRef"]
            if not any(o["kind"] == ref["kind"] and o["metadata"]["name"] == ref["name"] for o in objects):
                found.append(Finding(where(source, obj), f"spec.scaleTargetRef {ref['kind']}/{ref['name']} "
                                                         "does not exist"))
    return found


def outside_peers(obj: dict) -> set[str]:
    """Label keys a NetworkPolicy declares as selecting pods the manifests do not make (an operator's pod)."""
    annotation = (obj["metadata"].get("annotations") or {}).get("novahouse.io/selects-outside", "")
    return {key.strip() for key in annotation.split(",") if key.strip()}


def check_network_policies(source: str, objects: list[dict], all_pods: list[Pod]) -> list[Finding]:
    found = []
    for obj in objects:
        if obj["kind"] != "NetworkPolicy":
            continue
        here, spec, outside = where(source, obj), obj["spec"], outside_peers(obj)
        protected = [p for p in all_pods if matches(spec.get("podSelector"), p.labels)]
        if not protected:
            found.append(Finding(here, f"spec.podSelector {spec.get('podSelector')} selects no pod template"))
            continue
        for direction, peers_key in (("ingress", "from"), ("egress", "to")):
            for r, rule in enumerate(spec.get(direction) or []):
                peer_pods: list[Pod] = []
                in_namespace = True
                for q, peer in enumerate(rule.get(peers_key) or []):
                    if "namespaceSelector" in peer or "ipBlock" in peer or "podSelector" not in peer:
                        in_namespace = False
                        continue
                    selector = peer["podSelector"]
                    if set(selector.get("matchLabels") or {}) & outside:
                        in_namespace = False
                        continue
                    selected = [p for p in all_pods if matches(selector, p.labels)]
                    if not selected:
                        found.append(Finding(here, f"spec.{direction}[{r}].{peers_key}[{q}].podSelector {selector} "
                                                   "selects no pod template"))
                    peer_pods += selected
                # Ingress ports are the protected pods' own; egress ports are the peers' (when all are pods here).
                owners = protected if direction == "ingress" else (peer_pods if in_namespace and peer_pods else [])
                for p, port in enumerate(rule.get("ports") or []):
                    number = port.get("port")
                    if number is None or not owners:
                        continue
                    if not any(pod.has_port(number) for pod in owners):
                        names = sorted({f"{pod.kind}/{pod.name}" for pod in owners})
                        found.append(Finding(here, f"spec.{direction}[{r}].ports[{p}].port {number!r} is a container "
                                                   f"port of none of {', '.join(names)}"))
    return found


# ------------------------------------------------------------------------------------------ names and times

def literal_env(pod: Pod, container: dict, config_maps: dict[str, dict]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env.update(config_maps.get(source["configMapRef"]["name"], {}))
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "configMapKeyRef" in (item.get("valueFrom") or {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            value = config_maps.get(ref["name"], {}).get(ref["key"])
            if value is not None:
                env[item["name"]] = value
        else:
            env.pop(item["name"], None)
    return env


def service_ports(objects: list[dict], namespace: str) -> dict[str, set[int]]:
    """Every name a Service answers to in the namespace (short and qualified), with its ports."""
    names: dict[str, set[int]] = {}
    for obj in objects:
        if obj["kind"] == "Service":
            name = obj["metadata"]["name"]
            ports = {p["port"] for p in obj["spec"].get("ports") or []}
            for alias in (name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
                          f"{name}.{namespace}.svc.cluster.local"):
                names[alias] = ports
    return names


def in_cluster(host: str, namespace: str) -> bool:
    """A name the cluster's DNS resolves to a Service of this namespace: a bare label, or <svc>.<ns>[.svc...]."""
    parts = host.split(".")
    if re.match(r"^\d+$", parts[-1]):
        return False  # an IP address
    return len(parts) == 1 or (len(parts) >= 2 and parts[1] == namespace and
                               (len(parts) == 2 or parts[2:] in (["svc"], ["svc", "cluster", "local"])))


def check_addresses(source: str, objects: list[dict], all_pods: list[Pod]) -> list[Finding]:
    namespace = next((o["metadata"].get("namespace") for o in objects if o["metadata"].get("namespace")), "default")
    services = service_ports(objects, namespace)
    config_maps = {o["metadata"]["name"]: dict(o.get("data") or {}) for o in objects if o["kind"] == "ConfigMap"}
    found = []
    owners = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    for pod in all_pods:
        obj = owners[(pod.kind, pod.name)]
        for path, container in pod.containers():
            for name, value in sorted(literal_env(pod, container, config_maps).items()):
                for address in str(value).split(","):
                    match = ADDRESS.match(address.strip())
                    if not match or not in_cluster(match["host"], namespace):
                        continue
                    if "://" not in address and not name.endswith(("_ADDR", "_ADDRS")):
                        continue  # host:port in a value that names no address (a time, a ratio)
                    host, port = match["host"], int(match["port"])
                    if host not in services:
                        found.append(Finding(where(source, obj), f"{path} ({container['name']}) env {name}: "
                                                                 f"Service {host} does not exist"))
                    elif port not in services[host]:
                        found.append(Finding(where(source, obj), f"{path} ({container['name']}) env {name}: "
                                                                 f"Service {host} has no port {port}"))
    return found


def server_module(container: dict) -> str | None:
    command = list(container.get("command") or []) + list(container.get("args") or [])
    return command[2] if len(command) >= 3 and command[:2] == ["python", "-m"] else None


def check_schedulers(source: str, objects: list[dict], all_pods: list[Pod]) -> list[Finding]:
    config_maps = {o["metadata"]["name"]: dict(o.get("data") or {}) for o in objects if o["kind"] == "ConfigMap"}
    scheduled = {module.rsplit(".", 1)[0] for pod in all_pods if pod.kind == "CronJob"
                 for _, c in pod.containers() if (module := server_module(c)) and module.endswith(".manage")}
    owners = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    found = []
    for pod in all_pods:
        if pod.kind != "Deployment":
            continue
        for path, container in pod.containers():
            module = server_module(container) or ""
            package = module.rsplit(".", 1)[0]
            if not module.endswith(".server") or package not in scheduled or package not in IN_PROCESS_SCHEDULERS:
                continue
            setting, off = IN_PROCESS_SCHEDULERS[package]
            value = literal_env(pod, container, config_maps).get(setting)
            if value is None or value.strip().lower() != off:
                found.append(Finding(where(source, owners[(pod.kind, pod.name)]),
                                     f"{path} ({container['name']}) env {setting}={value}: CronJobs run "
                                     f"{package}'s periodic jobs, so the server must run with {setting}={off}"))
    return found


def prestop_seconds(container: dict) -> float:
    """The time a container's preStop hook takes: a `sleep` action or an exec `sleep N`."""
    hook = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in hook:
        return float(hook["sleep"].get("seconds", 0))
    command = (hook.get("exec") or {}).get("command") or []
    text = " ".join(map(str, command))
    match = re.search(r"\bsleep[\s(]+(\d+(\.\d+)?)", text)
    return float(match[1]) if match else 0.0


def check_grace(source: str, objects: list[dict], all_pods: list[Pod]) -> list[Finding]:
    """terminationGracePeriodSeconds must exceed preStop + DRAIN_DELAY_S + SHUTDOWN_GRACE_S of every container: the
    kubelet kills the pod when it runs out, in-flight calls and all."""
    config_maps = {o["metadata"]["name"]: dict(o.get("data") or {}) for o in objects if o["kind"] == "ConfigMap"}
    owners = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    found = []
    for pod in all_pods:
        if pod.kind not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        grace = pod.spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
        for path, container in pod.containers():
            if path.endswith("]") and ".initContainers[" in path:
                continue
            env = literal_env(pod, container, config_maps)
            try:
                needed = prestop_seconds(container) + float(env.get("DRAIN_DELAY_S") or 0) + \
                    float(env.get("SHUTDOWN_GRACE_S") or 0)
            except ValueError:
                continue  # the env check names the bad number
            if needed and grace <= needed:
                found.append(Finding(where(source, owners[(pod.kind, pod.name)]),
                                     f"{pod.path}.terminationGracePeriodSeconds {grace} does not exceed "
                                     f"{container['name']}'s preStop + DRAIN_DELAY_S + SHUTDOWN_GRACE_S "
                                     f"= {needed:g} s"))
    return found


def check_images(source: str, objects: list[dict], all_pods: list[Pod], loaded_images: bool) -> list[Finding]:
    """Loaded images (kind) exist on the node only: a pull would fail. A registry overlay pins every project image
    by digest, so a rollback or a rescheduled pod runs exactly the bytes that were tested."""
    owners = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    found = []
    for pod in all_pods:
        for path, container in pod.containers():
            image = container.get("image", "")
            if not PROJECT_IMAGE.search(image):
                continue
            here = where(source, owners[(pod.kind, pod.name)])
            policy = container.get("imagePullPolicy")
            if loaded_images and policy not in ("IfNotPresent", "Never"):
                found.append(Finding(here, f"{path}.imagePullPolicy {policy}: {image} is loaded into the kind "
                                           "node, never pulled (IfNotPresent or Never)"))
            if not loaded_images and not DIGEST.search(image):
                found.append(Finding(here, f"{path}.image {image} is not pinned by digest (@sha256:...)"))
    return found


def check_service_accounts(source: str, objects: list[dict], all_pods: list[Pod]) -> list[Finding]:
    accounts = {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"}
    owners = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    return [Finding(where(source, owners[(pod.kind, pod.name)]),
                    f"{pod.path}.serviceAccountName {pod.spec['serviceAccountName']} does not exist")
            for pod in all_pods
            if pod.spec.get("serviceAccountName", "default") not in accounts | {"default"}]


def check_production(source: str, objects: list[dict], all_pods: list[Pod]) -> list[Finding]:
    """A registry (production) overlay: every Deployment survives a node drain and a zone outage (a PDB selects it,
    it spreads over zones and nodes) and every project workload runs as a ServiceAccount of its own."""
    owners = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    budgets = [o["spec"].get("selector") or {} for o in objects if o["kind"] == "PodDisruptionBudget"]
    found = []
    by_account: dict[str, list[str]] = {}
    for pod in all_pods:
        here = where(source, owners[(pod.kind, pod.name)])
        if not any(PROJECT_IMAGE.search(c.get("image", "")) for _, c in pod.containers()):
            continue
        by_account.setdefault(pod.spec.get("serviceAccountName", "default"), []).append(f"{pod.kind}/{pod.name}")
        if pod.kind != "Deployment":
            continue
        if not any(matches(selector, pod.labels) for selector in budgets):
            found.append(Finding(here, "spec.selector: no PodDisruptionBudget selects its pods"))
        keys = {c.get("topologyKey") for c in pod.spec.get("topologySpreadConstraints") or []}
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname"):
            if key not in keys:
                found.append(Finding(here, f"{pod.path}.topologySpreadConstraints: none over {key}"))
    for account, users in sorted(by_account.items()):
        if account == "default" or len(users) > 1:
            for user in users:
                kind, name = user.split("/", 1)
                found.append(Finding(where(source, owners[(kind, name)]),
                                     f"serviceAccountName {account} is not the workload's own "
                                     f"(shared by {', '.join(users)})" if len(users) > 1 else
                                     "serviceAccountName is not set: the workload runs as the namespace's default"))
    return found


def check(source: str, objects: list[dict], loaded_images: bool) -> list[Finding]:
    all_pods = pods(objects)
    rules = [check_services, check_budgets, check_network_policies, check_addresses, check_schedulers, check_grace,
             check_service_accounts] + ([] if loaded_images else [check_production])
    found = [finding for rule in rules for finding in rule(source, objects, all_pods)]
    return found + check_images(source, objects, all_pods, loaded_images)
