"""The Grafana dashboards, as code: built with Grafana's own schema (grafana-foundation-sdk), written as JSON by
`python -m deploy.monitoring.generate` and provisioned by the grafana-dashboards ConfigMap.

Every query reads what the services and Envoy export (tests/monitoring checks each one against a Prometheus that
scraped a running stack). The datasource is the variable ${datasource}, so the dashboards fit any Grafana.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
UNSUBSCRIBE = '/novahouse.consent.v1.Consent/(Unsubscribe|OneClickUnsubscribe)'
ALL = "sum by (route) (rate(envoy_gateway_responses_total[5m]))"
FIVE_XX = 'sum by (route) (rate(envoy_gateway_responses_total{code=~"5.."}[5m]))'  # `or ALL * 0`: 0, not "no data"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    unit: str  # Grafana's unit id: reqps, percentunit, ms, s, short, none
    queries: tuple[Query, ...]
    description: str = ""


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    panels: tuple[PanelSpec, ...]


def _q(expr: str, legend: str) -> Query:
    return Query(expr, legend)


GATEWAY = DashboardSpec("novahouse-gateway", "NovaHouse: gateway", "Requests, errors, 429s and latency by public "
                        "route, as Envoy answered them (its own refusals included)", (
    PanelSpec("Requests by route", "reqps", (
        _q(ALL, "{{route}}"),)),
    PanelSpec("5xx share by route (alert: 5 %)", "percentunit", (
        _q(f"({FIVE_XX} or {ALL} * 0) / {ALL}", "{{route}}"),),
        "GatewayRouteErrorRatioHigh, UnsubscribeErrorRatioHigh"),
    PanelSpec("429 by route", "reqps", (
        _q('sum by (route) (rate(envoy_gateway_responses_total{code="429"}[5m]))', "{{route}}"),),
        "GatewayRouteRateLimitedRatioHigh"),
    PanelSpec("Latency p95 by route", "ms", (
        _q("histogram_quantile(0.95, sum by (route, le) "
           "(rate(envoy_gateway_request_duration_milliseconds_bucket[5m])))", "{{route}}"),)),
    PanelSpec("Responses by status code", "reqps", (
        _q("sum by (code) (rate(envoy_gateway_responses_total[5m]))", "{{code}}"),)),
    PanelSpec("Rate-limit decisions", "reqps", (
        _q("sum by (result) (rate(ratelimit_decisions_total[5m]))", "limiter {{result}}"),
        _q("sum by (envoy_cluster_name) (rate(envoy_cluster_ratelimit_ok[5m]))", "Envoy ok ({{envoy_cluster_name}})")),
        "RateLimiterErrors, RateLimiterFailingOpen"),
    PanelSpec("Services serving (1) or not (0), their dependencies", "none", (
        _q("min by (service) (novahouse_serving)", "{{service}}"),
        _q('min by (service) (novahouse_dependency_up{dependency="database"})', "{{service}} database"),
        _q("max(ratelimit_counting_in_memory)", "limiter counting in memory (Redis gone: 1)")),
        "ServiceNotServing, DatabaseUnreachable, RedisUnreachable"),
))

FUNNEL = DashboardSpec("novahouse-funnel", "NovaHouse: conversation funnel", "From a first message to a lead in "
                       "sales' hands, and the visitors handed to a person", (
    PanelSpec("Conversations started per hour", "short", (
        _q("sum(increase(chat_conversations_started_total[1h]))", "conversations"),)),
    PanelSpec("Leads per hour", "short", (
        _q("sum by (visitor, completeness) (increase(chat_leads_total[1h]))", "{{visitor}} visitor, {{completeness}}"),
    )),
    PanelSpec("Leads per conversation", "percentunit", (
        _q("sum(increase(chat_leads_total[1h])) / sum(increase(chat_conversations_started_total[1h]))", "leads"),
        _q('sum(increase(chat_leads_total{completeness="partial"}[1h])) / sum(increase(chat_leads_total[1h]))',
           "partial share of leads"))),
    PanelSpec("Handoffs per hour", "short", (
        _q("sum by (outcome, reason) (increase(chat_handoffs_total[1h]))", "{{outcome}} ({{reason}})"),)),
))

DELIVERY = DashboardSpec("novahouse-delivery", "NovaHouse: delivery", "The notifier per destination: sent, "
                         "retried, the dead-letter queue and the breakers", (
    PanelSpec("Delivered per destination", "reqps", (
        _q('sum by (destination) (rate(notifier_attempts_total{outcome="delivered"}[5m]))', "{{destination}}"),)),
    PanelSpec("Retried, refused by the breaker, failed, dead", "reqps", (
        _q('sum by (destination, outcome) (rate(notifier_attempts_total{outcome=~"retry|refused|failed|dead"}[5m]))'
           " > 0", "{{destination}} {{outcome}}"),), "DeliveriesDead, DeliveriesFailedAfterRetries"),
    PanelSpec("Dead-letter queue", "short", (
        _q("max by (status) (notifier_dlq_entries)", "{{status}}"),), "DlqPendingHigh"),
    PanelSpec("Oldest pending delivery", "s", (
        _q("max(notifier_dlq_oldest_pending_age_seconds)", "age"),), "DlqOldestPendingTooOld"),
    PanelSpec("Breaker state (0 closed, 1 half-open, 2 open)", "none", (
        _q("max by (destination) (notifier_breaker_state)", "{{destination}}"),), "BreakerStuckOpen"),
))

CONSENT = DashboardSpec("novahouse-consent", "NovaHouse: consent", "Consent changes, erasures, the ledger's size "
                        "and its verification", (
    PanelSpec("Consent changes and requests by method (public and from chat)", "reqps", (
        _q("sum by (grpc_method) (rate(grpc_server_handled_total"
           '{grpc_method=~"/novahouse.consent.v1.Consent(Internal)?/.*"}[5m]))', "{{grpc_method}}"),)),
    PanelSpec("Unsubscribe answers at the gateway", "reqps", (
        _q(f'sum by (code) (rate(envoy_gateway_responses_total{{route=~"{UNSUBSCRIBE}"}}[5m]))', "{{code}}"),),
        "UnsubscribeErrorRatioHigh"),
    PanelSpec("Erasures", "short", (
        _q("sum by (outcome) (increase(consent_erasure_attempts_total[1h]))", "attempts {{outcome}} per hour"),
        _q("max(consent_pending_erasures)", "pending")), "ErasurePendingTooLong"),
    PanelSpec("Oldest pending erasure", "s", (
        _q("max(consent_oldest_pending_erasure_age_seconds)", "age"),), "ErasurePendingTooLong"),
    PanelSpec("Ledger entries", "short", (
        _q("max(consent_ledger_entries)", "entries"),)),
    PanelSpec("Ledger verification (1 verifies, 0 does not)", "none", (
        _q("min(consent_ledger_verified)", "verified"),), "LedgerVerificationFailed"),
    PanelSpec("Since the ledger last verified", "s", (
        _q("time() - max(consent_ledger_last_verified_timestamp_seconds)", "age"),), "LedgerNotVerifiedRecently"),
))

DASHBOARDS = (GATEWAY, FUNNEL, DELIVERY, CONSENT)


def build(spec: DashboardSpec) -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard(spec.title).uid(spec.uid).description(spec.description).tags(["novahouse"])
        .time("now-6h", "now").refresh("1m").timezone("utc")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    for panel in spec.panels:
        built = (
            timeseries.Panel().title(panel.title).unit(panel.unit).datasource(DATASOURCE).height(8).span(12)
            .description(f"Alerts: {panel.description}" if panel.description else "")
        )
        for ref, query in zip("ABCDEFGH", panel.queries, strict=False):
            built.with_target(prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref))
        board.with_panel(built)
    return board


def to_json(spec: DashboardSpec) -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(build(spec).build()) + "\n"


def panel_queries(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression) of every query in a dashboard's JSON, as Grafana will run them."""
    return [(panel["title"], target["expr"]) for panel in document.get("panels", [])
            for target in panel.get("targets", [])]
