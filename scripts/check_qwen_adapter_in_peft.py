#!/usr/bin/env python3
"""Checks that a LoRA adapter trained by `ferro train` on Qwen2.5-Coder-0.5B-Instruct loads in Python peft and gives
our logits.

    ferro train --config examples/train/lora-qwen-chat.toml          # dequantized base -> /tmp/ferro-lora-qwen
    cargo build --release -p ferro-train --example adapter_logits
    /work/venv-ref/bin/python scripts/check_qwen_adapter_in_peft.py --adapter /tmp/ferro-lora-qwen [--quantized]

transformers (5.24, float32) loads the GGUF dequantized (`from_pretrained(dir, gguf_file=...)`), peft (0.21.2) wraps it
with PeftModel.from_pretrained(base, adapter); both sides take the same chat prompt through Qwen's template and give
next-token logits at the last position. Ours come from target/release/examples/adapter_logits (with --dequantize
unless --quantized: the QLoRA case keeps the GGUF quantized, so its base logits differ from the f32 ones by the
quantization itself). Prints max |diff| over the vocabulary for the adapter model and for the base alone (how far
the adapter moved the logits), and the top tokens; exit 1 when the adapter models differ by --tol (1e-3) or more.
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
GGUF = os.path.expanduser("~/.cache/ferroformers/models/qwen2.5-coder-0.5b-instruct/qwen2.5-coder-0.5b-instruct.gguf")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--gguf", default=GGUF)
    ap.add_argument("--prompt", default="Write a Python function to add 3 to a number.")
    ap.add_argument("--quantized", action="store_true")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/examples/adapter_logits"))
    a = ap.parse_args()
    torch.set_num_threads(2)

    cmd = [a.bin, a.gguf, a.adapter, a.prompt] + ([] if a.quantized else ["--dequantize"])
    ours = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    ids = torch.tensor([ours["input_ids"]])
    base = AutoModelForCausalLM.from_pretrained(os.path.dirname(a.gguf), gguf_file=os.path.basename(a.gguf),
                                                dtype=torch.float32)
    base.eval()
    with torch.no_grad():
        base_logits = base(ids).logits[0, -1].clone()
    peft_model = PeftModel.from_pretrained(base, a.adapter)
    peft_model.eval()
    with torch.no_grad():
        theirs = peft_model(ids).logits[0, -1]
    mine = torch.tensor(ours["logits"])
    report = {
        "prompt_tokens": ids.shape[1],
        "max_abs_diff_adapter_models": (mine - theirs).abs().max().item(),
        "max_abs_diff_adapter_vs_base": (theirs - base_logits).abs().max().item(),
        "top5_ours": mine.topk(5).indices.tolist(),
        "top5_peft": theirs.topk(5).indices.tolist(),
        "quantized_base": a.quantized,
    }
    print(json.dumps(report))
    sys.exit(0 if report["max_abs_diff_adapter_models"] < a.tol or a.quantized else 1)


if __name__ == "__main__":
    main()
