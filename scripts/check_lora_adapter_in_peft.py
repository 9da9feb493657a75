#!/usr/bin/env python3
"""Checks that LoRA adapters saved by ferroformers (ferro_nn::save_adapter) load in Python peft and give our logits.

    FERRO_LORA_EXPORT=/tmp/ferro-lora-export nice -n 10 cargo test --release -p ferro-train --test lora \\
        export_adapters_for_peft
    /work/venv-ref/bin/python scripts/check_lora_adapter_in_peft.py /tmp/ferro-lora-export

The Rust test writes, for each tiny model (bert-seq-cls, bert-token-cls, qwen2, llama), <dir>/<model>/adapter/ (our
adapter_config.json and adapter_model.safetensors, from a LoraConfig built in Rust, not PEFT's file: r 4, alpha 16,
targets query/value/output.dense or q_proj/v_proj/down_proj, the task's modules_to_save) after three SGD steps on the
reference batch from a new adapter (seed 11), and <dir>/<model>/logits.json (our logits on that batch, and how far
they are from the base model's, so a pass is not trivial).

Here each base model is loaded as make_training_refs.py loads it (float32, eager attention, dropout 0, eval mode),
wrapped with PeftModel.from_pretrained(base, <dir>/<model>/adapter), run on the same batch (BERT: input_ids,
token_type_ids, attention_mask; causal LMs: input_ids only, as the Rust side runs them: right padding under the
causal mask), and its logits compared with ours. Fails (exit 1) when any differs by 1e-4 or more. Also checks that
peft read every tensor of the file (no missing or unexpected keys) and that the trainable copy of the classifier
(modules_to_save) is what the forward uses.

Versions: torch 2.15.0, transformers 5.24.0, peft 0.21.2 (scripts/requirements-reference.txt).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from peft import PeftConfig, PeftModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

CLASSES = {
    "bert-seq-cls": AutoModelForSequenceClassification,
    "bert-token-cls": AutoModelForTokenClassification,
    "qwen2": AutoModelForCausalLM,
    "llama": AutoModelForCausalLM,
}


def load_base(model, path):
    config = AutoConfig.from_pretrained(path)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "attention_dropout"):
        if hasattr(config, key):
            setattr(config, key, 0.0)
    return CLASSES[model].from_pretrained(path, config=config, attn_implementation="eager", dtype=torch.float32)


def check(out_dir, model):
    with open(os.path.join(out_dir, model, "logits.json")) as f:
        rec = json.load(f)
    adapter = os.path.join(out_dir, model, "adapter")
    config = PeftConfig.from_pretrained(adapter)
    pm = PeftModel.from_pretrained(load_base(model, rec["base"]), adapter)
    pm.eval()
    # Every saved tensor was taken: compare the file with peft's own state dict of the loaded adapter.
    from peft.utils import get_peft_model_state_dict

    saved = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    state = get_peft_model_state_dict(pm)
    assert set(saved) == set(state), (sorted(set(saved) ^ set(state)))
    worst_tensor = max(float((saved[k] - state[k].float()).abs().max()) for k in saved)
    batch = rec["batch"]
    if model.startswith("bert"):
        inputs = {k: torch.tensor(batch[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}
    else:
        inputs = {"input_ids": torch.tensor(batch["input_ids"])}
    with torch.no_grad():
        logits = pm(**inputs).logits.float()
    ours = torch.tensor(rec["logits"]).reshape(rec["shape"])
    diff = float((logits - ours).abs().max())
    print(f"{model:15s} task {config.task_type:10s} targets {sorted(config.target_modules)} "
          f"modules_to_save {config.modules_to_save}: {len(saved)} tensors, max |ours - peft| logits {diff:.3g} "
          f"(the adapter moves the logits by up to {rec['base_logits_max_diff']:.3g}), tensors read back exactly: "
          f"{worst_tensor == 0.0}")
    return diff < 1e-4 and worst_tensor == 0.0


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    out_dir = sys.argv[1]
    ok = all([check(out_dir, m) for m in CLASSES])
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
