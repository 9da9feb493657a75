#!/usr/bin/env python3
"""Checks that a classifier fine-tuned by `ferro train` loads in Python transformers and predicts what
`ferro pipeline text-classification` predicts.

    /work/venv-ref/bin/python scripts/check_finetuned_in_transformers.py \
        --model /tmp/ferro-sentiment-minilm --data tests/fixtures/training/sentiment/test.jsonl \
        --ferro target/release/ferro

Loads the saved folder with AutoTokenizer + AutoModelForSequenceClassification (transformers 5.24, float32,
CPU) and runs transformers' own `pipeline("text-classification", top_k=None)` over the `text` of every line
of --data; runs `ferro pipeline text-classification --top-k all --file DATA` on the same folder; compares,
per example, the label order and every score (max abs difference reported, fails above --tol, default 1e-4);
and prints both accuracies against the `label` column (ids, or names from the model's id2label). Prints one
JSON object; exit status 1 when anything differs.
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--ferro", default="target/release/ferro")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = [json.loads(line) for line in open(args.data, encoding="utf-8") if line.strip()]
    texts = [r["text"] for r in rows]
    tok = transformers.AutoTokenizer.from_pretrained(args.model)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    pipe = transformers.pipeline("text-classification", model=model, tokenizer=tok, top_k=None, device="cpu")
    theirs = pipe(texts, batch_size=32, truncation=True)

    out = subprocess.run(
        [args.ferro, "pipeline", "text-classification", "--model", args.model, "--top-k", "all", "--truncation",
         "--file", args.data],
        check=True, capture_output=True, text=True,
    ).stdout
    ours = [json.loads(line) for line in out.splitlines()]

    id2label = model.config.id2label
    def gold(r):
        label = r["label"]
        return id2label[label] if isinstance(label, int) else label

    worst, label_mismatch = 0.0, 0
    for a, b in zip(ours, theirs):
        if [x["label"] for x in a] != [x["label"] for x in b]:
            label_mismatch += 1
        sb = {x["label"]: x["score"] for x in b}
        for x in a:
            worst = max(worst, abs(x["score"] - sb[x["label"]]))
    acc = lambda preds: sum(p[0]["label"] == gold(r) for p, r in zip(preds, rows)) / len(rows)  # noqa: E731
    report = {
        "examples": len(rows),
        "transformers": transformers.__version__,
        "same_count": len(ours) == len(theirs),
        "label_order_mismatches": label_mismatch,
        "max_abs_score_diff": worst,
        "accuracy_ferro": acc(ours),
        "accuracy_transformers": acc(theirs),
    }
    print(json.dumps(report))
    ok = report["same_count"] and label_mismatch == 0 and worst <= args.tol
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
