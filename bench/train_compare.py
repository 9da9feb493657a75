#!/usr/bin/env python3
"""Fine-tuning step time: `ferro train` against transformers' Trainer on the same model, data, batch size and threads,
measured in the same run (interleaved rounds, medians).

    /work/venv-ref/bin/python bench/train_compare.py --steps 10 --rounds 2 --threads 2          # MiniLM classifier
    /work/venv-ref/bin/python bench/train_compare.py --task lora-qwen --steps 4 --rounds 2      # LoRA on Qwen 0.5B

--task lora-qwen: LoRA (r 8, alpha 16, q_proj/v_proj, dropout 0) on Qwen2.5-Coder-0.5B-Instruct dequantized to f32 on
both sides (transformers' GGUF loader; ferro `dequantize = true`), the committed chat set
(tests/fixtures/training/chat/train.jsonl) through the chat template, only the assistant's turns scored, max_length
128, batch --batch-size (default 4 for this task), lr 2e-4; transformers with peft's get_peft_model.

Task: sequence classification (2 labels) on the first --examples lines of tests/fixtures/training/sentiment/
train.jsonl, max_length 128, batch --batch-size, AdamW lr 5e-5, linear schedule, no evaluation or saving during the
timed steps. transformers: AutoModelForSequenceClassification + Trainer (use_cpu, torch.set_num_threads(threads),
dataloader_num_workers 0, report_to none); its `train_runtime` metric. ferro: a generated train.toml run by
`ferro train` (RAYON_NUM_THREADS=threads); its `train_runtime` (the same span: the training loop, model loading and
the final save excluded). Differences to know: transformers' BERT applies dropout 0.1 in training, ferro's Trainer
does not yet; transformers' Trainer pads batches the same way (DataCollatorWithPadding). Writes a JSON report
(--out) and prints it; ratio > 1 means ferro's steps are faster.
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def run_transformers(model, texts, labels, steps, batch, threads, seed):
    import torch
    import transformers
    torch.set_num_threads(threads)
    tok = transformers.AutoTokenizer.from_pretrained(model)
    m = transformers.AutoModelForSequenceClassification.from_pretrained(model, num_labels=2, dtype=torch.float32)
    enc = [dict(tok(t, truncation=True, max_length=128), labels=l) for t, l in zip(texts, labels)]

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(enc)

        def __getitem__(self, i):
            return enc[i]

    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=5e-5,
            logging_steps=steps, save_strategy="no", report_to=[], use_cpu=True, seed=seed,
            dataloader_num_workers=0, disable_tqdm=True,
        )
        trainer = transformers.Trainer(
            model=m, args=args, train_dataset=DS(),
            data_collator=transformers.DataCollatorWithPadding(tok),
        )
        out = trainer.train()
    return out.metrics["train_runtime"]


GGUF = os.path.expanduser("~/.cache/ferroformers/models/qwen2.5-coder-0.5b-instruct/qwen2.5-coder-0.5b-instruct.gguf")
CHAT = os.path.join(ROOT, "tests/fixtures/training/chat/train.jsonl")


def run_transformers_lora(steps, batch, threads, seed):
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    torch.set_num_threads(threads)
    d, f = os.path.dirname(GGUF), os.path.basename(GGUF)
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
    m = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    # The GGUF loader dequantizes to f32 but leaves a GGUF quantizer marker, which Trainer
    # refuses to train; the weights are plain f32 tensors, so drop the marker as the
    # quantizer's own remove_quantization_config does.
    m.hf_quantizer.remove_quantization_config(m)
    m = get_peft_model(m, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                     task_type="CAUSAL_LM"))
    rows = [json.loads(l)["messages"] for l in open(CHAT)]
    enc = []
    for msgs in rows:
        def ids_of(messages, prompt):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
            return tok(text, add_special_tokens=False)["input_ids"]
        ids = ids_of(msgs, False)
        prefix = ids_of(msgs[:1], True)
        labels = [-100] * len(prefix) + ids[len(prefix):]
        enc.append({"input_ids": ids[:128], "labels": labels[:128]})
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def collate(batch_rows):
        w = max(len(r["input_ids"]) for r in batch_rows)
        return {
            "input_ids": torch.tensor([r["input_ids"] + [pad] * (w - len(r["input_ids"])) for r in batch_rows]),
            "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (w - len(r["input_ids"]))
                                            for r in batch_rows]),
            "labels": torch.tensor([r["labels"] + [-100] * (w - len(r["labels"])) for r in batch_rows]),
        }

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(enc)

        def __getitem__(self, i):
            return enc[i]

    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=2e-4,
            logging_steps=steps, save_strategy="no", report_to=[], use_cpu=True, seed=seed,
            dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
        )
        trainer = transformers.Trainer(model=m, args=args, train_dataset=DS(), data_collator=collate)
        return trainer.train().metrics["train_runtime"]


def run_ferro_lora(ferro, steps, batch, threads, seed):
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "train.toml")
        with open(cfg, "w") as f:
            f.write(
                f'[model]\nname_or_path = "{GGUF}"\ntask = "causal-lm"\nmax_length = 128\ndequantize = true\n'
                f'[data]\ntrain_file = "{CHAT}"\ntext_column = "messages"\n'
                '[lora]\ntask_type = "CAUSAL_LM"\nr = 8\nlora_alpha = 16\nlora_dropout = 0.0\n'
                'target_modules = ["q_proj", "v_proj"]\n'
                f'[training]\noutput_dir = "{d}/out"\nmax_steps = {steps}\nper_device_train_batch_size = {batch}\n'
                f"learning_rate = 2e-4\nlogging_steps = {steps}\nsave_steps = {steps + 1}\nseed = {seed}\n"
                "disable_tqdm = true\n"
            )
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        out = subprocess.run([ferro, "train", "--config", cfg], check=True, capture_output=True, text=True, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])["train_runtime"]


def run_ferro(ferro, model, train_file, steps, batch, threads, seed):
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "train.toml")
        with open(cfg, "w") as f:
            f.write(
                f'[model]\nname_or_path = "{model}"\nmax_length = 128\nlabels = ["negative", "positive"]\n'
                f'[data]\ntrain_file = "{train_file}"\n'
                f'[training]\noutput_dir = "{d}/out"\nmax_steps = {steps}\nper_device_train_batch_size = {batch}\n'
                f"learning_rate = 5e-5\nlogging_steps = {steps}\nsave_steps = {steps + 1}\nseed = {seed}\n"
                "disable_tqdm = true\n"
            )
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        out = subprocess.run([ferro, "train", "--config", cfg], check=True, capture_output=True, text=True, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])["train_runtime"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/ferroformers/models/all-MiniLM-L6-v2"))
    ap.add_argument("--ferro", default=os.path.join(ROOT, "target/release/ferro"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--task", choices=["minilm-cls", "lora-qwen"], default="minilm-cls")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--examples", type=int, default=320)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.batch_size is None:
        a.batch_size = 4 if a.task == "lora-qwen" else 32
    if a.task == "lora-qwen":
        ferro_t, hf_t = [], []
        for _ in range(a.rounds):
            ferro_t.append(run_ferro_lora(a.ferro, a.steps, a.batch_size, a.threads, a.seed))
            hf_t.append(run_transformers_lora(a.steps, a.batch_size, a.threads, a.seed))
        return report(a, ferro_t, hf_t, "LoRA (r 8, q/v) on Qwen2.5-Coder-0.5B-Instruct, f32 base, chat SFT")
    rows = [json.loads(l) for l in open(os.path.join(ROOT, "tests/fixtures/training/sentiment/train.jsonl"))][: a.examples]
    with tempfile.TemporaryDirectory() as d:
        train_file = os.path.join(d, "train.jsonl")
        with open(train_file, "w") as f:
            f.write("\n".join(json.dumps(r) for r in rows) + "\n")
        ferro_t, hf_t = [], []
        for _ in range(a.rounds):
            ferro_t.append(run_ferro(a.ferro, a.model, train_file, a.steps, a.batch_size, a.threads, a.seed))
            hf_t.append(run_transformers(a.model, [r["text"] for r in rows], [r["label"] for r in rows], a.steps,
                                         a.batch_size, a.threads, a.seed))
    report(a, ferro_t, hf_t, "sequence classification fine-tuning, all-MiniLM-L6-v2, sentiment, max_length 128")


def report(a, ferro_t, hf_t, task):
    import torch
    import transformers
    result = {
        "task": task,
        "steps": a.steps, "batch_size": a.batch_size, "threads": a.threads, "rounds": a.rounds,
        "ferro_step_s": statistics.median(ferro_t) / a.steps,
        "transformers_step_s": statistics.median(hf_t) / a.steps,
        "ferro_runs_s": ferro_t, "transformers_runs_s": hf_t,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d"),
    }
    result["ratio_transformers_over_ferro"] = result["transformers_step_s"] / result["ferro_step_s"]
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
