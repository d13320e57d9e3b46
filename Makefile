# pipeline-orchestrator — run `make help` for the list of targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

UV ?= uv
RUN := $(UV) run --frozen
PROTO_OUT := operator
PROTO_SRC := proto/pipeorch/v1/pipeorch.proto

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: sync
sync: ## Install the locked Python environment into .venv (uv sync --frozen)
	@$(UV) sync --frozen --quiet

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

.PHONY: lint
lint: sync proto-check ## ruff, mypy (strict on the pure core), import-linter contracts
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports

.PHONY: fmt
fmt: sync ## Format and auto-fix with ruff
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

.PHONY: demo
demo: sync ## Run the whole system on this machine: 3 replicas (aws, gcp, azure) + 4 workers
	$(RUN) pipeorch local up

.PHONY: test
test: sync ## Run every test tier (unit, integration) with pytest
	$(RUN) pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: sync ## Run only the unit tier
	$(RUN) pytest -m unit $(PYTEST_ARGS)

.PHONY: bench
bench: sync ## Benchmarks: results to bench/results/ and printed as a table
	$(RUN) python -m bench.raft_bench $(BENCH_ARGS)

.PHONY: clean
clean: ## Remove caches and build output
	rm -rf .mypy_cache .ruff_cache .pytest_cache dist build
