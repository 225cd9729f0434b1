# NovaHouse chatbot platform. `make up` runs the whole stack locally; `make test` runs the test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROTOS := $(shell find protos -name '*.proto')

.PHONY: all venv protos up test lint browser prometheus dashboards bench eval k8s-check kind-up images deploy kind-down clean

all: protos

venv: $(VENV)/.installed

# The .pth file puts the repository root and the generated code on the venv's import path.
$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/python -c "import sysconfig,pathlib; pathlib.Path(sysconfig.get_paths()['purelib'],'novahouse.pth').write_text('$(CURDIR)\n$(CURDIR)/gen\n')"
	touch $@

# Generated code and the Envoy descriptor set; never edited by hand.
protos: gen/.stamp

gen/.stamp: $(PROTOS) $(VENV)/.installed
	rm -rf gen && mkdir -p gen
	$(BIN)/python -m services.runtime.protoc protos gen
	touch $@

up: protos
	$(BIN)/python -m deploy.local.stack

# The linter and the type checker (configured in pyproject.toml); `make test` runs them before the suite, so a
# regression in any of the three fails CI.
lint: protos
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m services.runtime.migration_lint

test: lint browser prometheus
	$(BIN)/python -m pytest

# The widget's browser tests (tests/gateway/test_widget_*.py): Debian's chromium, driven by Playwright (which never
# downloads a browser of its own), and axe-core from its lock file. Installs chromium where it is missing (as root).
browser: /usr/bin/chromium tests/gateway/node_modules/.installed

/usr/bin/chromium:
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium

tests/gateway/node_modules/.installed: tests/gateway/package.json tests/gateway/package-lock.json
	cd tests/gateway && npm ci --no-audit --no-fund
	touch $@

# Debian's Prometheus (installed where missing, as root): promtool runs the alert rules' unit tests and checks each
# service's metrics, and tests/monitoring runs prometheus itself against a local stack, on a free port. The package
# starts its own daemon on :9090 (systemd's unit, or /etc/init.d's script where systemd does not run, as in a
# container): it is stopped and disabled, by its unit or its script's pid file, so nothing else is touched.
prometheus: /usr/bin/promtool

/usr/bin/promtool:
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
	-systemctl disable prometheus 2>/dev/null
	if [ -d /run/systemd/system ]; then systemctl stop prometheus; \
	else update-rc.d prometheus disable >/dev/null 2>&1; /etc/init.d/prometheus stop || true; fi

# Each dashboard's panels rendered from a real Prometheus that scraped a local stack under traffic, as PNGs in
# data/dashboards/ (Grafana itself is not installable here; matplotlib draws them).
dashboards: protos prometheus
	$(BIN)/python -m deploy.monitoring.render

# bench/bench_versus.py drives the platform and a reference monolith with Debian's wrk (installed where missing, as
# root); the monolith's own dependencies are in bench/requirements.txt, never the services'.
bench: protos /usr/bin/wrk $(VENV)/.bench-installed
	$(BIN)/python -m bench

/usr/bin/wrk:
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk

$(VENV)/.bench-installed: bench/requirements.txt $(VENV)/.installed
	$(BIN)/pip install -q -r bench/requirements.txt
	touch $@

# How well chat understands visitors: topic and language accuracy and topic confusions on the labelled corpus in
# tests/chat/eval (dev and test parts). Printed, not asserted.
eval: protos
	$(BIN)/python -m bench.eval

clean:
	rm -rf gen data .pytest_cache

# Record a deliberate contract change (the breaking-change test compares protos/ with this baseline).
proto-baseline: protos
	$(BIN)/python -m testsupport.proto_compat

