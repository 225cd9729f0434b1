"""Which image each overlay deploys: a tag per build for kind, a digest per pushed image for production.

    python -m deploy.k8s.images tag                    # this build's tag: the commit, and -dirty-<hash> if changed
    python -m deploy.k8s.images kind --tag TAG         # write overlays/kind-build (git-ignored) naming TAG
    python -m deploy.k8s.images pin --registry REG --tag TAG [--digest NAME=sha256:...]
                                                       # pin overlays/production to the pushed images' digests

`make images` builds every image under the build's own tag, loads it into kind and writes overlays/kind-build, a
kustomization over overlays/kind that names that tag; `make deploy` applies it, so each Deployment, Job and CronJob
rolls to the code just built (a tag never reused, so IfNotPresent never keeps an old image). `make pin-images`
pushes to REGISTRY and writes each image's digest into overlays/production/kustomization.yaml (a change to commit:
the release is the digests it names).
"""
from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGES = ("chat", "consent", "notifier", "ratelimit", "gateway")
KIND_BUILD = Path("deploy/k8s/overlays/kind-build")
PRODUCTION = Path("deploy/k8s/overlays/production/kustomization.yaml")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=60).stdout


def build_tag(root: Path = REPO) -> str:
    """The commit's short hash; with uncommitted changes, -dirty- and a hash of them (two different dirty trees
    never share a tag, and a rebuild of the same one keeps it)."""
    commit = git(root, "rev-parse", "--short=12", "HEAD").strip()
    status = git(root, "status", "--porcelain", "--untracked-files=all")
    if not status.strip():
        return commit
    changes = hashlib.sha256(git(root, "diff", "HEAD", "--binary").encode())
    for line in sorted(status.splitlines()):
        if line.startswith("??"):
            path = root / line[3:]
            changes.update(line.encode() + (path.read_bytes() if path.is_file() else b""))
    return f"{commit}-dirty-{changes.hexdigest()[:8]}"


def kind_overlay(root: Path, tag: str) -> Path:
    """overlays/kind-build/kustomization.yaml: the kind overlay with every project image at `tag` (beside it, as
    kustomize refuses an overlay inside the one it builds on)."""
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", tag):
        raise ValueError(f"{tag!r} is not a valid image tag")
    build = root / KIND_BUILD
    build.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `make images` (python -m deploy.k8s.images kind): the images of this build. Not committed.",
             "apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization", "resources:", "  - ../kind",
             "images:"]
    lines += [f"  - {{name: novahouse/{name}, newTag: {tag}}}" for name in IMAGES]
    path = build / "kustomization.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def pin_production(root: Path, registry: str, digests: dict[str, str]) -> Path:
    """Rewrite the images: entries of overlays/production to registry/novahouse/<name>@digest."""
    missing = set(IMAGES) - set(digests)
    if missing:
        raise ValueError(f"no digest for {sorted(missing)}")
    for name, digest in digests.items():
        if not DIGEST.match(digest):
            raise ValueError(f"{name}: {digest!r} is not a sha256 digest")
    path = root / PRODUCTION
    text = path.read_text()
    for name in IMAGES:
        entry = re.compile(rf"^(\s*- )\{{name: novahouse/{name},.*\}}$", re.MULTILINE)
        if not entry.search(text):
            raise ValueError(f"{PRODUCTION} has no images: entry for novahouse/{name}")
        pinned = f"{{name: novahouse/{name}, newName: {registry}/novahouse/{name}, digest: {digests[name]}}}"
        text = entry.sub(r"\g<1>" + pinned.replace("\\", r"\\"), text)
    path.write_text(text)
    return path


def pushed_digest(registry: str, name: str, tag: str) -> str:
    """Push registry/novahouse/name:tag and return the digest the registry gave it."""
    image = f"{registry}/novahouse/{name}:{tag}"
    subprocess.run(["docker", "tag", f"novahouse/{name}:{tag}", image], check=True, timeout=60)
    subprocess.run(["docker", "push", image], check=True, timeout=1800)
    out = subprocess.run(["docker", "inspect", "--format", "{{join .RepoDigests \"\\n\"}}", image], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    for line in out.splitlines():
        if line.startswith(f"{registry}/novahouse/{name}@"):
            return line.split("@", 1)[1]
    raise RuntimeError(f"the registry gave {image} no digest")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tag", help="print this build's image tag")
    kind = sub.add_parser("kind", help="write overlays/kind-build naming the tag")
    kind.add_argument("--tag", required=True)
    pin = sub.add_parser("pin", help="push the images and pin overlays/production to their digests")
    pin.add_argument("--registry", required=True)
    pin.add_argument("--tag", required=True)
    pin.add_argument("--digest", action="append", default=[], metavar="NAME=sha256:...",
                     help="use this digest instead of pushing (an image pushed by CI)")
    for each in (kind, pin):
        each.add_argument("--root", type=Path, default=REPO)
    args = parser.parse_args(argv)
    if args.command == "tag":
        print(build_tag())
    elif args.command == "kind":
        print(f"wrote {kind_overlay(args.root, args.tag)}")
    else:
        given = dict(item.split("=", 1) for item in args.digest)
        digests = {name: given.get(name) or pushed_digest(args.registry, name, args.tag) for name in IMAGES}
        print(f"pinned {pin_production(args.root, args.registry.rstrip('/'), digests)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
