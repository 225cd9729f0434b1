#!/usr/bin/env bash
# Manual proof where no cluster can run: start every image as the cluster runs it (non-root UID 10001, read-only
# root with a /tmp tmpfs, no capabilities, no privilege escalation) with --network host against the PostgreSQL and
# Redis on 127.0.0.1, run the migration Jobs' command in each image first, and show every server SERVING, Envoy
# ready and a chat reply through the gateway container. Needs the images (`make images` or docker build) and a
# running Docker engine; cleans up its containers, schemas and Redis keys.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
PG=postgresql://postgres@127.0.0.1:5432/test
RUN="docker run --network host --read-only --tmpfs /tmp:rw,size=256m,uid=10001,gid=10001,mode=1777 --cap-drop ALL --security-opt no-new-privileges --user 10001:10001"
SUFFIX=dkr$RANDOM
KEYS=$($PY -c "from deploy.k8s.kind_secrets import generated_values as g; v=g(); print(v['CONSENT_HMAC_KEY'], v['CONSENT_KEY_ENCRYPTION_KEY'])")
HMAC=${KEYS% *}; KEK=${KEYS#* }
LEDGER_KEYS=$($PY -c "from deploy.k8s.kind_secrets import generated_values as g; v=g(); print(f\"-e CONSENT_CHAIN_KEYS={v['CONSENT_CHAIN_KEYS']} -e CONSENT_CHECKPOINT_SIGNING_KEY={v['CONSENT_CHECKPOINT_SIGNING_KEY']}\")")
declare -A PORT=([chat]=25051 [consent]=25052 [notifier]=25053 [ratelimit]=25054)
ADDRS="-e CHAT_ADDR=127.0.0.1:25051 -e CONSENT_ADDR=127.0.0.1:25052 -e NOTIFIER_ADDR=127.0.0.1:25053 -e RATELIMIT_ADDR=127.0.0.1:25054"
COMMON="-e GRPC_HOST=0.0.0.0 -e DATABASE_URL=$PG -e REDIS_URL=redis://127.0.0.1:6379/0 -e REDIS_KEY_PREFIX=$SUFFIX: -e MIGRATE_ON_START=false $ADDRS"
for svc in chat consent notifier; do
  echo "== migrate $svc (the Job's command, in its image)"
  $RUN --rm $COMMON -e DB_SCHEMA=${SUFFIX}_$svc novahouse/$svc:dev python -m services.$svc.manage migrate || exit 1
done
for svc in consent notifier chat; do
  extra=""; [ $svc = consent ] && extra="-e CONSENT_REQUIRE_SECRETS=true -e CONSENT_HMAC_KEY=$HMAC -e CONSENT_KEY_ENCRYPTION_KEY=$KEK $LEDGER_KEYS -e CONSENT_CHECKPOINT_DIR=/tmp/ledger-checkpoints"
  [ $svc = chat ] && extra="-e SCHEDULER_ENABLED=false"
  $RUN -d --name nh-$svc $COMMON $extra -e DB_SCHEMA=${SUFFIX}_$svc -e GRPC_PORT=${PORT[$svc]} novahouse/$svc:dev >/dev/null
done
$RUN -d --name nh-ratelimit -e GRPC_HOST=0.0.0.0 -e GRPC_PORT=25054 -e REDIS_URL=redis://127.0.0.1:6379/0 -e REDIS_KEY_PREFIX=$SUFFIX: novahouse/ratelimit:dev >/dev/null
$RUN -d --name nh-gateway -e PUBLIC_PORT=28080 -e ADMIN_PORT=28081 -e ENVOY_ADMIN_PORT=29901 -e ENVOY_BASE_ID=28 $ADDRS novahouse/gateway:dev >/dev/null
for svc in chat consent notifier ratelimit; do
  ok=no
  for i in $(seq 1 150); do
    if $PY -c "from deploy.local.processes import grpc_serving; import sys; sys.exit(0 if grpc_serving('127.0.0.1:${PORT[$svc]}') else 1)"; then ok=yes; break; fi
    sleep 0.2
  done
  echo "== $svc container on 127.0.0.1:${PORT[$svc]}: SERVING=$ok; liveness: $(.venv/bin/grpcurl -plaintext -d '{"service":"novahouse.liveness"}' 127.0.0.1:${PORT[$svc]} grpc.health.v1.Health/Check | tr -d ' \n')"
  docker exec nh-$svc id
done
for i in $(seq 1 100); do curl -sf 127.0.0.1:29901/ready >/dev/null && break; sleep 0.2; done
echo "== gateway container: envoy /ready: $(curl -s 127.0.0.1:29901/ready)"
echo "== chat through the gateway container: $(curl -s -X POST 127.0.0.1:28080/api/chatbot/chat -d '{"message":"Dzień dobry"}' | head -c 160)"
echo "== admin listener: $(curl -s 127.0.0.1:28081/api/breakers | head -c 120)"
echo "== write to the read-only root fails: $(docker exec nh-chat sh -c 'touch /app/x 2>&1' )"
for c in nh-gateway nh-ratelimit nh-chat nh-notifier nh-consent; do docker logs $c > /tmp/$c.log 2>&1; docker rm -f $c >/dev/null; done
$PY -c "
import psycopg, redis
with psycopg.connect('$PG', autocommit=True) as conn:
    for s in ('chat', 'consent', 'notifier'): conn.execute('DROP SCHEMA IF EXISTS \"${SUFFIX}_' + s + '\" CASCADE')
client = redis.Redis.from_url('redis://127.0.0.1:6379/0')
keys = list(client.scan_iter(match='${SUFFIX}:*', count=1000))
print('cleaned redis keys:', client.delete(*keys) if keys else 0)"
