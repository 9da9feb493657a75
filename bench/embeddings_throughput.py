#!/usr/bin/env python3
"""Sentence-embedding throughput: sentence-transformers `encode` on 1,000 sentences, and optionally an
external command (ferro) that embeds the same file, in one run, with medians and their ratio.

    scripts/fetch_models.sh --only minilm
    /work/venv-ref/bin/pip install -r scripts/requirements-reference.txt     # sentence-transformers 6.2.0
    nice -n 10 /work/venv-ref/bin/python bench/embeddings_throughput.py [--threads 2] [--batch-size 32]
        [--rounds 3] [--model DIR] [--json OUT.json]
        [--ferro-cmd "target/release/ferro pipeline sentence-embeddings --model DIR \
                      --file bench/prompts/embedding_sentences.txt --batch-size 32 --output /dev/null"]

Input: bench/prompts/embedding_sentences.txt, 1,000 sentences one per line, made deterministically
(random.Random(0)) from the 50 of tests/fixtures/encoders/sentences.json by rotating and splicing their
words; the file is committed so the Rust side reads the same text. It is regenerated only when it is
missing or with --regen (the script says if the committed file differs from what it would generate).

sentence-transformers: SentenceTransformer(DIR, device="cpu"), float32, torch.set_num_threads(--threads),
encode(sentences, batch_size=--batch-size) with its defaults (sorted by length, padded per batch, the
model's Normalize module applied). One warm-up encode of the whole file, then --rounds timed encodes;
the model load is not timed.

--ferro-cmd (optional; skipped when not given): run through bash, with RAYON_NUM_THREADS and
OMP_NUM_THREADS set to --threads unless already set; one warm-up run, then --rounds timed runs
interleaved with the Python rounds (these machines drift). Its time is the whole process wall time,
so it *includes* process start and model load, which the Python number does not: the ratio
(ferro / sentence-transformers sentences/s) is, if anything, unfair to ferro.
"""

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
MODELS = os.environ.get("FERRO_MODELS_DIR", os.path.expanduser("~/.cache/ferroformers/models"))
SOURCE = os.path.join(ROOT, "tests", "fixtures", "encoders", "sentences.json")
PROMPTS = os.path.join(ROOT, "bench", "prompts", "embedding_sentences.txt")
COUNT = 1000
SEED = 0


def generate(source_sentences, count=COUNT, seed=SEED):
    """`count` single-line sentences from the source ones: each is a word-rotation of one source
    sentence, half of them spliced with the head or tail of another, a quarter cut to a window of it.
    For the committed file: 1 to 169 words, 3 to 204 word pieces with [CLS]/[SEP] (24,028 in all;
    22 sentences over 128, none over max_seq_length = 256)."""
    rng = random.Random(seed)
    words = [s.split() for s in source_sentences]
    out = []
    for i in range(count):
        a = words[i % len(words)]
        k = rng.randrange(len(a))
        w = a[k:] + a[:k]
        mode = rng.randrange(4)
        if mode == 1:  # + head of another
            b = words[rng.randrange(len(words))]
            w = w + b[: rng.randrange(1, len(b) + 1)]
        elif mode == 2:  # tail of another +
            b = words[rng.randrange(len(words))]
            w = b[rng.randrange(len(b)):] + w
        elif mode == 3 and len(w) > 3:  # a random window of it
            start = rng.randrange(len(w) - 2)
            w = w[start: start + rng.randrange(3, len(w) - start + 1)]
        line = " ".join(w)
        if line:
            line = line[0].upper() + line[1:]
        out.append(line)
    assert all(s and "\n" not in s and "\r" not in s for s in out)
    return out


