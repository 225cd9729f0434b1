"""The rate-limit policy file: the shipped one loads, bad files fail at start with the line named."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from gateway.ratelimit.policy import Policy, PolicyError, load_policy

SHIPPED = "gateway/ratelimit/policy.yaml"


def write(tmp_path, text: str):
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def limit_text(policy: Policy, key: str, address: str = "x") -> str:
    """The limit the policy applies to one visitor's requests of one kind, as the limits library writes it."""
    limit = policy.limit_for([("generic_key", key), ("remote_address", address)])
    assert limit is not None, f"no limit for {key}"
    return str(limit.item)


def test_shipped_policy_has_the_seed_limits():
    policy = load_policy(SHIPPED)
    assert limit_text(policy, "chat", "203.0.113.9") == "30 per 1 minute"
    assert limit_text(policy, "api_minute") == "50 per 1 minute"
    assert limit_text(policy, "api_hour") == "200 per 1 hour"
    assert policy.limit_for([("generic_key", "unknown"), ("remote_address", "x")]) is None


def test_environment_overrides_use_the_seed_syntax(monkeypatch):
    monkeypatch.setenv("CHAT_RATE_LIMIT", "5 per second")
    monkeypatch.setenv("API_RATE_LIMIT_HOUR", "1000/hour")
    policy = load_policy(SHIPPED)
    assert limit_text(policy, "chat") == "5 per 1 second"
    assert limit_text(policy, "api_hour") == "1000 per 1 hour"


def test_bad_override_names_the_variable(monkeypatch):
    monkeypatch.setenv("CHAT_RATE_LIMIT", "thirty a minute")
    with pytest.raises(PolicyError, match="CHAT_RATE_LIMIT"):
        load_policy(SHIPPED)


@pytest.mark.parametrize(
    "body, line, words",
    [
        ("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 3}\n", 4, "unit"),
        ("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, requests_per_unit: -3}\n", 4,
         "requests_per_unit"),
        ("domain: d\ndescriptors:\n  - key: k\n    rate_limt: {unit: minute, requests_per_unit: 3}\n", 3,
         "unknown descriptor field"),
        ("domain: d\ndescriptors:\n  - value: v\n    rate_limit: {unit: minute, requests_per_unit: 3}\n", 3,
         "needs a key"),
        ("domain: d\ndescriptors:\n  - key: k\n", 3, "neither a rate_limit"),
        ("domain: d\ndescriptors:\n  - key: k\n    value: a\n    rate_limit: {unit: minute, requests_per_unit: 1}\n"
         "  - key: k\n    value: a\n    rate_limit: {unit: minute, requests_per_unit: 2}\n", 6, "duplicate"),
        ("descriptors: []\n", 1, "needs a domain"),
        ("domain: d\nstrategy: fixed-window\ndescriptors: []\n", 2, "strategy"),
        ("domain: d\ndescriptors: [\n", 3, "not valid YAML"),
    ],
)
def test_bad_policy_names_the_line(tmp_path, body, line, words):
    path = write(tmp_path, body)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert f"{path}:{line}" in str(err.value)
    assert words in str(err.value)


def test_service_refuses_to_start_on_a_bad_policy(tmp_path):
    path = write(tmp_path, "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute}\n")
    result = subprocess.run([sys.executable, "-m", "gateway.ratelimit.server", "--policy", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"{path}:4" in result.stderr and "requests_per_unit" in result.stderr