# --- Kubernetes (deploy/k8s, see its README). No cluster can run on the CI machine: `make test` runs k8s-check's
# checks (tests/k8s); kind-up, images, deploy and kind-down need Docker and kind on the operator's machine.
KIND_CLUSTER ?= novahouse
KIND_OVERLAY := deploy/k8s/overlays/kind
# Each build its own tag: the commit, and -dirty-<hash of the changes> when the tree has any (deploy/k8s/images.py).
IMAGE_TAG    ?= $(shell $(BIN)/python -m deploy.k8s.images tag)
BASE_IMAGE   ?=
# The Dockerfile's SERVICE values; each builds novahouse/<name>.
IMAGES       := chat consent notifier ratelimit gateway
KUBECTL      := $(BIN)/kubectl -n novahouse

k8s-check: protos
	$(BIN)/python -m deploy.k8s.check

kind-up:
	kind create cluster --name $(KIND_CLUSTER) --config $(KIND_OVERLAY)/kind-cluster.yaml

# One Dockerfile builds every image: SERVICE picks the code, the dependencies and the command.
images:
	for name in $(IMAGES); do \
	  docker build --build-arg SERVICE=$$name $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) -t novahouse/$$name:$(IMAGE_TAG) . \
	  && kind load docker-image --name $(KIND_CLUSTER) novahouse/$$name:$(IMAGE_TAG) || exit 1; done
	$(BIN)/python -m deploy.k8s.images kind --tag $(IMAGE_TAG)

# Push every image to REGISTRY and pin overlays/production to the digests the registry gave them; commit the
# result (the release is the digests it names). CI that pushed already: DIGESTS="--digest chat=sha256:... ...".
pin-images:
	test -n "$(REGISTRY)" || { echo "REGISTRY (e.g. registry.example.com/novahouse-team) is required"; exit 1; }
	$(BIN)/python -m deploy.k8s.images pin --registry $(REGISTRY) --tag $(IMAGE_TAG) $(DIGESTS)

$(KIND_OVERLAY)/secrets.env: | $(VENV)/.installed
	$(BIN)/python -m deploy.k8s.kind_secrets --output $@

deploy: $(KIND_OVERLAY)/secrets.env $(VENV)/.installed
	$(BIN)/kubectl create namespace novahouse --dry-run=client -o yaml | $(BIN)/kubectl apply -f -
	$(KUBECTL) create secret generic novahouse-secrets --from-env-file=$(KIND_OVERLAY)/secrets.env --dry-run=client -o yaml | $(KUBECTL) apply -f -
	$(KUBECTL) delete job -l app.kubernetes.io/component=migration --ignore-not-found
	test -f $(KIND_OVERLAY)-build/kustomization.yaml || { echo "run make images first"; exit 1; }
	$(BIN)/kubectl apply -k $(KIND_OVERLAY)-build
	$(KUBECTL) wait --for=condition=complete job -l app.kubernetes.io/component=migration --timeout=300s
	$(KUBECTL) rollout status deployment --timeout=300s

# New database passwords in secrets.env and, at once, inside the kind PostgreSQL, which keeps them on its volume
# (deploy/k8s/rotate_secrets.py, through a port-forward); then the Secret is applied and the Deployments restart onto
# it (open connections keep working meanwhile). The consent keys are kept: they must outlive every redeploy.
rotate-secrets: $(KIND_OVERLAY)/secrets.env
	$(KUBECTL) port-forward svc/postgres 15432:5432 >/dev/null & pf=$$!; trap "kill $$pf" EXIT; \
	  $(BIN)/python -c "import socket,time;[time.sleep(0.2) for _ in range(100) if socket.socket().connect_ex(('127.0.0.1',15432))]"; \
	  $(BIN)/python -m deploy.k8s.rotate_secrets --env-file $< --port 15432
	$(KUBECTL) create secret generic novahouse-secrets --from-env-file=$< --dry-run=client -o yaml | $(KUBECTL) apply -f -
	$(KUBECTL) rollout restart deployment
	$(KUBECTL) rollout status deployment --timeout=300s

kind-down:
	kind delete cluster --name $(KIND_CLUSTER)
