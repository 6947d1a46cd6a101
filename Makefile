# Switchboard. Two commands on a fresh machine: `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXAMPLE_CONFIG := services/gateway/examples/gateway.example.yaml

.PHONY: up test lint perf screenshots clean clean-backend

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) is required (install Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# System packages the tests use (command:package); installed through apt-get when missing and running as root.
# kubectl ships with this machine image; Debian's kubernetes-client provides one where it does not.
SYSTEM_PACKAGES := redis-server:redis-server tmux:tmux kubectl:kubernetes-client prometheus:prometheus

.PHONY: system-packages
system-packages:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "make: missing system packages:$$missing (install them with apt-get)"; exit 1; fi; fi

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

## up: the bundled vLLM backend (provisioned on first run), the gateway on the example config, and the
## console attached to them; quitting the console stops them. The admin tokens and one local client key
## are kept in 0600 files under $XDG_STATE_HOME/switchboard (paths printed at start-up), so a second
## terminal's `switchboard console` / `switchboard status` reach the running stack. A SIMULATED Kubernetes
## cluster (kubesim) runs beside them on scenario SIM_CLUSTER (default seed: ai-prod, its HPA fed by the gateway's
## request rate); `make up SIM_CLUSTER=` runs without it, SIM_CLUSTER=path/to/scenario.yaml on another
SIM_CLUSTER ?= seed
up: $(STAMP)
	$(BIN)/switchboard backend install
	$(BIN)/switchboard backend model
	$(BIN)/switchboard up --gateway-config $(EXAMPLE_CONFIG) $(if $(SIM_CLUSTER),--sim-cluster $(SIM_CLUSTER))

## lint: ruff and the import-linter layering contracts
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

## test: install what the tests need, lint, and run every test
test: lint system-packages
	$(BIN)/python -m pytest -q

## perf: benchmarks that print figures (gateway overhead vs direct and vs Portkey, keys on and off; console
## start-up and CPU; kubesim holding 1,000 pods: list latency, watch fan-out, CPU and RSS; the console on that
## cluster: CPU and key-press-to-frame latency beside an empty one; the batch queue through one and two workers;
## the benchmark load generator's rate and send lag beside vllm bench serve's),
## then the soak:
## SOAK_MINUTES (default 10) at 200 requests/s through client keys against faulty stand-ins; it fails when a
## request goes unanswered, a failure is malformed, or RSS grows 10% or more
SOAK_MINUTES ?= 10
perf: $(STAMP) system-packages
	$(BIN)/python tests/perf/bench_gateway.py
	$(BIN)/python tests/perf/bench_console.py
	$(BIN)/python tests/perf/bench_kubesim.py
	$(BIN)/python tests/perf/bench_console_kube.py
	$(BIN)/python tests/perf/bench_batch_queue.py
	$(BIN)/python tests/perf/bench_loadgen.py
	$(BIN)/python tests/perf/soak.py --minutes $(SOAK_MINUTES)

## screenshots: regenerate the console's SVGs in screenshots/ from the real app (fixed data, no network)
screenshots: $(STAMP)
	$(BIN)/python tests/console/make_screenshots.py

## clean: the project's virtualenv and caches (the engine's cached virtualenv stays: see clean-backend)
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

clean-backend:
	rm -rf $${XDG_CACHE_HOME:-$$HOME/.cache}/switchboard/backend
