# codex-k8s-operator. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
DEVENV_ARGS ?=

.PHONY: help deps venv system-deps node-host codex control-plane test test-unit test-integration crds lint dev clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

deps: venv system-deps control-plane node-host codex images ## everything the tests and `make dev` need

venv: $(VENV)/.installed ## Python virtual environment with the project and dev tools

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

system-deps: ## Debian packages: redis-server, openssl
	@if ! command -v redis-server >/dev/null || ! command -v openssl >/dev/null; then \
	  echo "installing redis-server and openssl from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server openssl >/dev/null; \
	fi

node-host: ## host setup for the test node: containerd, runc, CNI bridge, kubelet (idempotent)
	@bash hack/node/setup-host.sh
	@EXTRA_K8S_BINARIES=kubelet bash hack/build-control-plane.sh >/dev/null

codex: ## install the pinned Codex CLI from npm (cached outside the checkout)
	@bash hack/install-codex.sh >/dev/null

control-plane: ## build (once, cached) etcd, kube-apiserver, controller-manager, scheduler, kubectl
	@bash hack/build-control-plane.sh >/dev/null

test: deps ## the whole test suite (unit + integration on a real control plane and Redis)
	$(PY) -m pytest --durations=10 $(PYTEST_ARGS)

test-unit: venv ## unit tests only: seconds, no control plane
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: deps ## integration tests only
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

crds: venv ## regenerate the CRDs and admission policies from the Python models
	$(PY) -m codex_api.crdgen
	$(PY) -m codex_api.admission manifests/base/admission.yaml

lint: venv ## ruff, formatting, mypy, and stale generated files
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy api operator/codex_operator runner gateway devenv
	$(PY) -m codex_api.crdgen --check
	$(PY) -m codex_api.admission --check manifests/base/admission.yaml

dev: deps ## run the system locally until Ctrl-C
	$(VENV)/bin/codex-devenv up $(DEVENV_ARGS)

clean: ## remove the venv and local state (the binary cache stays)
	rm -rf $(VENV) .devenv .pytest_cache .mypy_cache .ruff_cache

.PHONY: images
images: ## container images (runner, operator) as OCI archives in the cache, no registry (hack/build-images.sh)
	@bash hack/build-images.sh
