#!/usr/bin/env python3
"""Encode throughput on the corpus' ~20 kB text: ferroformers vs Python `tokenizers`, one thread,
interleaved rounds in one run, medians and ratios.

    cargo build --release -p ferroformers --example tokenizer_throughput
    /work/venv-ref/bin/python bench/tokenizer_throughput.py [--rounds 5] [--iters 200]

Python side: `tokenizers` (pinned in scripts/requirements-reference.txt). The GGUF tokenizers are the
ones transformers builds (`AutoTokenizer.from_pretrained(dir, gguf_file=...).backend_tokenizer`), read
from $FERRO_REFCACHE/<model>.transformers-tokenizer.json when scripts/make_tokenizer_refs.py saved
them there, else built with transformers. Both sides call encode with special tokens and offsets.
"""

import argparse
import json
import os
import statistics
import subprocess
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import tokenizers  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
MODELS = os.environ.get("FERRO_MODELS_DIR", os.path.expanduser("~/.cache/ferroformers/models"))
REFCACHE = os.environ.get("FERRO_REFCACHE", "/work/refcache")
RUST = os.path.join(ROOT, "target", "release", "examples", "tokenizer_throughput")
CASES = {
    "qwen2.5-coder-0.5b-instruct": ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct.gguf"),
    "gemma-3-270m": ("gemma-3-270m", "gemma-3-270m-q4_k_m.gguf"),
    "all-MiniLM-L6-v2": ("all-MiniLM-L6-v2", None),
}


def python_tokenizer(name, folder, gguf):
    if gguf is None:
        return tokenizers.Tokenizer.from_file(os.path.join(MODELS, folder, "tokenizer.json"))
    saved = os.path.join(REFCACHE, f"{name}.transformers-tokenizer.json")
    if os.path.isfile(saved):
        return tokenizers.Tokenizer.from_file(saved)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.join(MODELS, folder), gguf_file=gguf).backend_tokenizer


def python_median(tok, text, iters):
    for _ in range(max(1, iters // 10)):
        tok.encode(text)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        tok.encode(text)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rust_median(folder, gguf, text_file, iters):
    model = os.path.join(MODELS, folder, gguf) if gguf else os.path.join(MODELS, folder)
    out = subprocess.run([RUST, model, text_file, str(iters)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["median_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    with open(os.path.join(ROOT, "tests", "fixtures", "tokenizers", "corpus.json"), encoding="utf-8") as f:
        text = max(json.load(f), key=lambda s: len(s.encode()))
    text_file = os.path.join(ROOT, "target", "bench-20k.txt")
    with open(text_file, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"text: {len(text.encode())} bytes; tokenizers {tokenizers.__version__}; {args.rounds} rounds x {args.iters} encodes")
    print(f"{'model':32} {'python ms':>10} {'ferro ms':>10} {'speed-up':>9}")
    for name, (folder, gguf) in CASES.items():
        tok = python_tokenizer(name, folder, gguf)
        py, rs = [], []
        for _ in range(args.rounds):  # interleaved, so drift hits both alike
            py.append(python_median(tok, text, args.iters))
            rs.append(rust_median(folder, gguf, text_file, args.iters))
        p, r = statistics.median(py), statistics.median(rs)
        print(f"{name:32} {p * 1e3:10.2f} {r * 1e3:10.2f} {p / r:8.2f}x")


if __name__ == "__main__":
    main()
