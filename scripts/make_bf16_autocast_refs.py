"""Reference data for bf16 autocast in training (tests/fixtures/training/<model>/bf16_autocast.json).

PyTorch's CPU autocast (`torch.autocast("cpu", dtype=torch.bfloat16)`, what transformers' Trainer does with
`bf16=True`) on the tiny causal checkpoints and the batch of scripts/make_training_refs.py
(tests/fixtures/training/<model>/reference.json): the loss of one forward pass and each parameter's gradient norm,
in f32 and under autocast. Run with the reference environment (scripts/requirements-reference.txt):

    /work/venv-ref/bin/python scripts/make_bf16_autocast_refs.py
"""
import json
import os

import torch
import transformers
from transformers import AutoConfig, LlamaForCausalLM, Qwen2ForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"qwen2": Qwen2ForCausalLM, "llama": LlamaForCausalLM}


def run(cls, path, batch, autocast):
    config = AutoConfig.from_pretrained(path)
    config.attention_dropout = 0.0
    model = cls.from_pretrained(path, config=config, attn_implementation="eager", dtype=torch.float32)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=batch["input_ids"]).logits
    logits = logits.float()[:, :-1, :]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    loss = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
    loss.backward()
    norms = {n: float(torch.linalg.vector_norm(p.grad)) for n, p in model.named_parameters() if p.grad is not None}
    return float(loss), norms


def main():
    torch.manual_seed(0)
    for name, cls in MODELS.items():
        ref = json.load(open(os.path.join(ROOT, f"tests/fixtures/training/{name}/reference.json")))
        batch = {k: torch.tensor(ref["batch"][k]) for k in ("input_ids", "labels")}
        path = os.path.join(ROOT, f"tests/fixtures/causal_lm/tiny/{name}")
        loss_f32, norms_f32 = run(cls, path, batch, False)
        loss_bf16, norms_bf16 = run(cls, path, batch, True)
        out = dict(
            versions={"torch": torch.__version__, "transformers": transformers.__version__},
            loss_f32=loss_f32, loss_bf16=loss_bf16, grad_norms_f32=norms_f32, grad_norms_bf16=norms_bf16,
        )
        with open(os.path.join(ROOT, f"tests/fixtures/training/{name}/bf16_autocast.json"), "w") as f:
            json.dump(out, f, indent=1, sort_keys=True)
        print(name, "loss f32", loss_f32, "bf16", loss_bf16)


if __name__ == "__main__":
    main()