def prompts(regen):
    with open(SOURCE, encoding="utf-8") as f:
        generated = generate(json.load(f))
    text = "\n".join(generated) + "\n"
    if os.path.exists(PROMPTS) and not regen:
        with open(PROMPTS, encoding="utf-8") as f:
            on_disk = f.read()
        if on_disk != text:
            print(f"note: {PROMPTS} differs from what this script generates (--regen rewrites it); "
                  "using the file", file=sys.stderr)
        return on_disk.splitlines()
    os.makedirs(os.path.dirname(PROMPTS), exist_ok=True)
    with open(PROMPTS, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {PROMPTS}", file=sys.stderr)
    return generated


def time_st(model, sentences, batch_size):
    t0 = time.perf_counter()
    emb = model.encode(sentences, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    dt = time.perf_counter() - t0
    assert emb.shape[0] == len(sentences)
    return dt


def time_cmd(cmd, threads):
    env = dict(os.environ)
    env.setdefault("RAYON_NUM_THREADS", str(threads))
    env.setdefault("OMP_NUM_THREADS", str(threads))
    t0 = time.perf_counter()
    p = subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"--ferro-cmd failed (exit {p.returncode}): {p.stderr[-2000:]}")
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(MODELS, "all-MiniLM-L6-v2"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ferro-cmd", default=None, help="shell command that embeds " +
                    os.path.relpath(PROMPTS, ROOT) + " (timed as a whole process)")
    ap.add_argument("--json", metavar="OUT", default=None)
    ap.add_argument("--regen", action="store_true", help="rewrite the sentences file")
    args = ap.parse_args()

    sentences = prompts(args.regen)
    assert len(sentences) == COUNT, len(sentences)

    import torch
    import sentence_transformers
    import transformers
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(args.model, device="cpu")
    model.eval()
    n_tokens = sum(len(model.tokenizer(s, truncation=True, max_length=model.max_seq_length)["input_ids"])
                   for s in sentences)
    print(f"{len(sentences)} sentences ({n_tokens} tokens with specials, max_seq_length "
          f"{model.max_seq_length}); batch {args.batch_size}; {args.threads} threads; {args.rounds} rounds; "
          f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__}, "
          f"torch {torch.__version__}", file=sys.stderr)

    if args.ferro_cmd:
        time_cmd(args.ferro_cmd, args.threads)  # warm-up (page cache, binary); fails fast if broken
    with torch.no_grad():
        time_st(model, sentences, args.batch_size)  # warm-up
    st_times, ferro_times = [], []
    for r in range(args.rounds):
        with torch.no_grad():
            st_times.append(time_st(model, sentences, args.batch_size))
        line = f"round {r + 1}: sentence-transformers {len(sentences) / st_times[-1]:.1f} sentences/s"
        if args.ferro_cmd:
            ferro_times.append(time_cmd(args.ferro_cmd, args.threads))
            line += f", ferro {len(sentences) / ferro_times[-1]:.1f} sentences/s (whole process)"
        print(line, file=sys.stderr)

    st_med = len(sentences) / statistics.median(st_times)
    print(f"sentence-transformers: {st_med:.1f} sentences/s (median of {args.rounds})")
    result = {
        "model": os.path.basename(os.path.normpath(args.model)),
        "sentences_file": os.path.relpath(PROMPTS, ROOT),
        "sentences": len(sentences),
        "tokens_with_specials": n_tokens,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "versions": {"sentence_transformers": sentence_transformers.__version__,
                     "transformers": transformers.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "cpu": platform.processor() or platform.machine(),
        "sentence_transformers": {"seconds": st_times, "sentences_per_s_median": st_med},
    }
    if args.ferro_cmd:
        ferro_med = len(sentences) / statistics.median(ferro_times)
        ratio = ferro_med / st_med
        print(f"ferro (whole process, load included): {ferro_med:.1f} sentences/s (median of {args.rounds})")
        print(f"ratio ferro / sentence-transformers: {ratio:.2f}")
        result["ferro"] = {"cmd": args.ferro_cmd, "seconds": ferro_times, "sentences_per_s_median": ferro_med,
                           "includes_process_start_and_model_load": True}
        result["ratio_ferro_over_sentence_transformers"] = ratio
    else:
        print("ferro: skipped (no --ferro-cmd)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
