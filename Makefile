# NovaHouse chatbot platform. `make up` runs the whole stack locally; `make test` runs the test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROTOS := $(shell find protos -name '*.proto')

.PHONY: all venv protos up test bench k8s-check kind-up images deploy kind-down clean

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

test: protos
	$(BIN)/python -m pytest

bench: protos
	$(BIN)/python -m bench

clean:
	rm -rf gen data .pytest_cache

# Record a deliberate contract change (the breaking-change test compares protos/ with this baseline).
proto-baseline: protos
	$(BIN)/python -m tests.support.proto_compat
