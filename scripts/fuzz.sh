#!/usr/bin/env bash
# Runs every libFuzzer target of fuzz/ (cargo fuzz) for FUZZ_SECONDS each (default 20), with
# corpora seeded from the repository's own fixtures and configs. Exits 1 at the first crash;
# the crashing input is left in fuzz/artifacts/<target>/ (make it a unit test). Prints each
# target's executions. `make fuzz-smoke` (in make test) is 20 s each; `make fuzz FUZZ_SECONDS=N`.
# FUZZ_RUNS=N stops each target after N executions instead (the long run: FUZZ_RUNS=10000000
# FUZZ_SECONDS=7200). FUZZ_SANITIZER=none builds without AddressSanitizer, about twice the
# executions a second; a panic is a crash either way, and the crate has no unsafe code.
# cargo fuzz needs nightly features: RUSTC_BOOTSTRAP=1 lets the stable toolchain build them.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECONDS_EACH="${FUZZ_SECONDS:-20}"
TARGETS="${FUZZ_TARGETS:-config render chat_request answer stream sse health_table classifier credentials}"
RUNS="${FUZZ_RUNS:-}"
SANITIZER="${FUZZ_SANITIZER:-address}"
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1

say() { printf '[fuzz] %s\n' "$*" >&2; }

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
  cargo install -q --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
cd "$ROOT"
cargo fuzz build -O -s "$SANITIZER"

# Seeds: what each parser sees in the tests. The first byte of answer/stream inputs picks the
# format (see the targets).
seed() {
  local target="$1" dir="$ROOT/fuzz/corpus/$1"
  mkdir -p "$dir"
  python3 - "$target" "$dir" <<'PY'
import hashlib, json, pathlib, sys
target, out = sys.argv[1], pathlib.Path(sys.argv[2])
root = pathlib.Path.cwd()
fixtures = root / "src/provider/fixtures"
def put(data: bytes):
    (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
renders = sorted(root.glob("envoy/*.json")) + sorted(root.glob("deploy/**/llm-failover.json"))
if target == "render":
    for path in renders:
        put(path.read_bytes())
elif target == "config":
    for path in renders:
        put(json.dumps({"role": "router", **json.loads(path.read_text())["filter"]}).encode())
    put(b'{"role": "attempt"}')
elif target in ("chat_request", "classifier"):
    for path in fixtures.glob("*/*.openai.json"):
        put((b"\x10" if target == "classifier" else b"") + path.read_bytes())
elif target == "answer":
    for fmt, pick in (("anthropic", 2), ("gemini", 3), ("ollama", 4), ("bedrock", 5)):
        for path in fixtures.glob(f"{fmt}/answer_*.{fmt}.json"):
            put(bytes([pick]) + path.read_bytes())
elif target in ("stream", "sse"):
    for pattern, pick in (("anthropic/stream_*.anthropic.sse", 0), ("gemini/stream_*.sse", 1), ("ollama/stream_*.ndjson", 2)):
        for path in fixtures.glob(pattern):
            put(bytes([pick]) + path.read_bytes())
    if target == "stream":
        # Bedrock's binary event stream, framed as tests/fake_api/bedrock.py frames it.
        sys.path.insert(0, str(root / "tests"))
        from fake_api import bedrock
        for path in fixtures.glob("bedrock/stream_*.events.json"):
            put(bytes([3]) + b"".join(bedrock.event(kind, payload) for kind, payload in json.loads(path.read_text())))
elif target == "credentials":
    import base64
    now = 1_700_000_000
    for answer in ({"token_type": "Bearer", "expires_in": 3599, "access_token": "eyJ0eXAi.x"},
                   {"token": "tid=1;exp=2", "expires_at": now + 1800, "refresh_in": 1500},
                   {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}):
        put(b"\x00" + json.dumps(answer).encode())
    for path in (root / "tests/fixtures/google").glob("TEST-ONLY-service-account.json"):
        put(b"\x01" + path.read_bytes())
        pem = json.loads(path.read_text())["private_key"]
        der = base64.b64decode("".join(l for l in pem.splitlines() if l and not l.startswith("-----")))
        put(b"\x02" + der)
    for url in ("https://login.microsoftonline.com/t/oauth2/v2.0/token", "http://127.0.0.1:8080/token",
                "https://oauth2.googleapis.com/token"):
        put(b"\x03" + url.encode())
PY
}

declare -A executions took
for target in $TARGETS; do
  seed "$target"
  log="$ROOT/fuzz/$target.log"
  say "$target: ${SECONDS_EACH}s${RUNS:+ or $RUNS executions}"
  started=$SECONDS
  if ! cargo fuzz run -O -s "$SANITIZER" "$target" "fuzz/corpus/$target" -- \
      -max_total_time="$SECONDS_EACH" ${RUNS:+-runs="$RUNS"} -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    say "$target crashed: the input is in fuzz/artifacts/$target/"
    exit 1
  fi
  executions[$target]="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
  took[$target]=$((SECONDS - started))
  printf '%-14s %12s executions in %ss, 0 crashes\n' "$target" "${executions[$target]:-?}" "${took[$target]}" >&2
done
for target in $TARGETS; do
  printf '%-14s %12s executions in %ss, 0 crashes\n' "$target" "${executions[$target]:-?}" "${took[$target]}"
done
