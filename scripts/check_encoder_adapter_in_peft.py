#!/usr/bin/env python3
"""Checks that a LoRA adapter trained by `ferro train` on an encoder classifier loads in Python peft and scores the
evaluation set as `ferro eval --adapter` does.

    ferro train --config examples/train/lora-sentiment-minilm.toml
    /work/venv-ref/bin/python scripts/check_encoder_adapter_in_peft.py \
        --config examples/train/lora-sentiment-minilm.toml --adapter /tmp/ferro-lora-sentiment-minilm

Reads the `ferro train` config (base model, labels, max_length, eval_file, text/label columns); loads the base with
AutoModelForSequenceClassification (num_labels and id2label from the config, float32, eval mode: dropout off), wraps
it with PeftModel.from_pretrained(adapter) (the head comes from the adapter's modules_to_save), and computes the
accuracy and the mean cross-entropy over the evaluation examples (each truncated to max_length, as ferro
tokenizes them). Runs `ferro eval --config CONFIG --adapter ADAPTER` and compares: the same accuracy and
eval_loss within --tol (default 1e-4). Also reports how far the adapter moves the loss from the base model's with
the same head, so a pass is not trivial. Prints one JSON object; exit status 1 when anything differs.

Versions: torch 2.15.0, transformers 5.24.0, peft 0.21.2 (scripts/requirements-reference.txt).
"""

import argparse
import json
import os
import subprocess
import sys
import tomllib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import PeftModel  # noqa: E402


def scores(model, tok, texts, gold, max_length):
    """Accuracy and mean cross-entropy, in batches of 32."""
    losses, right = [], 0
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            enc = tok(texts[i:i + 32], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            logits = model(**enc).logits
            y = torch.tensor(gold[i:i + 32])
            losses.extend(torch.nn.functional.cross_entropy(logits, y, reduction="none").tolist())
            right += int((logits.argmax(-1) == y).sum())
    return right / len(texts), sum(losses) / len(losses)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--ferro", default="target/release/ferro")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = tomllib.load(open(args.config, "rb"))
    base = os.path.expanduser(cfg["model"]["name_or_path"])
    labels = cfg["model"]["labels"]
    max_length = cfg["model"].get("max_length", 512)
    data = cfg["data"]
    rows = [json.loads(line) for line in open(data["eval_file"], encoding="utf-8") if line.strip()]
    texts = [r[data.get("text_column", "text")] for r in rows]
    gold = [r[data.get("label_column", "label")] for r in rows]
    gold = [g if isinstance(g, int) else labels.index(g) for g in gold]

    tok = transformers.AutoTokenizer.from_pretrained(base)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), dtype=torch.float32)
    model = PeftModel.from_pretrained(model, args.adapter)
    model.eval()
    acc, loss = scores(model, tok, texts, gold, max_length)
    with model.disable_adapter():
        _, base_loss = scores(model, tok, texts, gold, max_length)

    out = subprocess.run([args.ferro, "eval", "--config", args.config, "--adapter", args.adapter],
                         check=True, capture_output=True, text=True).stdout
    ours = json.loads(out)
    report = {
        "examples": len(rows),
        "versions": {"transformers": transformers.__version__, "peft": peft.__version__, "torch": torch.__version__},
        "accuracy_peft": acc,
        "accuracy_ferro": ours["eval_accuracy"],
        "eval_loss_peft": loss,
        "eval_loss_ferro": ours["eval_loss"],
        "eval_loss_diff": abs(loss - ours["eval_loss"]),
        "eval_loss_without_lora_peft": base_loss,
    }
    print(json.dumps(report))
    ok = abs(acc - ours["eval_accuracy"]) < 1e-9 and report["eval_loss_diff"] <= args.tol
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
