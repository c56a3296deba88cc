# codex-k8s-operator. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
DEVENV_ARGS ?=

.PHONY: help deps host-leftovers venv system-deps node-host codex mcp-clients control-plane helm test test-unit test-integration generate crds lint dev bench clean
.PHONY: kind-up kind-load kind-certs deploy e2e-kind undeploy kind-down

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

deps: host-leftovers venv system-deps control-plane helm node-host codex mcp-clients images ## everything the tests and `make dev` need

host-leftovers: ## remove what a killed test run left on the host that could reach beyond it (the stand-in internet's veth)
	@bash hack/node/remove-leftovers.sh

venv: $(VENV)/.installed ## Python virtual environment with the project and dev tools

$(VENV)/.installed: pyproject.toml devenv/pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]' -e ./devenv
	@touch $@

system-deps: ## Debian packages: redis-server, openssl
	@if ! command -v redis-server >/dev/null || ! command -v openssl >/dev/null; then \
	  echo "installing redis-server and openssl from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server openssl >/dev/null; \
	fi

node-host: ## host setup for the test node: containerd, runc, CNI bridge, kubelet, kube-proxy, CoreDNS, the NetworkPolicy engine (idempotent)
	@bash hack/node/setup-host.sh
	@EXTRA_K8S_BINARIES="kubelet kube-proxy" bash hack/build-control-plane.sh >/dev/null
	@bash hack/build-coredns.sh >/dev/null
	@bash hack/build-netpol.sh >/dev/null

codex: ## install the pinned Codex CLI from npm (cached outside the checkout)
	@bash hack/install-codex.sh >/dev/null

mcp-clients: ## install the pinned external MCP clients (Node 22, MCP Inspector, conformance suite) from npm, cached
	@bash hack/install-mcp-clients.sh >/dev/null

control-plane: ## build (once, cached) etcd, kube-apiserver, controller-manager, scheduler, kubectl
	@bash hack/build-control-plane.sh >/dev/null

helm: ## build (once, cached) the pinned helm from the Go module proxy (hack/build-helm.sh)
	@bash hack/build-helm.sh >/dev/null

test: deps ## the whole test suite (unit + integration on a real control plane and Redis)
	$(PY) -m pytest --durations=10 $(PYTEST_ARGS)

test-unit: venv helm ## unit tests only: seconds, no control plane (helm renders the chart)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: deps ## integration tests only
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

generate: venv ## regenerate every file made from the Python models: CRDs, admission policies, the chart's config schema, the docs' generated tables (codex_devenv.generate)
	$(PY) -m codex_devenv.generate

crds: generate ## the old name of `make generate`

lint: venv ## ruff, formatting, mypy, and stale generated files
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy api operator/codex_operator runner gateway proxy/codex_proxy devenv kubectl/codex_kubectl
	$(PY) -m codex_devenv.generate --check
	@"$$(bash hack/build-helm.sh)" lint --strict charts/codex-k8s-operator

dev: deps ## run the system locally until Ctrl-C
	$(VENV)/bin/codex-devenv up $(DEVENV_ARGS)

bench: deps ## the benchmarks on a real control plane and node: operator (P1, P2), turn end to end incl. the gateway (P3), gateway reads (P4)
	@set -e; for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

clean: ## remove the venv and local state (the binary cache stays)
	rm -rf $(VENV) .devenv .pytest_cache .mypy_cache .ruff_cache

.PHONY: images
images: ## container images (runner, operator, gateway; redis and fake-model for in-cluster tests) as OCI archives in the cache, no registry (hack/build-images.sh)
	@bash hack/build-images.sh

# -- kind: the chart on a local kind cluster -----------------------------------------------
# Needs kind, kubectl and Docker (or podman: KIND_EXPERIMENTAL_PROVIDER=podman)
# on your machine; the CI machines have none, so tests/integration/test_chart.py
# renders and server-side applies everything these targets apply against the
# test API server instead. `make deploy` installs with helm; the same install
# as kustomize is `make kind-certs && kubectl apply --server-side -k manifests/overlays/kind`.
KIND ?= kind
KIND_CLUSTER ?= codex
KIND_CONTEXT := kind-$(KIND_CLUSTER)
KUBECTL ?= kubectl
KUBECTL_KIND = $(KUBECTL) --context $(KIND_CONTEXT)
HELM_BIN = "$$(bash hack/build-helm.sh)"
CHART := charts/codex-k8s-operator
KIND_STATE := .devenv/kind
KIND_TOKENS := $(KIND_STATE)/tokens.yaml
# Extra helm flags for `make deploy`, e.g. DEPLOY_VALUES="-f my-values.yaml".
DEPLOY_VALUES ?=

