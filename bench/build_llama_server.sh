#!/usr/bin/env bash
# Build llama.cpp's OpenAI-compatible `llama-server` (the anchor for bench/serve_compare.py)
# from the llama.cpp sources vendored in the llama-cpp-python 0.3.36 sdist on PyPI.
#
#   bench/build_llama_server.sh            # prints the path of the llama-server binary
#
# Output: ${LLAMA_SERVER_DIR:-$HOME/.cache/ferroformers/llama-server}/bin/llama-server,
# outside the repo. A second run with the binary present returns at once.
# cmake (and ninja) come from PyPI into a build-only venv there, since the machine has none.
# AMX is compiled out: a native build's AMX path dies with SIGILL on these machines
# (shared/BENCHMARKING.md). About 10 minutes on 2 cores; it runs under `nice`.
set -euo pipefail

VERSION=0.3.36
DIR="${LLAMA_SERVER_DIR:-$HOME/.cache/ferroformers/llama-server}"
BIN="$DIR/bin/llama-server"
JOBS="${JOBS:-$(nproc)}"
log() { echo "build_llama_server: $*" >&2; }

if [ -x "$BIN" ] && [ -f "$DIR/.built-$VERSION" ]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$DIR"

# Tools: cmake and ninja wheels from PyPI (no apt needed).
if [ ! -x "$DIR/.venv-build/bin/cmake" ]; then
  log "installing cmake and ninja into $DIR/.venv-build"
  python3 -m venv "$DIR/.venv-build"
  "$DIR/.venv-build/bin/pip" install --quiet --disable-pip-version-check cmake ninja
fi
export PATH="$DIR/.venv-build/bin:$PATH"

# Sources: the sdist only (never the wheel), unpacked once.
SRC="$DIR/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -f "$SRC/CMakeLists.txt" ]; then
  log "downloading the llama-cpp-python $VERSION sdist"
  rm -rf "$DIR/src" && mkdir -p "$DIR/src"
  # --no-binary for this package only: pip still prepares the sdist's metadata, and with
  # :all: it would compile its build requirements (cmake among them) from source too.
  "$DIR/.venv-build/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    --no-binary llama-cpp-python --dest "$DIR/src" "llama-cpp-python==$VERSION"
  tar -xzf "$DIR/src/llama_cpp_python-$VERSION.tar.gz" -C "$DIR/src"
fi
[ -f "$SRC/CMakeLists.txt" ] || { log "ERROR: no llama.cpp sources at $SRC"; exit 1; }

NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
log "configuring (GGML_NATIVE=ON, AMX off, curl off)"
nice -n 10 cmake -S "$SRC" -B "$DIR/build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON \
  -DCMAKE_C_FLAGS="$NO_AMX" -DCMAKE_CXX_FLAGS="$NO_AMX" \
  -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DBUILD_SHARED_LIBS=OFF >"$DIR/configure.log" 2>&1 \
  || { tail -30 "$DIR/configure.log" >&2; exit 1; }
log "building llama-server with $JOBS jobs (log: $DIR/build.log)"
nice -n 10 cmake --build "$DIR/build" --target llama-server -j "$JOBS" >"$DIR/build.log" 2>&1 \
  || { tail -40 "$DIR/build.log" >&2; exit 1; }

mkdir -p "$DIR/bin"
cp "$DIR/build/bin/llama-server" "$BIN"
touch "$DIR/.built-$VERSION"
"$BIN" --version >&2 2>&1 || true
echo "$BIN"
