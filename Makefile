# llm-failover: `make run` for the demo, `make test` for everything. Both install what they lack.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test bench bench-instructions setup build unit lint e2e e2e-versions clean envoy-configs deploy-wasm fuzz fuzz-smoke soak observability-tools rules-test

# Each shipped Envoy config is rendered from the .json beside it (its comment header is kept); a
# unit test fails when one is stale.
envoy-configs:
	@render() { out=$$1; src=$$2; shift 2; \
	  { sed '/^$$/q' $$out; cargo run -q --locked --bin llm-failover-render -- "$$@" $$src; } > $$out.new \
	  && mv $$out.new $$out && echo "rendered $$out"; }; \
	render envoy/demo.yaml envoy/demo.json && \
	render envoy/real-providers.yaml envoy/real-providers.json && \
	render deploy/kubernetes/gateway/envoy.yaml deploy/kubernetes/gateway/llm-failover.json && \
	render deploy/istio/llm-failover.yaml deploy/istio/llm-failover.json --istio

# The .wasm into deploy/kubernetes/wasm/, where the kustomizations make a ConfigMap of it.
deploy-wasm: build
	@size=$$(stat -c %s target/wasm32-unknown-unknown/release/llm_failover.wasm); \
	if [ $$size -gt 1048576 ]; then echo "the .wasm is $$size bytes: a ConfigMap holds at most 1048576"; exit 1; fi; \
	cp target/wasm32-unknown-unknown/release/llm_failover.wasm deploy/kubernetes/wasm/ && \
	echo "deploy/kubernetes/wasm/llm_failover.wasm: $$size bytes; now kubectl apply -k deploy/kubernetes/gateway (or mesh, or deploy/istio)"

setup:
	@scripts/toolchain.sh setup

build: setup
	@scripts/toolchain.sh build
	cargo build --release --locked --bin llm-failover-render --example google_token_request

unit:
	cargo test --locked

# promtool, Prometheus, amtool and Chromium (Debian's), for the observability tests.
observability-tools:
	@scripts/toolchain.sh observability

# The shipped alert rules (and their unit tests) and Alertmanager config, checked by the
# Prometheus tools themselves.
rules-test: observability-tools
	promtool check rules observability/prometheus/llm-failover.rules.yml observability/prometheus/gen-ai.rules.yml
	cd observability/prometheus && promtool test rules llm-failover.rules.test.yml gen-ai.rules.test.yml
	amtool check-config observability/alertmanager/alertmanager.yml

# clippy denies unwrap/expect/panic outside tests; the host layer only compiles for wasm32,
# so it is linted there when rustup's wasm32 target is installed.
lint:
	cargo clippy --locked --all-targets -- -D warnings
	@if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then \
	  cargo clippy --locked --release --target wasm32-unknown-unknown -- -D warnings; \
	else echo "lint: no rustup wasm32 target, host layer not linted"; fi

e2e: build observability-tools
	$(PYTHON) -m pytest tests/e2e -q

# The core suite (pytest -m core: failover, skips, credentials, translation, the all-down 503,
# the health endpoint, refused configs) on every older supported Envoy; the full suite runs above.
e2e-versions: build
	@for v in $$(scripts/toolchain.sh older-envoys); do \
	  echo "== core end-to-end suite on Envoy $$v"; \
	  ENVOY_BIN=.envoys/$$v/bin/envoy $(PYTHON) -m pytest tests/e2e -q -m core || exit 1; \
	done

# libFuzzer on every parser (scripts/fuzz.sh): make fuzz FUZZ_SECONDS=600 for a long run; the
# smoke run in make test gives each target 20 s, so a regression in a parser shows.
fuzz:
	@scripts/fuzz.sh

fuzz-smoke:
	@FUZZ_SECONDS=20 scripts/fuzz.sh

test: setup unit rules-test fuzz-smoke e2e e2e-versions

run: build
	$(PYTHON) scripts/demo.py

# Not part of make test: 20 minutes of mixed faults from 16 clients, sampling Envoy's memory and
# the health table (docs/reliability.md). SOAK_MINUTES=N for another length.
soak: build
	$(PYTHON) scripts/soak.py --minutes $${SOAK_MINUTES:-20}

bench: build
	@scripts/toolchain.sh build-floor
	$(PYTHON) bench/run.py
	$(PYTHON) bench/instructions.py

# Only the instruction counts (callgrind): about 7 minutes, and the machine's load does not move them.
bench-instructions: build
	@scripts/toolchain.sh build-floor
	$(PYTHON) bench/instructions.py

clean:
	cargo clean
	rm -rf $(VENV)
