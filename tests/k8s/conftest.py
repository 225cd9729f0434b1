"""A copy of the repository for the tests that break one rule of the offline checks to see the check catch it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of what the check reads: the manifests, the Dockerfile and the code whose env they set."""
    root = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "secrets.env")
    for folder in ("deploy", "services", "gateway"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    shutil.copy2(REPO / "Dockerfile", root / "Dockerfile")
    return root
