#!/usr/bin/env bash
# The Python client that scripts/openai_client_test.py and bench/serve_*.py drive `ferro serve`
# with: the official `openai` package from PyPI, pinned, in scripts/.venv-client (gitignored).
#
#   scripts/setup_test_client.sh      # prints the venv's python on stdout
#
# Idempotent: when the venv already holds these exact versions it returns in well under a
# second without touching pip. Only PyPI is needed.
set -euo pipefail
cd "$(dirname "$0")"

OPENAI_VERSION=3.57.0   # exact pin: the client whose behaviour the tests assume
HTTPX_VERSION=0.28.1    # openai's own HTTP library; pinned so a new release can't change it
VENV=.venv-client
STAMP="$VENV/.installed-openai-$OPENAI_VERSION-httpx-$HTTPX_VERSION"

if [ -f "$STAMP" ] && [ -x "$VENV/bin/python" ]; then
  echo "$PWD/$VENV/bin/python"
  exit 0
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  "openai==$OPENAI_VERSION" "httpx==$HTTPX_VERSION"
# Fail here, not halfway through a test, if the install is broken.
"$VENV/bin/python" -c "import openai, httpx; assert openai.__version__ == '$OPENAI_VERSION', openai.__version__" >&2
rm -f "$VENV"/.installed-*
touch "$STAMP"
echo "$PWD/$VENV/bin/python"
