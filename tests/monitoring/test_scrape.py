"""The stack under visitors' traffic, scraped by a real Prometheus (Debian's): every dashboard query names only
metrics the services and Envoy export and runs; the rule files load and evaluate without error; each service's
scrape passes `promtool check metrics` and carries no personal data."""
from __future__ import annotations

import json
import subprocess

import promql_parser
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from deploy.monitoring import dashboards, generate
from testsupport.monitoring import SERVICES, MonitoredStack, monitored_stack, traffic
from testsupport.prometheus import PROMTOOL


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with monitored_stack(tmp_path_factory.mktemp("monitoring")) as running:
        traffic(running)
        yield running


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name or next(m.value for m in node.matchers.matchers if m.name == "__name__"))
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def dashboard_queries() -> list[tuple[str, str, str]]:
    return [(path.stem, title, expr) for path in sorted((generate.GENERATED / "dashboards").glob("*.json"))
            for title, expr in dashboards.panel_queries(json.loads(path.read_text()))]


def test_metric_names_are_read_from_the_query_syntax():
    assert metric_names('histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="y"}[5m]))) / on() count(b)'
                        " - time()") == {"a_bucket", "b"}


def test_every_dashboard_query_names_metrics_the_stack_exports_and_runs(stack: MonitoredStack):
    queries = dashboard_queries()
    assert {board for board, _, _ in queries} == {spec.uid for spec in dashboards.DASHBOARDS}
    missing, answered = [], 0
    for board, title, expr in queries:
        for name in sorted(metric_names(expr)):
            if stack.prometheus.series_count(name) == 0:
                missing.append(f"{board} / {title}: {name}")
        answered += bool(stack.prometheus.query(expr))  # raises on a query Prometheus refuses
    assert missing == [], "dashboard queries name metrics nobody exports"
    assert answered >= len(queries) * 3 // 4, "most panels have data after the traffic"


def test_a_query_naming_a_metric_nobody_exports_is_found(stack: MonitoredStack):
    assert stack.prometheus.series_count("chat_conversations_begun_total") == 0
    assert stack.prometheus.series_count("chat_conversations_started_total") == 1


def test_the_traffic_shows_in_the_numbers_the_runbooks_and_dashboards_read(stack: MonitoredStack):
    prometheus = stack.prometheus
    value = lambda expr: sum(float(s["value"][1]) for s in prometheus.query(expr))  # noqa: E731
    assert value('sum(envoy_gateway_responses_total{route="/novahouse.chat.v1.Chat/SendMessage",code="429"})') > 0
    assert value('sum(envoy_gateway_responses_total{route="/novahouse.consent.v1.Consent/Unsubscribe",code="200"})'
                 ) >= 9
    assert value('sum(chat_leads_total{completeness="complete"})') >= 6
    assert value('sum(chat_leads_total{completeness="partial"})') >= 6
    assert value("sum(chat_conversations_started_total)") >= 15
    assert value('sum(chat_handoffs_total{outcome="callback"})') >= 3
    assert value('sum(notifier_attempts_total{destination="slack",outcome="delivered"})') > 0
    assert value('sum(notifier_attempts_total{destination="monday",outcome=~"retry|failed"})') > 0
    assert value("min(novahouse_serving)") == 1 and value("consent_ledger_verified") == 1


def test_the_rule_files_load_and_every_rule_evaluates_without_error(stack: MonitoredStack):
    groups = stack.prometheus.api("rules")["groups"]
    loaded = {(group["name"], rule["name"]) for group in groups for rule in group["rules"]}
    expected = {(group["name"], rule["alert"]) for group in generate.rule_groups() for rule in group["rules"]}
    assert loaded == expected
    stack.prometheus.wait_for_scrapes(stack.prometheus.scrapes_of_every_target() + 2)  # one evaluation at least
    errors = [(rule["name"], rule.get("lastError")) for group in stack.prometheus.api("rules")["groups"]
              for rule in group["rules"] if rule.get("health") != "ok"]
    assert errors == []


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_scrape_follows_the_naming_conventions_and_holds_no_personal_data(stack, service):
    text = requests.get(f"http://{stack.metrics[service]}/metrics", timeout=10).text
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    values = {value for family in text_string_to_metric_families(text) for sample in family.samples
              for value in sample.labels.values()}
    assert [v for v in values if "@" in v or any(p in v for p in stack.personal)] == []


def test_envoy_scrape_holds_no_personal_data_and_its_route_label_is_bounded(stack: MonitoredStack):
    text = requests.get(f"http://{stack.metrics['envoy']}/metrics", timeout=10).text
    assert not any(p in text for p in stack.personal) and "@" not in text
    routes = {sample.labels["route"] for family in text_string_to_metric_families(text)
              if family.name == "envoy_gateway_responses" for sample in family.samples}
    assert routes and all(r == "other" or r.startswith("/novahouse.") for r in routes), routes


def test_promtool_check_metrics_refuses_a_scrape_that_breaks_the_conventions():
    bad = "# HELP leads Leads\n# TYPE leads counter\nleads 1\n# HELP wait_ms Wait\n# TYPE wait_ms gauge\nwait_ms 3\n"
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=bad, capture_output=True, text=True, timeout=60)
    assert check.returncode != 0 and "_total" in check.stdout + check.stderr
