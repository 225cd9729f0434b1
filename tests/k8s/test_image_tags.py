"""Every build gets its own image tag, and what `make images` writes rolls every workload to it; the production
overlay names images by digest (issue 17, part 3)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.k8s import check, images

REPO = Path(__file__).resolve().parents[2]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=root,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "app.py").write_text("print('v1')\n")
    git(root, "add", "app.py")
    git(root, "commit", "-q", "-m", "v1")
    return root


def test_a_clean_tree_is_tagged_by_its_commit_and_a_dirty_one_by_its_changes(repo):
    commit = git(repo, "rev-parse", "--short=12", "HEAD")
    assert images.build_tag(repo) == commit

    (repo / "app.py").write_text("print('v2')\n")
    first = images.build_tag(repo)
    assert re.fullmatch(rf"{commit}-dirty-[0-9a-f]{{8}}", first)
    assert images.build_tag(repo) == first  # the same tree, the same tag
    (repo / "app.py").write_text("print('v3')\n")
    assert images.build_tag(repo) not in (first, commit)  # another change, another tag
    (repo / "new.py").write_text("x = 1\n")
    with_new_file = images.build_tag(repo)
    (repo / "new.py").write_text("x = 2\n")
    assert images.build_tag(repo) != with_new_file  # untracked files count too

    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v3")
    assert images.build_tag(repo) == git(repo, "rev-parse", "--short=12", "HEAD") != commit


def test_make_images_tags_each_image_and_renders_that_tag_into_every_kind_workload(tmp_path):
    tag = images.build_tag()
    dry_run = subprocess.run(["make", "-n", "images"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert f"-t novahouse/$name:{tag} ." in dry_run
    assert f"-m deploy.k8s.images kind --tag {tag}" in dry_run
    assert "-k deploy/k8s/overlays/kind-build" in subprocess.run(
        ["make", "-n", "deploy"], cwd=REPO, capture_output=True, text=True).stdout

    root = tmp_path / "repo"
    shutil.copytree(REPO / "deploy", root / "deploy", ignore=shutil.ignore_patterns("__pycache__", "secrets.env",
                                                                                   "kind-build"))
    images.main(["kind", "--tag", tag, "--root", str(root)])
    objects = check.render(root / "deploy/k8s/overlays/kind-build")

    seen = set()
    for work in check.workloads("build", objects):
        for container in work.containers():
            name = container["image"].split(":")[0]
            if name.startswith("novahouse/"):
                assert container["image"] == f"{name}:{tag}", work.where(container)
                seen.add((work.kind, name))
    assert {kind for kind, _ in seen} == {"Deployment", "Job", "CronJob"}
    assert {name for _, name in seen} == {f"novahouse/{n}" for n in images.IMAGES}
    # a different build, a different tag: every Deployment's pod template changes, so each one rolls
    images.main(["kind", "--tag", "0123456789ab", "--root", str(root)])
    again = check.render(root / "deploy/k8s/overlays/kind-build")
    assert all(c["image"].endswith(":0123456789ab") for w in check.workloads("build", again) if w.kind == "Deployment"
               for c in w.containers() if c["image"].startswith("novahouse/"))


def test_pinning_the_production_overlay_names_each_image_by_its_digest(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "deploy", root / "deploy", ignore=shutil.ignore_patterns("__pycache__", "secrets.env"))
    digests = {name: "sha256:" + f"{i:x}" * 64 for i, name in enumerate(images.IMAGES, start=1)}
    arguments = [f"--digest={name}={digest}" for name, digest in digests.items()]

    images.main(["pin", "--registry", "registry.example.com/nh", "--tag", "t", "--root", str(root), *arguments])
    objects = check.render(root / "deploy/k8s/overlays/production")

    found = {c["image"] for w in check.workloads("production", objects) for c in w.containers()
             if "/novahouse/" in c["image"]}
    assert found == {f"registry.example.com/nh/novahouse/{name}@{digest}" for name, digest in digests.items()}
    with pytest.raises(ValueError, match="not a sha256 digest"):
        images.pin_production(root, "r", {**digests, "chat": "sha256:short"})
