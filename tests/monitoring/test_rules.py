"""The alert rules (deploy/monitoring/rules, the one source) are unit-tested by promtool with synthetic series, every
alert both firing and staying silent; the Kubernetes objects generated from them say the same; every alert names a
runbook that exists and names it back."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from deploy.monitoring import dashboards, generate
from testsupport.prometheus import PROMTOOL

TESTS = generate.HERE / "tests"
RUNBOOKS = generate.ROOT / "docs" / "runbooks"


def alerts() -> dict[str, set[str]]:
    """Each alert's name and the runbooks its rules name."""
    named: dict[str, set[str]] = {}
    for group in generate.rule_groups():
        for rule in group["rules"]:
            if "alert" in rule:
                named.setdefault(rule["alert"], set()).add(rule["annotations"]["runbook_url"])
    return named


def test_promtool_runs_every_rule_unit_test_and_they_pass():
    files = sorted(str(path) for path in TESTS.glob("*.test.yml"))
    result = subprocess.run([PROMTOOL, "test", "rules", *files], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files)


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_stays_silent():
    fires: set[str] = set()
    silent: set[str] = set()
    for path in TESTS.glob("*.test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    assert set(alerts()) - fires == set(), "never shown to fire"
    assert set(alerts()) - silent == set(), "never shown to stay silent"


def test_each_alert_names_its_runbook_and_each_runbook_names_its_alerts():
    for alert, runbooks in alerts().items():
        for url in runbooks:
            path = generate.ROOT / url
            assert path.is_file(), f"{alert}: no runbook at {url}"
            assert re.search(rf"\b{alert}\b", path.read_text()), f"{url} does not name {alert}"
    readme = (RUNBOOKS / "README.md").read_text()
    for url in {url for runbooks in alerts().values() for url in runbooks}:
        assert Path(url).name in readme, f"docs/runbooks/README.md does not list {url}"


def test_the_kubernetes_objects_hold_exactly_the_rule_files_and_dashboards():
    assert generate.stale() == [], "run python -m deploy.monitoring.generate"
    configmap = yaml.safe_load((generate.K8S_BASE / "monitoring-rules.yaml").read_text())
    assert configmap["data"] == {path.name: path.read_text() for path in generate.RULES.glob("*.yml")}
    operator = yaml.safe_load((generate.GENERATED / "prometheusrule.yaml").read_text())
    sources = [group for path in sorted(generate.RULES.glob("*.yml"))
               for group in yaml.safe_load(path.read_text())["groups"]]
    assert operator["kind"] == "PrometheusRule" and operator["spec"]["groups"] == sources
    boards = yaml.safe_load((generate.K8S_BASE / "monitoring-dashboards.yaml").read_text())
    assert boards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {name: json.loads(text) for name, text in boards["data"].items()} == {
        f"{spec.uid}.json": json.loads(dashboards.to_json(spec)) for spec in dashboards.DASHBOARDS}
    kustomization = yaml.safe_load((generate.K8S_BASE / "kustomization.yaml").read_text())
    assert {"monitoring-rules.yaml", "monitoring-dashboards.yaml"} <= set(kustomization["resources"])


def test_a_changed_rule_file_makes_the_generated_objects_stale(tmp_path, monkeypatch):
    """The equality check can fail: a rule edited without regenerating is caught."""
    rules = tmp_path / "rules"
    rules.mkdir()
    for path in generate.RULES.glob("*.yml"):
        (rules / path.name).write_text(path.read_text().replace("> 0.05", "> 0.5"))
    monkeypatch.setattr(generate, "RULES", rules)
    assert generate.K8S_BASE / "monitoring-rules.yaml" in generate.stale()
    assert generate.GENERATED / "prometheusrule.yaml" in generate.stale()
