# llm-failover: `make run` for the demo, `make test` for everything. Both install what they lack.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test bench setup build unit lint e2e e2e-versions clean envoy-configs observability-tools rules-test

# envoy/demo.yaml is rendered from envoy/demo.json (its comment header is kept); a unit test
# fails when it is stale.
envoy-configs:
	@for name in demo real-providers; do \
	  { sed '/^$$/q' envoy/$$name.yaml; cargo run -q --locked --bin llm-failover-render envoy/$$name.json; } > envoy/$$name.yaml.new \
	  && mv envoy/$$name.yaml.new envoy/$$name.yaml && echo "rendered envoy/$$name.yaml"; \
	done

setup:
	@scripts/toolchain.sh setup

build: setup
	@scripts/toolchain.sh build
	cargo build --release --locked --bin llm-failover-render

unit:
	cargo test --locked

# promtool, Prometheus, amtool and Chromium (Debian's), for the observability tests.
observability-tools:
	@scripts/toolchain.sh observability

# The shipped alert rules (and their unit tests) and Alertmanager config, checked by the
# Prometheus tools themselves.
rules-test: observability-tools
	promtool check rules observability/prometheus/llm-failover.rules.yml
	cd observability/prometheus && promtool test rules llm-failover.rules.test.yml
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

test: setup unit rules-test e2e e2e-versions

run: build
	$(PYTHON) scripts/demo.py

bench: build
	$(PYTHON) bench/run.py

clean:
	cargo clean
	rm -rf $(VENV)
