"""The one Dockerfile, read as Docker reads it (no Docker engine runs here): it builds every image `make images`
builds and the manifests run, and the image it makes holds no build tools and no pip, and runs as non-root."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.k8s import check

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = check.parse_dockerfile((REPO / "Dockerfile").read_text())
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|apk|yum|dnf|gcc|g\+\+|cc|clang|make|build-essential|python3?-dev|libc6?-dev"
                         r"|musl-dev|[\w.-]+-dev)\b")
# pip as the command of a shell command, or run as a module: `pip install`, `/opt/venv/bin/pip ...`, `python -m pip`
PIP_RUN = re.compile(r"(?:^|&&|\|\||;|\|)\s*(?:\S*/)?pip3?(?:\.\d+)?\s|-m\s+(?:pip|ensurepip)\b")


def makefile_images() -> list[str]:
    match = re.search(r"^IMAGES\s*:=\s*(.+)$", (REPO / "Makefile").read_text(), re.M)
    assert match, "the Makefile names no IMAGES"
    return match.group(1).split()


def manifest_images() -> set[str]:
    names = set()
    for path in (REPO / "deploy" / "k8s").rglob("*.yaml"):
        for match in re.finditer(r"^\s*image:\s*novahouse/([a-z-]+)", path.read_text(), re.M):
            names.add(match.group(1))
    return names


def runs(stages: list[check.DockerStage]) -> list[str]:
    return [args for stage in stages for name, args in stage.instructions if name == "RUN"]


IMAGES = makefile_images()


def test_make_images_builds_every_image_the_manifests_run():
    assert set(IMAGES) == manifest_images()


@pytest.mark.parametrize("service", IMAGES)
def test_every_service_the_makefile_builds_has_its_stage_and_passes_the_build_stage(service):
    stages = DOCKERFILE.image(SERVICE=service)
    assert [stage.name for stage in stages] == ["runtime", service, None]
    build = DOCKERFILE.stage("build")
    assert build is not None
    [case] = [args for args in runs([build]) if args.startswith('case "$SERVICE" in')]
    accepted = {value for pattern in re.findall(r"(\S+)\)", case) for value in pattern.split("|")}
    assert service in accepted


def test_an_unknown_service_is_refused_by_the_build_stage():
    build = DOCKERFILE.stage("build")
    assert build is not None
    [case] = [args for args in runs([build]) if args.startswith('case "$SERVICE" in')]
    assert re.search(r"\*\) echo \"SERVICE must be [^\"]+\" >&2; exit 1 ;;", case)
    assert DOCKERFILE.args["SERVICE"] is None  # no default: a build names its service


@pytest.mark.parametrize("service", IMAGES)
def test_the_image_installs_no_build_tools_and_runs_no_pip(service):
    stages = DOCKERFILE.image(SERVICE=service)
    for command in runs(stages):
        assert not BUILD_TOOLS.search(command), command
        assert not PIP_RUN.search(command), command
        assert "venv" not in command, command
    instructions = [(name, args) for stage in stages for name, args in stage.instructions]
    assert not [args for name, args in instructions if name == "ADD"]
    copies = [args for name, args in instructions if name == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv", "--from=build /app /app"]


@pytest.mark.parametrize("service", IMAGES)
def test_the_venv_the_image_gets_has_no_pip_and_the_base_s_pip_is_removed(service):
    build = DOCKERFILE.stage("build")
    assert build is not None
    [install] = [args for args in runs([build]) if "/opt/venv/bin/pip install" in args]
    steps = [step.strip() for step in install.split("&&")]
    install_step = "/opt/venv/bin/pip install -r /runtime-requirements.txt"
    assert steps.index("python3 -m venv /opt/venv") < steps.index(install_step)
    assert steps[-1] == "/opt/venv/bin/pip uninstall -y pip setuptools wheel"  # pip's last act in the venv
    assert not [args for args in runs([build]) if args != install and PIP_RUN.search(args)]
    assert runs([build])[-1].endswith("&& ! test -e /opt/venv/bin/pip")
    [runtime] = [stage for stage in DOCKERFILE.image(SERVICE=service) if stage.name == "runtime"]
    [cleanup] = runs([runtime])
    words = cleanup.split()
    assert words[:2] == ["rm", "-rf"]
    assert {"/usr/local/bin/pip", "/usr/local/lib/python3*/site-packages/pip"} <= set(words)
    env = dict(re.findall(r"(\w+)=(\S+)", runtime.last("ENV") or ""))
    assert env["PATH"].startswith("/opt/venv/bin:")


@pytest.mark.parametrize("service", IMAGES)
def test_the_image_runs_as_a_numeric_non_root_user(service):
    users = [user for stage in DOCKERFILE.image(SERVICE=service) if (user := stage.last("USER"))]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1])


def dockerfile_problems(root: Path) -> list[str]:
    _, found = check.run_checks(root, entrypoints=False, schema=False)
    return [str(p) for p in found if p.check == "dockerfiles"]


def test_a_stage_whose_command_is_not_the_deployment_s_fails_the_check(tree):
    assert dockerfile_problems(tree) == []
    path = tree / "Dockerfile"
    path.write_text(path.read_text().replace('"services.chat.server"]', '"services.chat.manage"]'))
    assert dockerfile_problems(tree) == [
        "[dockerfiles] Dockerfile (SERVICE=chat): CMD differs from the Deployment's "
        "['python', '-m', 'services.chat.server']"]


def test_a_service_without_its_stage_or_a_root_user_fails_the_check(tree):
    path = tree / "Dockerfile"
    text = path.read_text().replace("FROM runtime AS ratelimit", "FROM runtime AS limiter")
    path.write_text(text.replace("USER 10001:10001", "USER 0"))
    found = dockerfile_problems(tree)
    assert "[dockerfiles] Dockerfile (SERVICE=ratelimit): no stage named ratelimit makes the image" in found
    assert "[dockerfiles] Dockerfile (SERVICE=chat): does not switch to a numeric non-root USER" in found
