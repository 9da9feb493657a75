#!/usr/bin/env python3
"""Time Python `tokenizers` (Rust core, 1 thread) encoding the ~20 kB corpus entry with the Qwen GGUF tokenizer.

    /work/venv-ref/bin/python scripts/bench_tokenizers.py [--iters 200] [--warmup 20] [--tokenizer-json PATH]

Uses the tokenizer.json that make_tokenizer_refs.py saved from transformers' GGUF conversion
($FERRO_REFCACHE/qwen2.5-coder-0.5b-instruct.transformers-tokenizer.json) when it exists, else builds it
with AutoTokenizer.from_pretrained(dir, gguf_file=...). Prints one JSON line:
{"system":"python-tokenizers","mean_s":..,"median_s":..,...}
"""

import os

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import tokenizers  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
MODELS_DIR = os.environ.get("FERRO_MODELS_DIR", os.path.expanduser("~/.cache/ferroformers/models"))
REFCACHE = os.environ.get("FERRO_REFCACHE", "/work/refcache")
NAME = "qwen2.5-coder-0.5b-instruct"


def load_tokenizer(path):
    if path and os.path.isfile(path):
        return tokenizers.Tokenizer.from_file(path), path
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.path.join(MODELS_DIR, NAME), gguf_file=f"{NAME}.gguf")
    return tok.backend_tokenizer, "transformers gguf conversion"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--tokenizer-json", default=os.path.join(REFCACHE, f"{NAME}.transformers-tokenizer.json"))
    args = ap.parse_args()

    with open(os.path.join(ROOT, "tests", "fixtures", "tokenizers", "corpus.json"), encoding="utf-8") as f:
        text = max(json.load(f), key=lambda s: len(s.encode()))
    tok, source = load_tokenizer(args.tokenizer_json)

    for _ in range(args.warmup):
        tok.encode(text)
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        enc = tok.encode(text)
        times.append(time.perf_counter() - t0)
    print(json.dumps({
        "system": "python-tokenizers",
        "mean_s": statistics.mean(times),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "iters": args.iters,
        "bytes": len(text.encode()),
        "tokens": len(enc.ids),
        "tokenizers_version": tokenizers.__version__,
        "source": source,
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
