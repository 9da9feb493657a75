#!/usr/bin/env python3
"""ferro, llama.cpp and Python transformers side by side on one GGUF, in one run.

Each measurement is its own process (so load time and peak memory are its own); the systems
are interleaved round by round, and the table reports medians and ratios, because these
machines are shared and their speed drifts (see shared/BENCHMARKING.md).

    bench/setup.sh                      # once: bench/.venv with llama-cpp-python (built from
                                        # source), transformers, torch, gguf
    cargo build --release -p ferro-cli
    bench/.venv/bin/python bench/compare.py [--prompt-tokens 512] [--gen-tokens 128]
        [--threads 2] [--rounds 3] [--systems ferro,llama.cpp,transformers] [--batch 8]
        [--model PATH.gguf] [--json results.json] [--speculate N [--task bench/prompts/code_edit.txt]]

What is measured, the same way for every system (greedy, end-of-sequence ignored):
  prompt_tokens_per_s  one forward pass over the prompt (--prompt-tokens tokens of the same
                       filler text, tokenized by each system's own tokenizer of the GGUF)
  decode_tokens_per_s  --gen-tokens tokens after it, one at a time with the KV cache (with
                       --batch B: B copies of the prompt decoded together, the sum over them;
                       llama.cpp is measured at batch 1 only)
  ttft_s, load_s, peak_rss_bytes
transformers runs the GGUF dequantized to fp32, as `from_pretrained(dir, gguf_file=...)` loads it.

With --speculate N, each round also runs a real task (--task: a file whose text is the user
message, through the model's chat template; greedy until the end of the answer or
--task-tokens): ferro plain, ferro with prompt-lookup speculation (N draft tokens), and
llama.cpp plain, on the same prompt token ids; the ratio of interest is ferro speculative /
llama.cpp plain decode, and ferro checks that both of its runs gave the same tokens.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
FILLER = (
    "The quick brown fox jumps over the lazy dog. fn main() { let v: Vec<u32> = (0..10)"
    ".map(|x| x * x).collect(); println!(\"{v:?}\"); } "
)

LLAMA_CPP = r"""
import json, resource, sys, time
import numpy as np
from llama_cpp import Llama
path, P, G, T = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
filler = sys.argv[5]
t0 = time.perf_counter()
llm = Llama(model_path=path, n_ctx=P + G + 16, n_threads=T, n_threads_batch=T, n_batch=P,
            n_ubatch=P, verbose=False)
load_s = time.perf_counter() - t0
ids = []
while len(ids) < P:
    ids += llm.tokenize(filler.encode(), add_bos=False, special=False)
ids = ids[:P]
n_vocab = llm.n_vocab()
def last_logits():
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
t0 = time.perf_counter()
llm.eval(ids)
tok = int(np.argmax(last_logits()))
prompt_s = time.perf_counter() - t0
t0 = time.perf_counter()
for _ in range(G - 1):
    llm.eval([tok])
    tok = int(np.argmax(last_logits()))
