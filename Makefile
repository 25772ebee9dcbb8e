# dnd-service: one entry point for running, testing and generating code.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LINT_DIRS := server client tests $(wildcard bench)
PROTO_FILES := $(shell find protos -name '*.proto')
PROTOC := $(BIN)/python -m grpc_tools.protoc -Iprotos \
	--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc

.PHONY: run migrate test test-fast lint proto-lint proto-release typecheck proto proto-check pytest bench bench-watch bench-bulk bench-write bench-scale clean venv

$(BIN)/dnd-server: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[server,embedded,dev,tracing]'
	@touch $@

venv: $(BIN)/dnd-server

## Start the service on 127.0.0.1:50051 (embedded PostgreSQL unless DND_DATABASE_URL is set).
run: venv
	$(BIN)/dnd-server serve

## Apply database migrations and exit.
migrate: venv
	$(BIN)/dnd-server migrate

## Lint, type-check, check generated code and run the test suite.
test: venv lint proto-lint typecheck proto-check pytest

lint: venv
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)

BUF := npx --yes @bufbuild/buf@1.75.0
# The contract as last released: the API only grows from it (buf breaking, FILE rules).
PROTO_RELEASE := releases/v1.json

## buf lint of protos/, and buf breaking against the last release (skipped with a note when
## npm is not installed).
proto-lint:
	@if command -v npx >/dev/null 2>&1; then \
		cd protos && $(BUF) lint && echo "buf lint: clean" && \
		$(BUF) breaking --against $(PROTO_RELEASE) && \
		echo "buf breaking: clean against protos/$(PROTO_RELEASE)"; \
	else echo "buf lint and breaking skipped: npx not found"; fi

## Record protos/ as the released contract that later changes must not break.
proto-release:
	cd protos && $(BUF) build --exclude-source-info -o $(PROTO_RELEASE)

typecheck: venv
	$(BIN)/mypy server/dnd_server client/dnd_client

# The tests and the server processes they start keep their bytecode under .pytest_cache/ (also
# where PYTHONDONTWRITEBYTECODE is set): each server start then skips compiling the server.
PYTEST := env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(CURDIR)/.pytest_cache/pycache \
	$(BIN)/pytest

## Every test tier: tests/unit, tests/integration and tests/e2e (server processes, faults, the image).
pytest: venv
	$(PYTEST)

## The unit and integration tiers only (no fault, restart or image tests), in two processes
## (each with its own PostgreSQL and server): well under a minute.
test-fast: venv
	PYTHONHASHSEED=0 $(PYTEST) -n 2 tests/unit tests/integration

## Regenerate generated/ from protos/.
proto: venv
	rm -rf generated/dnd
	$(PROTOC) \
		--python_out=generated --grpc_python_out=generated \
		--mypy_out=generated --mypy_grpc_out=generated $(PROTO_FILES)
	touch generated/dnd/__init__.py generated/dnd/v1/__init__.py generated/dnd/v1/py.typed

## Fail when generated/ differs from what protos/ produce.
proto-check: venv
	rm -rf .proto-check && mkdir -p .proto-check
	$(PROTOC) \
		--python_out=.proto-check --grpc_python_out=.proto-check \
		--mypy_out=.proto-check --mypy_grpc_out=.proto-check $(PROTO_FILES)
	touch .proto-check/dnd/__init__.py .proto-check/dnd/v1/__init__.py .proto-check/dnd/v1/py.typed
	@diff -r generated/dnd .proto-check/dnd -x __pycache__ \
		|| (echo "generated/ is out of date: run 'make proto' and commit" && rm -rf .proto-check && exit 1)
	@rm -rf .proto-check
	@echo "generated code is up to date"

## Hot-path benchmark suite (installs h2load from Debian's nghttp2-client when it can).
bench: venv
	@command -v h2load >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
		(apt-get install -y -q nghttp2-client >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nghttp2-client >/dev/null 2>&1))) || \
		echo "h2load unavailable: falling back to the Python load generator"
	$(BIN)/python bench/run.py

## Change-stream benchmark.
bench-watch: venv
	$(BIN)/python bench/watch_bench.py

## Write-path benchmark: raw PostgreSQL baselines, SetDnd's own SQL, the RPC, 100 watchers.
bench-write: venv
	$(BIN)/python bench/write_bench.py

## Bulk benchmark: BulkSetDnd vs SetDnd, ExportSuppressions of 1,000,000 rows.
bench-bulk: venv
	$(BIN)/python bench/bulk_bench.py

## Reads at scale: 1,000,000 contacts, CheckSend random vs hot, BatchCheckSend random vs warm.
bench-scale: venv
	$(BIN)/python bench/scale_bench.py

clean:
	rm -rf $(VENV) .proto-check .mypy_cache .ruff_cache .pytest_cache
