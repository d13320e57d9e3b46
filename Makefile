# pipeline-orchestrator — run `make help` for the list of targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# uv from PATH, else a private copy (the version CI pins) installed with pip on first use, so
# that `make demo` and `make test` work on a machine that has only Python.
UV_VERSION := 0.13.9
UV_HOME := $(or $(PIPEORCH_TOOLS_DIR),$(HOME)/.cache/pipeorch-tools)/uv-$(UV_VERSION)
UV ?= $(or $(shell command -v uv 2>/dev/null),$(UV_HOME)/bin/uv)
RUN := $(UV) run --frozen
PROTO_OUT := operator
PROTO_SRC := proto/pipeorch/v1/pipeorch.proto

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV_HOME)/bin/uv:
	@echo "uv not found: installing uv $(UV_VERSION) into $(UV_HOME) (a venv, with pip)"
	@python3 -m venv "$(UV_HOME)"
	@"$(UV_HOME)/bin/pip" install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

.PHONY: sync
sync: | $(filter $(UV_HOME)/bin/uv,$(UV)) ## Install the locked Python environment into .venv (uv sync --frozen), bytecode compiled
	@$(UV) sync --frozen --quiet --compile-bytecode
	@# Every test starts dozens of processes: compiled once here, they do not each compile
	@# their imports again (PYTHONDONTWRITEBYTECODE environments never keep .pyc files).
	@$(UV) run --frozen python -m compileall -q -j 0 operator/pipeorch worker/pipeorch_worker

.PHONY: proto
proto: sync ## Regenerate the gRPC stubs from proto/ (pinned grpcio-tools + mypy-protobuf)
	@$(RUN) python -m grpc_tools.protoc -Iproto \
	  --python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
	  --mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) $(PROTO_SRC)
	@echo "stubs written to $(PROTO_OUT)/pipeorch/v1/"

.PHONY: proto-check
proto-check: sync ## Fail if the committed stubs differ from freshly generated ones
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(RUN) python -m grpc_tools.protoc -Iproto --python_out=$$tmp --grpc_python_out=$$tmp \
	  --mypy_out=$$tmp --mypy_grpc_out=$$tmp $(PROTO_SRC); \
	for f in $$tmp/pipeorch/v1/*; do \
	  diff -u "$(PROTO_OUT)/pipeorch/v1/$$(basename $$f)" "$$f" \
	    || { echo "stubs are stale: run 'make proto'"; exit 1; }; \
	done; echo "proto stubs up to date"

.PHONY: crds
crds: sync ## Regenerate the CRDs (crds/ and the chart's crds/) from the spec models
	@$(RUN) python -m pipeorch.k8s.crds

.PHONY: crds-check
crds-check: sync ## Fail if the committed CRDs differ from freshly generated ones
	@$(RUN) python -m pipeorch.k8s.crds --check

.PHONY: lint
lint: sync proto-check crds-check ## ruff, mypy (strict on the pure core), import-linter contracts, generated files
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports

.PHONY: fmt
fmt: sync ## Format and auto-fix with ruff
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

# The binaries the demo runs (built once into the cache; see `make tools`).
RUNTIME_TOOLS := minio toxiproxy-server
K8S_TOOLS := etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kwokctl
# What the tests also run: a Kubernetes control plane, and helm and kube-score for the chart.
TEST_TOOLS := $(RUNTIME_TOOLS) $(K8S_TOOLS) helm kube-score

.PHONY: demo
demo: sync ## Run the system on this machine (3 regions, 4 workers, MinIO, latency gateway) and the energy pipeline
	@bash tools/build.sh $(RUNTIME_TOOLS)
	$(RUN) pipeorch local up --run examples/energy-pipeline.yaml

.PHONY: test
test: sync ## Run every test tier (unit, integration, k8s) with pytest
	@bash tools/build.sh $(TEST_TOOLS)
	$(RUN) pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: sync ## Run only the unit tier
	$(RUN) pytest -m unit $(PYTEST_ARGS)

.PHONY: test-k8s
test-k8s: sync ## Run only the k8s tier (a real API server with KWOK nodes)
	@bash tools/build.sh $(K8S_TOOLS)
	$(RUN) pytest -m k8s $(PYTEST_ARGS)

.PHONY: k8s-up
k8s-up: sync ## Start a Kubernetes control plane on loopback (KWOK nodes in aws, gcp, azure) with the CRDs
	@bash tools/build.sh $(K8S_TOOLS) >&2
	@$(RUN) python -m pipeorch.local.k8s up

.PHONY: k8s-down
k8s-down: sync ## Stop the cluster of `make k8s-up` (no process or port left)
	@$(RUN) python -m pipeorch.local.k8s down

.PHONY: k8s-demo
k8s-demo: sync ## The cluster of k8s-up, then local up with its kubeconfig: kubectl apply Pipelines, kubectl get tasks.pipeorch.dev
	@bash tools/build.sh $(RUNTIME_TOOLS) $(K8S_TOOLS) >&2
	@$(RUN) python -m pipeorch.local.k8s up >&2
	@"$${PIPEORCH_TOOLS_DIR:-$$HOME/.cache/pipeorch-tools}/bin/current/kubectl" \
		--kubeconfig .pipeorch/k8s/kubeconfig apply -f examples/regions.yaml
	$(RUN) pipeorch local up --kubeconfig .pipeorch/k8s/kubeconfig

.PHONY: bench
bench: sync ## Benchmarks (Raft, pipelines, Celery/Dask/Ray in their own envs, the regions through the gateway): results in bench/results/
	@bash tools/build.sh $(RUNTIME_TOOLS)
	$(RUN) python -m bench.raft_bench
	$(RUN) python -m bench.peers
	$(RUN) python -m bench.pipeline_bench
	$(RUN) python -m bench.local_bench

.PHONY: bench-k8s
bench-k8s: sync ## The operator against a real API server (about a minute; not part of bench): bench/results/k8s.json
	@bash tools/build.sh minio $(K8S_TOOLS) >&2
	$(RUN) python -m bench.k8s_bench

TOOLS ?=

.PHONY: tools
tools: ## Build the pinned test binaries (MinIO, toxiproxy, etcd, Kubernetes, kwok, helm) into the cache outside the clone
	@bash tools/build.sh $(TOOLS)

.PHONY: tools-path
tools-path: ## Print the directory of the built test binaries, to put on PATH
	@echo "$${PIPEORCH_TOOLS_DIR:-$$HOME/.cache/pipeorch-tools}/bin/current"

.PHONY: clean
clean: ## Remove caches and build output
	rm -rf .mypy_cache .ruff_cache .pytest_cache dist build

.PHONY: images
images: ## Build the control-plane and worker images (needs Docker)
	@bash kind/up.sh images

.PHONY: kind-up
kind-up: ## kind cluster (kind/cluster.yaml) + images + helm install (needs Docker and kind)
	@bash kind/up.sh up

.PHONY: kind-down
kind-down: ## Delete the kind cluster
	@bash kind/up.sh down
