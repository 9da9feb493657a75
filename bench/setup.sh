#!/usr/bin/env bash
# The Python side of bench/compare.py, in bench/.venv (never needed by the tests):
# llama-cpp-python compiled from source (about 10 minutes on 2 cores) with AMX off, which
# dies with SIGILL on these machines when built native (shared/BENCHMARKING.md), plus
# transformers, torch (CPU) and gguf to run the same GGUF in Python.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet numpy transformers gguf accelerate
.venv/bin/pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu || .venv/bin/pip install --quiet torch
CMAKE_ARGS='-DGGML_NATIVE=ON "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"' \
  .venv/bin/pip install --quiet --no-cache-dir llama-cpp-python==0.3.36
.venv/bin/python -c "import llama_cpp, transformers, torch; print('llama-cpp-python', llama_cpp.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