kind-up: ## create the kind cluster (kind-config.yaml: the gateway's NodePort 30080 on 127.0.0.1:8080)
	@if $(KIND) get clusters | grep -qx '$(KIND_CLUSTER)'; then echo "kind cluster $(KIND_CLUSTER) exists"; \
	else $(KIND) create cluster --name $(KIND_CLUSTER) --config kind-config.yaml --wait 120s; fi

kind-load: ## build the images (runner, operator, gateway, redis; fake-model for e2e-kind) with hack/build-images.sh and load them into kind, no registry
	@set -euo pipefail; IMAGES="runner operator gateway redis fake-model" bash hack/build-images.sh | \
	while IFS=$$'\t' read -r name archive; do \
	  echo "kind load $$name <- $$archive"; $(KIND) load image-archive "$$archive" --name $(KIND_CLUSTER); \
	done

kind-certs: ## the webhook certificate, Redis password, model proxy and warm runners' signing keys of the kustomize kind overlay (manifests/overlays/kind/{webhook-tls,redis-auth,model-proxy,agent-key}, not committed)
	@bash hack/webhook-cert.sh
	@bash hack/redis-password.sh
	@bash hack/redis-password.sh manifests/overlays/kind/model-proxy/signing-key
	@bash hack/agent-key.sh

deploy: helm ## install on kind with helm (values-kind.yaml), plus the model key (env CODEX_MODEL_API_KEY) and a gateway token
	$(KUBECTL_KIND) apply --server-side --force-conflicts -f $(CHART)/crds/
	$(HELM_BIN) upgrade --install codex $(CHART) --kube-context $(KIND_CONTEXT) --namespace default \
	  -f $(CHART)/values-kind.yaml $(DEPLOY_VALUES)
	@mkdir -p $(KIND_STATE); if [[ ! -s $(KIND_TOKENS) ]]; then \
	  (umask 077; printf '%s: alice\n' "$$(openssl rand -hex 24)" > $(KIND_TOKENS)); fi
	@$(KUBECTL_KIND) -n codex-system create secret generic codex-gateway-tokens \
	  --from-file=tokens.yaml=$(KIND_TOKENS) --dry-run=client -o yaml | $(KUBECTL_KIND) apply -f -
	@$(KUBECTL_KIND) -n codex-system create secret generic codex-model-api-key \
	  --from-literal=api-key="$${CODEX_MODEL_API_KEY:-not-a-real-key}" --dry-run=client -o yaml | $(KUBECTL_KIND) apply -f -
	@for d in codex-redis codex-model-proxy codex-operator codex-gateway; do \
	  $(KUBECTL_KIND) -n codex-system rollout status deployment/$$d --timeout=180s || exit 1; done
	@echo "gateway: http://127.0.0.1:8080/mcp, bearer token in $(KIND_TOKENS)"

e2e-kind: kind-up kind-load ## smoke on kind: the example session through the gateway, answered by an in-cluster fake model, and a full-access one approved by another user
	$(MAKE) deploy DEPLOY_VALUES="-f hack/kind/e2e-values.yaml"
	$(KUBECTL_KIND) apply --server-side -f hack/kind/fake-model.yaml
	$(KUBECTL_KIND) -n codex-system rollout status deployment/codex-fake-model --timeout=120s
	$(PY) hack/kind/smoke.py --token "$$(cut -d: -f1 $(KIND_TOKENS))" \
	  --requester-kubectl "$(KUBECTL_KIND) --as alice --as-group system:authenticated" \
	  --approver-kubectl "$(KUBECTL_KIND) --as bob --as-group codex-approvers --as-group system:authenticated"

undeploy: ## remove the install from kind (the release, with its namespaces and Secrets; the CRDs stay)
	-$(KUBECTL_KIND) delete --ignore-not-found -f hack/kind/fake-model.yaml
	$(HELM_BIN) uninstall codex --kube-context $(KIND_CONTEXT) --namespace default --wait --ignore-not-found

kind-down: ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)
