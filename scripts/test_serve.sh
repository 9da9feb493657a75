#!/usr/bin/env bash
# End to end: start `ferro serve` on the Qwen test model with an API key, run the openai-client
# checks (scripts/openai_client_test.py) and a small load test (bench/serve_load.py), stop it.
#
#   cargo build --release -p ferro-cli && scripts/test_serve.sh
#
# Env: FERRO (binary, default target/release/ferro), MODEL (GGUF, default: fetched by
# scripts/fetch_models.sh), LOAD=0 to skip the load test, CLIENTS and REQUESTS for its size
# (default 16 x 2). The server log is printed when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

FERRO="${FERRO:-target/release/ferro}"
[ -x "$FERRO" ] || { echo "test_serve: no $FERRO (cargo build --release -p ferro-cli)" >&2; exit 1; }
MODEL="${MODEL:-$(scripts/fetch_models.sh --only qwen | grep -m1 '\.gguf$')}"
EMBEDDING_MODEL="${EMBEDDING_MODEL:-$(scripts/fetch_models.sh --only minilm | tail -1)}"
PY="$(scripts/setup_test_client.sh)"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
KEY="test-key-$RANDOM$RANDOM"
URL="http://127.0.0.1:$PORT"
LOG="$(mktemp -t ferro-serve.XXXXXX.log)"

"$FERRO" serve --model "$MODEL" --embedding-model "$EMBEDDING_MODEL" --host 127.0.0.1 --port "$PORT" \
  --api-key "$KEY" >"$LOG" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true' EXIT
fail() { echo "test_serve: $*; server log ($LOG):" >&2; tail -40 "$LOG" >&2; exit 1; }

# Ready when /health is 200; give up early if the server died.
for _ in $(seq 600); do
  kill -0 "$PID" 2>/dev/null || fail "ferro serve exited before it was ready"
  "$PY" -c "import httpx, sys; sys.exit(httpx.get('$URL/health', timeout=2, trust_env=False).status_code != 200)" \
    2>/dev/null && break
  sleep 0.5
done

"$PY" scripts/openai_client_test.py "$URL" "$KEY" --wait 10 || fail "openai client checks failed"
if [ "${LOAD:-1}" = 1 ]; then
  "$PY" bench/serve_load.py --base-url "$URL" --api-key "$KEY" --skip-throughput \
    --clients "${CLIENTS:-16}" --requests-per-client "${REQUESTS:-2}" --check-sample 8 \
    || fail "load test failed"
fi
kill -0 "$PID" 2>/dev/null || fail "ferro serve died during the tests"
echo "test_serve: ferro serve passed"