decode_s = time.perf_counter() - t0
print(json.dumps({"load_s": load_s, "prompt_s": prompt_s, "prompt_tokens_per_s": P / prompt_s,
                  "ttft_s": prompt_s, "decode_s": decode_s, "decode_tokens_per_s": (G - 1) / decode_s,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

TRANSFORMERS = r"""
import json, os, resource, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path, P, G, T, B = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
filler = sys.argv[6]
torch.set_num_threads(T)
d, f = os.path.dirname(path), os.path.basename(path)
t0 = time.perf_counter()
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
load_s = time.perf_counter() - t0
ids = []
while len(ids) < P:
    ids += tok(filler, add_special_tokens=False)["input_ids"]
x = torch.tensor([ids[:P]] * B)
with torch.inference_mode():
    t0 = time.perf_counter()
    out = model(x, use_cache=True)
    prompt_s = time.perf_counter() - t0
    past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    t0 = time.perf_counter()
    for _ in range(G - 1):
        out = model(nxt, past_key_values=past, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    decode_s = time.perf_counter() - t0
print(json.dumps({"load_s": load_s, "prompt_s": prompt_s, "prompt_tokens_per_s": B * P / prompt_s,
                  "ttft_s": prompt_s, "decode_s": decode_s, "decode_tokens_per_s": B * (G - 1) / decode_s,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

LLAMA_CPP_TASK = r"""
import json, sys, time
import numpy as np
import llama_cpp
from llama_cpp import Llama
path, ids, G, T = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=path, n_ctx=len(ids) + G + 16, n_threads=T, n_threads_batch=T,
            n_batch=len(ids), n_ubatch=len(ids), verbose=False)
n_vocab = llm.n_vocab()
def last_logits():
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
llm.eval(ids)
tok = int(np.argmax(last_logits()))
new = [tok]
t0 = time.perf_counter()
vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
while len(new) < G and not llama_cpp.llama_vocab_is_eog(vocab, tok):
    llm.eval([tok])
    tok = int(np.argmax(last_logits()))
    new.append(tok)
decode_s = time.perf_counter() - t0
print(json.dumps({"decode_s": decode_s, "decode_tokens_per_s": (len(new) - 1) / decode_s,
                  "generated_tokens": len(new)}))
"""


def default_model():
    base = os.environ.get("FERRO_MODELS_DIR") or os.path.expanduser("~/.cache/ferroformers/models")
    return os.path.join(base, "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct.gguf")


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(system, args, batch):
    P, G, T = str(args.prompt_tokens), str(args.gen_tokens), str(args.threads)
    if system == "ferro":
        ferro = os.path.join(ROOT, "target", "release", "ferro")
        return run_json([ferro, "bench", "--model", args.model, "--prompt-tokens", P,
                         "--gen-tokens", G, "--threads", T, "--batch", str(batch), "--json"])
    if system == "llama.cpp":
        return run_json([sys.executable, "-c", LLAMA_CPP, args.model, P, G, T, FILLER])
    if system == "transformers":
        return run_json([sys.executable, "-c", TRANSFORMERS, args.model, P, G, T, str(batch), FILLER])
    raise SystemExit(f"unknown system {system}")


def measure_task(system, args):
    """One run of the --task prompt: (system name, measurement)."""
    ferro = os.path.join(ROOT, "target", "release", "ferro")
    G, T = str(args.task_tokens), str(args.threads)
    if system == "llama.cpp plain":
        return run_json([sys.executable, "-c", LLAMA_CPP_TASK, args.model, json.dumps(args.task_ids), G, T])
    cmd = [ferro, "bench", "--model", args.model, "--prompt-file", args.task, "--gen-tokens", G,
           "--threads", T, "--json"]
    if system == "ferro speculative":
        cmd += ["--speculate", str(args.speculate)]
    return run_json(cmd)


def task_ids(args):
    """The --task prompt's token ids through the chat template, as ferro renders it."""
    ferro = os.path.join(ROOT, "target", "release", "ferro")
    with open(args.task) as f:
        messages = [{"role": "user", "content": f.read()}]
    with tempfile.NamedTemporaryFile("w", suffix=".json") as chat:
        json.dump(messages, chat)
        chat.flush()
        out = subprocess.run([ferro, "template", "--model", args.model, "--messages", chat.name, "--tokenize"],
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def versions():
    v = {}
    for mod in ["llama_cpp", "transformers", "torch"]:
        try:
            v[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - report what is missing
            v[mod] = f"unavailable ({e.__class__.__name__})"
    v["ferro"] = subprocess.run(
        [os.path.join(ROOT, "target", "release", "ferro"), "--version"], capture_output=True, text=True
    ).stdout.strip()
    try:
        with open("/proc/cpuinfo") as f:
            v["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        v["cpu"] = "unknown"
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--systems", default="ferro,llama.cpp,transformers")
    ap.add_argument("--batch", type=int, default=0, help="also measure batch-B decode (ferro, transformers)")
    ap.add_argument("--json", help="write every measurement and the medians here")
    ap.add_argument("--speculate", type=int, default=0, help="also run --task with N-token prompt lookup")
    ap.add_argument("--task", default=os.path.join(ROOT, "bench", "prompts", "code_edit.txt"))
    ap.add_argument("--task-tokens", type=int, default=512)
    args = ap.parse_args()
    if args.speculate:
        args.task_ids = task_ids(args)
    systems = args.systems.split(",")
    runs = [(s, 1) for s in systems]
    if args.batch > 1:
        runs += [(s, args.batch) for s in systems if s != "llama.cpp"]
    results = {f"{s} b{b}": [] for s, b in runs}
    tasks = ["ferro plain", "ferro speculative", "llama.cpp plain"] if args.speculate else []
    if "llama.cpp" not in systems:
        tasks = [t for t in tasks if t != "llama.cpp plain"]
    task_results = {t: [] for t in tasks}
    for r in range(args.rounds):
        for s, b in runs:
            m = measure(s, args, b)
            results[f"{s} b{b}"].append(m)
            print(f"round {r + 1} {s} batch {b}: prompt {m['prompt_tokens_per_s']:.1f} tok/s, "
                  f"decode {m['decode_tokens_per_s']:.2f} tok/s, rss {m['peak_rss_bytes'] / 1e6:.0f} MB",
                  file=sys.stderr, flush=True)
        for t in tasks:
            m = measure_task(t, args)
            task_results[t].append(m)
            print(f"round {r + 1} task {t}: decode {m['decode_tokens_per_s']:.2f} tok/s, "
                  f"{m['generated_tokens']} tokens {m.get('speculation') or ''}", file=sys.stderr, flush=True)
    keys = ["prompt_tokens_per_s", "decode_tokens_per_s", "ttft_s", "load_s", "peak_rss_bytes"]
    medians = {name: {k: statistics.median(m[k] for m in ms) for k in keys} for name, ms in results.items()}
    print(f"\n{args.prompt_tokens}-token prompt, {args.gen_tokens} new tokens, {args.threads} threads, "
          f"medians of {args.rounds} interleaved rounds")
    print(f"{'system':<18}{'prompt tok/s':>14}{'decode tok/s':>14}{'ttft s':>9}{'load s':>9}{'peak RSS MB':>13}")
    for name, m in medians.items():
        print(f"{name:<18}{m['prompt_tokens_per_s']:>14.1f}{m['decode_tokens_per_s']:>14.2f}"
              f"{m['ttft_s']:>9.2f}{m['load_s']:>9.2f}{m['peak_rss_bytes'] / 1e6:>13.0f}")
    ratios = {}
    for other in ["llama.cpp b1", "transformers b1"]:
        if "ferro b1" in medians and other in medians:
            f, o = medians["ferro b1"], medians[other]
            ratios[f"ferro / {other}"] = {
                "prompt": f["prompt_tokens_per_s"] / o["prompt_tokens_per_s"],
                "decode": f["decode_tokens_per_s"] / o["decode_tokens_per_s"],
                "peak_rss": f["peak_rss_bytes"] / o["peak_rss_bytes"],
            }
    bkey = f"b{args.batch}"
    if f"ferro {bkey}" in medians and f"transformers {bkey}" in medians:
        ratios[f"ferro / transformers, batch {args.batch}"] = {
            "decode": medians[f"ferro {bkey}"]["decode_tokens_per_s"]
            / medians[f"transformers {bkey}"]["decode_tokens_per_s"]
        }
    if tasks:
        task_medians = {t: statistics.median(m["decode_tokens_per_s"] for m in ms) for t, ms in task_results.items()}
        print(f"\ntask {os.path.relpath(args.task, ROOT)} ({len(args.task_ids)}-token prompt), decode tok/s, "
              f"medians of {args.rounds} rounds")
        for t, v in task_medians.items():
            print(f"{t:<20}{v:>10.2f}")
        same = all(a["generated_tokens"] == b["generated_tokens"]
                   for a, b in zip(task_results["ferro plain"], task_results["ferro speculative"]))
        print(f"ferro speculative and plain generated the same number of tokens: {same}")
        for base in ["llama.cpp plain", "ferro plain"]:
            if base in task_medians:
                ratios[f"ferro speculative / {base}, task"] = {
                    "decode": task_medians["ferro speculative"] / task_medians[base]}
        medians["tasks"] = task_medians
        results["tasks"] = task_results
    print()
    for name, r in ratios.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "versions": versions(), "runs": results,
                       "medians": medians, "ratios": ratios}, f, indent=1)


if __name__ == "__main__":
    main()
