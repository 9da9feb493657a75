#!/usr/bin/env python3
"""Checks that a causal LM trained from scratch by `ferro train` (examples/train/tiny-llama-from-scratch.toml) loads in
Python transformers and gives our next-token logits.

    ferro train --config examples/train/tiny-llama-from-scratch.toml          # -> /tmp/ferro-tiny-llama
    cargo build --release -p ferro-train --example next_token_logits
    /work/venv-ref/bin/python scripts/check_scratch_in_transformers.py --model /tmp/ferro-tiny-llama

Loads the saved folder with AutoTokenizer + AutoModelForCausalLM (transformers 5.24, float32, CPU, eager attention)
and takes, for a few prompts (the first words of paragraphs of tests/fixtures/training/scratch/eval.jsonl, which the
model did not train on), the logits after the prompt's last token; ours come from target/release/examples/
next_token_logits on the same folder. Checks the token ids agree, reports max |diff| over the vocabulary and
whether the arg-max agrees, and transformers' own greedy continuation of each prompt. Prints one JSON object; exit
status 1 when the logits differ by --tol (1e-4) or more.
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
EVAL = os.path.join(ROOT, "tests", "fixtures", "training", "scratch", "eval.jsonl")


def prompts(n, words):
    rows = [json.loads(line)["text"] for line in open(EVAL, encoding="utf-8") if line.strip()]
    long = [r for r in rows if len(r.split()) > 2 * words]
    return [" ".join(r.split()[:words]) for r in long[:n]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--logits-bin", default=os.path.join(ROOT, "target", "release", "examples", "next_token_logits"))
    ap.add_argument("--prompts", type=int, default=5)
    ap.add_argument("--words", type=int, default=12)
    ap.add_argument("--new-tokens", type=int, default=30)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    torch.set_num_threads(2)

    texts = prompts(args.prompts, args.words)
    out = subprocess.run([args.logits_bin, args.model, *texts], check=True, capture_output=True, text=True).stdout
    ours = [json.loads(line) for line in out.splitlines()]

    tok = transformers.AutoTokenizer.from_pretrained(args.model)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    worst, same_ids, same_argmax, continuations = 0.0, True, 0, []
    for text, o in zip(texts, ours):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        same_ids &= ids == o["input_ids"]
        with torch.no_grad():
            theirs = model(torch.tensor([ids])).logits[0, -1]
            greedy = model.generate(
                torch.tensor([ids]), max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tok.eos_token_id
            )
        mine = torch.tensor(o["logits"])
        worst = max(worst, (mine - theirs).abs().max().item())
        same_argmax += int(mine.argmax().item() == theirs.argmax().item())
        continuations.append(tok.decode(greedy[0], skip_special_tokens=True))
    report = {
        "transformers": transformers.__version__,
        "model_class": type(model).__name__,
        "prompts": len(texts),
        "same_input_ids": same_ids,
        "max_abs_logit_diff": worst,
        "same_argmax": f"{same_argmax}/{len(texts)}",
        "greedy_continuations": continuations,
    }
    print(json.dumps(report, indent=1))
    sys.exit(0 if same_ids and worst < args.tol else 1)


if __name__ == "__main__":
    main()
