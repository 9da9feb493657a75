#!/usr/bin/env python3
"""Training-step references for the Rust Trainer: losses and gradients of one backward (full fine-tuning and LoRA in
PEFT's format), five optimizer steps (AdamW + linear warmup schedule + gradient clipping, as transformers' Trainer
does them), SGD with momentum, and the learning-rate schedules, on the tiny checkpoints already committed.

    /work/venv-ref/bin/pip install -r scripts/requirements-reference.txt       # transformers 5.24.0, peft 0.21.2
    nice -n 10 /work/venv-ref/bin/python scripts/make_training_refs.py

Made with torch 2.15.0 (CPU, one thread, float32), transformers 5.24.0, peft 0.21.2, safetensors 0.8.0 (versions also
in every reference.json). Reruns give byte-identical files. Takes under a minute.

Models (read only, never rewritten): tests/fixtures/encoders/tiny/bert-seq-cls (BertForSequenceClassification,
3 labels), tests/fixtures/encoders/tiny/bert-token-cls (BertForTokenClassification, 7 BIO labels),
tests/fixtures/causal_lm/tiny/qwen2 (Qwen2ForCausalLM, tie_word_embeddings=True, QKV biases) and
tests/fixtures/causal_lm/tiny/llama (LlamaForCausalLM, untied lm_head). Loaded with from_pretrained in float32 with
attn_implementation="eager"; every dropout set to 0 in the config (BERT: hidden_dropout_prob,
attention_probs_dropout_prob, classifier_dropout; the LMs' attention_dropout is already 0.0), then model.train():
with dropout 0, train mode computes exactly what eval mode does, so every number here is deterministic.

Batches (3 rows of different lengths, right padding, recorded in reference.json["batch"]):
  bert-seq-cls    3 texts through the fixture's own tokenizer (padding=True: input_ids, token_type_ids, all 0,
                  attention_mask); labels = one class id per row.
  bert-token-cls  3 pre-split word lists (is_split_into_words=True); labels on the FIRST sub-token of each word,
                  -100 on later sub-tokens (##don of london, ##gle of google, ##soft of microsoft), on [CLS]/[SEP] and on
                  padding, as transformers' token-classification examples do (label_all_tokens=False).
  qwen2, llama    token ids drawn from torch.Generator(BATCH_SEED) uniform over [3, 256), lengths 12, 9, 5; padding
                  id 0 (the configs have no pad_token_id; any id works, padded keys are masked); labels = input_ids
                  with -100 where attention_mask is 0. No position_ids are passed (right padding, so positions are
                  0..len-1 for every real token). transformers shifts internally: the logits at position t are scored
                  against labels[t + 1].

Writes tests/fixtures/training/:
  schedules.json          learning rates of transformers' get_scheduler(name, AdamW(lr 1e-3), warmup, total) for
                          linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup and
                          inverse_sqrt; for (warmup 3, total 10) and for "warmup ratio 0.1 of 50 steps" (transformers
                          5.24 has no warmup_ratio argument any more: TrainingArguments(warmup_steps=0.1) means a
                          ratio, get_warmup_steps(50) = ceil(50 * 0.1) = 5). lrs[i] is the lr used by optimizer step i
                          (i = 0 .. total-1, read with get_last_lr() before step i), plus after_total = the value after
                          `total` scheduler steps.
  <model>/reference.json  see REFERENCE LAYOUT below.
  <model>/full_grads.safetensors    gradient of every parameter after one backward of the batch loss, keyed by
                          model.named_parameters() names (transformers' names = checkpoint names), float32.
  <model>/lora_adapter/   the STARTING LoRA adapter, written by PeftModel.save_pretrained: adapter_config.json and
                          adapter_model.safetensors (PEFT's own names). base_model_name_or_path is set to the repo-
                          relative fixture path; peft's generated README.md (a model-card template) is removed.
  <model>/lora_grads.safetensors    gradients of the trainable parameters of the PeftModel after one backward,
                          keyed by PeftModel.named_parameters() names (reference.json["lora"]["name_map"] maps each to
                          its key in adapter_model.safetensors).
  bert-seq-cls/full_final_params.safetensors    all parameters after the 5 AdamW steps of full fine-tuning.
  bert-seq-cls/lora_adapter_final/              the LoRA adapter after its 5 AdamW steps (save_pretrained again).

REFERENCE LAYOUT (<model>/reference.json; floats from float32 tensors are written with 9 significant digits, which
round-trips float32; lrs with 12):
  versions, model (fixture path, class, config overrides), batch (input_ids, attention_mask, token_type_ids for
  BERT, labels; texts / words for BERT)
  full     loss, logits (BERT only; the LMs' are [3][12][256]), per_token_loss where the loss is over tokens (the
           unreduced cross-entropy at each counted position, row by row, in order), n_loss_items (positions counted
           in the mean), grads_file, grad_norm (L2 norm over all gradients, as clip_grad_norm_ computes it),
           tied_weights (qwen2: lm_head.weight IS model.embed_tokens.weight, one Parameter; its one gradient is the
           sum of the embedding-lookup gradient and the output-projection gradient, checked here against an untied
           copy: tied_weights.check_max_abs_diff).
  lora     config (r, lora_alpha, lora_dropout, target_modules, task_type, modules_to_save as peft resolved it),
           scaling (= lora_alpha / r), lora_A init (peft's default: kaiming_uniform_(a=sqrt(5)) from torch's global
           RNG, torch.manual_seed(LORA_SEED) right before get_peft_model), lora_B re-init (peft zeroes lora_B, which
           zeroes lora_A's gradient: here every lora_B, in named_parameters order, is redrawn as
           LORA_B_STD * randn from torch.Generator(LORA_B_SEED)), loss, grads_file, grad_norm, trainable (names and
           shapes), name_map (peft parameter name -> adapter_model.safetensors key), adapter_dir.
  adamw    for "full" and "lora": 5 steps of torch.optim.AdamW(lr 1e-3, betas (0.9, 0.999), eps 1e-8) with
           transformers' get_linear_schedule_with_warmup(num_warmup_steps 2, num_training_steps 5) and
           torch.nn.utils.clip_grad_norm_(max_norm 1.0), on the same batch every step. Parameter groups as the Trainer
           builds them: weight_decay 0.01 for Trainer.get_decay_parameter_names(model) (minus frozen ones), 0.0 for the
           rest (biases and LayerNorm / RMSNorm weights; listed under no_decay). Each step: lr = get_last_lr() (the lr
           this step uses), forward, loss, backward, grad_norm = clip_grad_norm_(...) (the norm BEFORE clipping),
           optimizer.step(), scheduler.step(), zero_grad(set_to_none=True). steps: [{step, lr, loss, grad_norm}],
           final_loss: the loss of one more forward after step 5. Note step 0 runs with lr 0.0 (linear warmup starts at
           0): the parameters do not move (so steps 0 and 1 show the same loss), but AdamW's moments and its step
           counter do advance (the update of step 1 uses bias corrections 1 - beta**2).
           trainer_check: the same 5 steps through transformers.Trainer itself (TrainingArguments: the values above,
           optim "adamw_torch", train_sampling_strategy "sequential", per_device_train_batch_size 3, logging_steps 1,
           use_cpu) and the largest differences between its log_history (loss, grad_norm, learning_rate) and the
           manual loop, and between final parameters. Trainer's default optim in 5.24 with torch >= 2.8 is
           "adamw_torch_fused" (AdamW(fused=True)), which agrees to float rounding; adamw_torch is used so the
           comparison is with the exact same kernel.
  sgd      (bert-seq-cls only) torch.optim.SGD(all parameters, lr 0.05, momentum 0.9, dampening 0, weight_decay 0,
           nesterov False), 3 steps, no clipping, no schedule: losses before each step, grad norms, final_loss.
"""

import copy
import json
import math
import os
import shutil
import sys
import tempfile
from importlib.metadata import version

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoTokenizer,
    BertForSequenceClassification,
    BertForTokenClassification,
    LlamaForCausalLM,
    Qwen2ForCausalLM,
    Trainer,
    TrainingArguments,
    get_linear_schedule_with_warmup,
    get_scheduler,
)

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "training")

BATCH_SEED = 4242
LORA_SEED = 1234
LORA_B_SEED = 5678
LORA_B_STD = 0.1
LM_LENGTHS = [12, 9, 5]
LM_PAD_ID = 0

LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY = 0.01
WARMUP = 2
STEPS = 5
MAX_GRAD_NORM = 1.0
SGD_LR = 0.05
SGD_MOMENTUM = 0.9
SGD_STEPS = 3

SEQ_CLS_TEXTS = [
    ("the movie was great!", 2),
    ("i did not like the food, it was terrible.", 0),
    ("mary visited london with her friends last summer.", 1),
]
TOKEN_CLS_ROWS = [
    [("john", "B-PER"), ("smith", "I-PER"), ("lives", "O"), ("in", "O"), ("london", "B-LOC")],
    [("mary", "B-PER"), ("visited", "O"), ("paris", "B-LOC"), ("with", "O"), ("her", "O"), ("friends", "O"),
     ("from", "O"), ("google", "B-ORG")],
    [("microsoft", "B-ORG"), ("bought", "O"), ("coffee", "O")],
]

MODELS = {
    "bert-seq-cls": dict(path="tests/fixtures/encoders/tiny/bert-seq-cls", cls=BertForSequenceClassification,
                         kind="seq_cls", targets=["query", "value"], task_type="SEQ_CLS"),
    "bert-token-cls": dict(path="tests/fixtures/encoders/tiny/bert-token-cls", cls=BertForTokenClassification,
                           kind="token_cls", targets=["query", "value"], task_type="TOKEN_CLS"),
    "qwen2": dict(path="tests/fixtures/causal_lm/tiny/qwen2", cls=Qwen2ForCausalLM, kind="causal_lm",
                  targets=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    "llama": dict(path="tests/fixtures/causal_lm/tiny/llama", cls=LlamaForCausalLM, kind="causal_lm",
                  targets=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
}


def f32(x):
    if isinstance(x, torch.Tensor):
        x = x.detach().item()
    return float(f"{float(x):.9g}")


def f32list(t):
    if t.dim() == 0:
        return f32(t)
    return [f32list(x) for x in t]


def lr_round(x):
    return float(f"{float(x):.12g}")


# ---------------------------------------------------------------- models and batches

def load(spec):
    path = os.path.join(ROOT, spec["path"])
    config = AutoConfig.from_pretrained(path)
    overrides = {}
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "attention_dropout"):
        if hasattr(config, key):
            overrides[key] = 0.0
            setattr(config, key, 0.0)
    model = spec["cls"].from_pretrained(path, config=config, attn_implementation="eager", dtype=torch.float32)
    model.train()
    return model, overrides


def make_batch(name, spec):
    kind = spec["kind"]
    if kind == "seq_cls":
        tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, spec["path"]))
        enc = tok([t for t, _ in SEQ_CLS_TEXTS], padding=True, return_tensors="pt")
        batch = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
        batch["labels"] = torch.tensor([l for _, l in SEQ_CLS_TEXTS])
        extra = {"texts": [t for t, _ in SEQ_CLS_TEXTS]}
    elif kind == "token_cls":
        path = os.path.join(ROOT, spec["path"])
        tok = AutoTokenizer.from_pretrained(path)
        label2id = AutoConfig.from_pretrained(path).label2id
        words = [[w for w, _ in row] for row in TOKEN_CLS_ROWS]
        enc = tok(words, is_split_into_words=True, padding=True, return_tensors="pt")
        labels = torch.full_like(enc["input_ids"], -100)
        for i, row in enumerate(TOKEN_CLS_ROWS):
            prev = None
            for j, w in enumerate(enc.word_ids(i)):
                if w is not None and w != prev:
                    labels[i, j] = label2id[row[w][1]]
                prev = w
        batch = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
        batch["labels"] = labels
        extra = {"words": words, "word_labels": [[l for _, l in row] for row in TOKEN_CLS_ROWS],
                 "tokens": [tok.convert_ids_to_tokens(r) for r in enc["input_ids"].tolist()]}
    else:
        g = torch.Generator().manual_seed(BATCH_SEED)
        width = max(LM_LENGTHS)
        input_ids = torch.full((len(LM_LENGTHS), width), LM_PAD_ID, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for i, n in enumerate(LM_LENGTHS):
            input_ids[i, :n] = torch.randint(3, 256, (n,), generator=g)
            mask[i, :n] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
        extra = {"pad_id": LM_PAD_ID, "lengths": LM_LENGTHS}
    record = {k: v.tolist() for k, v in batch.items()}
    record.update(extra)
    return batch, record


def per_token_loss(kind, logits, labels):
    """The unreduced cross-entropy at every counted position, and the count (what the mean divides by)."""
    if kind == "seq_cls":
        return None
    logits = logits.float()
    if kind == "causal_lm":
        logits, labels = logits[:, :-1, :], labels[:, 1:]
    mask = labels != -100
    ce = torch.nn.functional.cross_entropy(logits[mask], labels[mask], reduction="none")
    return ce


def grad_norm_of(params):
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))


def save_tensors(path, tensors):
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, path, metadata={"format": "pt"})


# ---------------------------------------------------------------- a. full fine-tuning, one backward

def full_grads(name, spec, batch, out_dir):
    model, _ = load(spec)
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    named = list(model.named_parameters())
    missing = [n for n, p in named if p.grad is None]
    assert not missing, missing
    grads = {n: p.grad for n, p in named}
    save_tensors(os.path.join(out_dir, "full_grads.safetensors"), grads)
    ce = per_token_loss(spec["kind"], out.logits.detach(), batch["labels"])
    rec = {
        "loss": f32(out.loss),
        "grads_file": "full_grads.safetensors",
        "n_params": len(named),
        "grad_norm": f32(grad_norm_of([p for _, p in named])),
    }
    if spec["kind"] != "causal_lm":
        rec["logits"] = f32list(out.logits.detach())
    if ce is not None:
        rec["per_token_loss"] = f32list(ce)
        rec["n_loss_items"] = int(ce.numel())
        rec["loss_is_mean_of_per_token_loss"] = abs(ce.mean().item() - out.loss.item()) < 1e-6
    else:
        rec["n_loss_items"] = int(batch["labels"].numel())
    rec["tied_weights"] = tied_check(model, batch) if getattr(model.config, "tie_word_embeddings", False) and \
        hasattr(model, "lm_head") else None
    return rec


def tied_check(model, batch):
    """Qwen2 ties lm_head to embed_tokens: one Parameter, so backward sums both uses into one .grad."""
    emb = model.get_input_embeddings().weight
    assert model.lm_head.weight is emb
    tied = emb.grad.detach().clone()
    untied = copy.deepcopy(model)
    untied.lm_head.weight = torch.nn.Parameter(untied.get_input_embeddings().weight.detach().clone())
    untied.zero_grad(set_to_none=True)
    untied(**batch).loss.backward()
    g_emb = untied.get_input_embeddings().weight.grad
    g_head = untied.lm_head.weight.grad
    diff = float((tied - (g_emb + g_head)).abs().max())
    assert diff < 1e-6, diff
    return {
        "tied": True,
        "shared_parameter": "model.embed_tokens.weight (lm_head.weight is the same Parameter; named_parameters() and "
                            "full_grads.safetensors list it once, under the embedding's name)",
        "gradient": "sum of the input-embedding gradient and the output-projection (lm_head) gradient",
        "check_max_abs_diff": f32(diff),
        "embedding_part_norm": f32(torch.linalg.vector_norm(g_emb)),
        "lm_head_part_norm": f32(torch.linalg.vector_norm(g_head)),
    }


# ---------------------------------------------------------------- b. LoRA

def make_lora(spec):
    model, _ = load(spec)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(spec["targets"]),
                     task_type=spec["task_type"])
    torch.manual_seed(LORA_SEED)
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(LORA_B_SEED)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g) * LORA_B_STD)
    pm.peft_config["default"].base_model_name_or_path = spec["path"]
    pm.train()
    return pm


def save_adapter(pm, out):
    if os.path.exists(out):
        shutil.rmtree(out)
    pm.save_pretrained(out)
    readme = os.path.join(out, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    with open(os.path.join(out, "adapter_config.json")) as f:
        cfg = json.load(f)
    if isinstance(cfg.get("target_modules"), list):   # peft keeps a set: its order varies with PYTHONHASHSEED
        cfg["target_modules"] = sorted(cfg["target_modules"])
    with open(os.path.join(out, "adapter_config.json"), "w") as f:   # stable key order, trailing newline
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def name_map(pm):
    """peft parameter name -> key in adapter_model.safetensors, matched by tensor identity of the values."""
    state = get_peft_model_state_dict(pm)
    trainable = {n: p for n, p in pm.named_parameters() if p.requires_grad}
    mapping = {}
    for n, p in trainable.items():
        hits = [k for k, v in state.items() if v.data_ptr() == p.data_ptr()]
        assert len(hits) == 1, (n, hits)
        mapping[n] = hits[0]
    extra = sorted(set(state) - set(mapping.values()))
    return mapping, extra


def lora_grads(name, spec, batch, out_dir):
    pm = make_lora(spec)
    save_adapter(pm, os.path.join(out_dir, "lora_adapter"))
    pm.zero_grad(set_to_none=True)
    out = pm(**batch)
    out.loss.backward()
    trainable = [(n, p) for n, p in pm.named_parameters() if p.requires_grad]
    grads = {n: p.grad for n, p in trainable}
    assert all(g is not None for g in grads.values())
    assert all(float(g.abs().max()) > 0 for n, g in grads.items()), "a zero gradient"
    save_tensors(os.path.join(out_dir, "lora_grads.safetensors"), grads)
    mapping, extra = name_map(pm)
    cfg = pm.peft_config["default"]
    return {
        "config": {"r": cfg.r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout,
                   "target_modules": sorted(cfg.target_modules), "task_type": str(cfg.task_type),
                   "modules_to_save": sorted(cfg.modules_to_save) if cfg.modules_to_save else None,
                   "bias": cfg.bias, "use_rslora": cfg.use_rslora, "fan_in_fan_out": cfg.fan_in_fan_out},
        "scaling": cfg.lora_alpha / cfg.r,
        "forward": "W x + b + scaling * lora_B(lora_A(x)) on each target Linear (lora_A: [r, in], lora_B: [out, r], "
                   "no biases); modules_to_save: a trainable copy of the module replaces it in the forward, the "
                   "original stays frozen",
        "lora_A_init": f"peft default kaiming_uniform_(a=sqrt(5)), torch.manual_seed({LORA_SEED}) before "
                       "get_peft_model",
        "lora_B_init": f"redrawn: {LORA_B_STD} * torch.randn(shape, generator=torch.Generator().manual_seed("
                       f"{LORA_B_SEED})), one draw per lora_B in named_parameters order",
        "adapter_dir": "lora_adapter",
        "loss": f32(out.loss),
        "grads_file": "lora_grads.safetensors",
        "grad_norm": f32(grad_norm_of([p for _, p in trainable])),
        "trainable": {n: list(p.shape) for n, p in trainable},
        "n_trainable_params": int(sum(p.numel() for _, p in trainable)),
        "name_map": mapping,
        "adapter_keys_not_trainable": extra,
    }


# ---------------------------------------------------------------- c. optimizer trajectories

def adamw_groups(model):
    decay = set(Trainer.get_decay_parameter_names(None, model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if n in decay], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]
    return groups, [n for n, _ in named if n not in decay], named


def adamw_run(model, batch):
    groups, no_decay, named = adamw_groups(model)
    params = [p for _, p in named]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=WARMUP, num_training_steps=STEPS)
    steps = []
    for step in range(STEPS):
        lr = sched.get_last_lr()[0]
        loss = model(**batch).loss
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        steps.append({"step": step, "lr": lr_round(lr), "loss": f32(loss), "grad_norm": f32(gn)})
    with torch.no_grad():
        final_loss = model(**batch).loss
    return {"steps": steps, "final_loss": f32(final_loss), "no_decay": no_decay,
            "n_decay_tensors": len(groups[0]["params"]), "n_no_decay_tensors": len(groups[1]["params"])}


class RowDataset(torch.utils.data.Dataset):
    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return self.batch["input_ids"].shape[0]

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.batch.items()}


def trainer_run(model, batch):
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=batch["input_ids"].shape[0], max_steps=STEPS,
            learning_rate=LR, adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=EPS,
            weight_decay=WEIGHT_DECAY, lr_scheduler_type="linear", warmup_steps=WARMUP, max_grad_norm=MAX_GRAD_NORM,
            optim="adamw_torch", logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
            train_sampling_strategy="sequential", disable_tqdm=True, seed=0, dataloader_num_workers=0,
            log_level="error",
        )
        trainer = Trainer(model=model, args=args, train_dataset=RowDataset(batch))
        trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h and "grad_norm" in h]
    assert len(logs) == STEPS, trainer.state.log_history
    return logs


def compare_trainer(manual, logs, params_manual, params_trainer):
    diffs = {}
    for key in ("loss", "grad_norm", "lr"):
        src = "learning_rate" if key == "lr" else key
        diffs[key] = max(abs(m[key] - h[src]) for m, h in zip(manual["steps"], logs))
    diffs["final_params"] = max(float((params_manual[n] - params_trainer[n]).abs().max()) for n in params_manual)
    return {
        "log_history": [{"loss": f32(h["loss"]), "grad_norm": f32(h["grad_norm"]),
                         "learning_rate": lr_round(h["learning_rate"])} for h in logs],
        "max_abs_diff": {k: float(f"{v:.3g}") for k, v in diffs.items()},
        "note": "Trainer logs per step the loss of that step, grad_norm before clipping, and the lr that step used "
                "(5.24 reads it before scheduler.step())",
    }


def trajectories(name, spec, batch, out_dir):
    res = {}
    for mode in ("full", "lora"):
        model = make_lora(spec) if mode == "lora" else load(spec)[0]
        ref_model = copy.deepcopy(model)
        traj = adamw_run(model, batch)
        params_manual = {n: p.detach().clone() for n, p in model.named_parameters()}
        logs = trainer_run(ref_model, batch)
        params_trainer = {n: p.detach().clone() for n, p in ref_model.named_parameters()}
        traj["trainer_check"] = compare_trainer(traj, logs, params_manual, params_trainer)
        assert traj["trainer_check"]["max_abs_diff"]["loss"] < 1e-5, traj["trainer_check"]
        if name == "bert-seq-cls":
            if mode == "full":
                save_tensors(os.path.join(out_dir, "full_final_params.safetensors"), params_manual)
                traj["final_params_file"] = "full_final_params.safetensors"
            else:
                save_adapter(model, os.path.join(out_dir, "lora_adapter_final"))
                traj["final_adapter_dir"] = "lora_adapter_final"
        res[mode] = traj
    res["settings"] = {
        "optimizer": "torch.optim.AdamW", "lr": LR, "betas": list(BETAS), "eps": EPS, "weight_decay": WEIGHT_DECAY,
        "amsgrad": False, "schedule": "get_linear_schedule_with_warmup", "num_warmup_steps": WARMUP,
        "num_training_steps": STEPS, "max_grad_norm": MAX_GRAD_NORM,
        "weight_decay_groups": "Trainer.get_decay_parameter_names: every trainable parameter except those of "
                               "nn.LayerNorm modules and names matching bias|layernorm|rmsnorm|(^|.)norm($|.)|_norm($|.)",
    }
    return res


def sgd_run(spec, batch):
    model, _ = load(spec)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=SGD_LR, momentum=SGD_MOMENTUM)
    steps = []
    for step in range(SGD_STEPS):
        loss = model(**batch).loss
        loss.backward()
        steps.append({"step": step, "loss": f32(loss), "grad_norm": f32(grad_norm_of(params))})
        opt.step()
        opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        final = model(**batch).loss
    return {"settings": {"optimizer": "torch.optim.SGD", "lr": SGD_LR, "momentum": SGD_MOMENTUM, "dampening": 0.0,
                         "weight_decay": 0.0, "nesterov": False, "steps": SGD_STEPS, "clipping": None,
                         "update": "buf = g (first step), buf = momentum * buf + g after; p -= lr * buf"},
            "steps": steps, "final_loss": f32(final)}


# ---------------------------------------------------------------- schedules

def schedules():
    names = ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
             "inverse_sqrt"]
    with tempfile.TemporaryDirectory() as tmp:
        ratio_warmup = TrainingArguments(output_dir=tmp, warmup_steps=0.1, report_to="none").get_warmup_steps(50)
    cases = [{"id": "warmup3_total10", "warmup_steps": 3, "total": 10},
             {"id": "warmup_ratio0.1_total50", "warmup_ratio": 0.1, "warmup_steps": ratio_warmup, "total": 50}]
    out = {"base_lr": LR, "cases": []}
    for case in cases:
        entry = dict(case, schedules={})
        for name in names:
            p = torch.nn.Parameter(torch.zeros(1))
            opt = torch.optim.AdamW([p], lr=LR)
            sched = get_scheduler(name, opt, num_warmup_steps=case["warmup_steps"],
                                  num_training_steps=case["total"])
            lrs = []
            for _ in range(case["total"]):
                lrs.append(lr_round(sched.get_last_lr()[0]))
                opt.step()
                sched.step()
            entry["schedules"][name] = {"lrs": lrs, "after_total": lr_round(sched.get_last_lr()[0])}
        out["cases"].append(entry)
    out["notes"] = {
        "lrs[i]": "the lr optimizer step i uses (get_last_lr() before step i); step 0 of every warmup schedule is 0",
        "linear": "lr * (i / warmup) during warmup, then lr * max(0, (total - i) / (total - warmup))",
        "cosine": "after warmup: lr * max(0, 0.5 * (1 + cos(pi * 2 * num_cycles * progress))), num_cycles 0.5, "
                  "progress = (i - warmup) / (total - warmup)",
        "cosine_with_restarts": "num_cycles 1: same as cosine here",
        "polynomial": "lr_end 1e-7, power 1.0: after warmup (lr - lr_end) * (1 - progress) ** power + lr_end; lr_end "
                      "from total on",
        "constant": "lr, no warmup (num_warmup_steps ignored)",
        "constant_with_warmup": "lr * i / warmup during warmup, then lr",
        "inverse_sqrt": "lr * i / warmup during warmup, then lr / sqrt((i + timescale - warmup) / timescale), "
                        "timescale = warmup (10_000 if warmup is 0); ignores total",
        "warmup_ratio": "transformers 5.24 TrainingArguments has no warmup_ratio: warmup_steps < 1 is a ratio, "
                        "get_warmup_steps(total) = ceil(total * warmup_steps)",
    }
    return out


# ---------------------------------------------------------------- main

def versions():
    return {k: version(k) for k in ("torch", "transformers", "peft", "safetensors", "accelerate", "numpy")}


def main():
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "schedules.json"), "w") as f:
        json.dump(dict(versions=versions(), **schedules()), f, indent=1)
        f.write("\n")
    only = sys.argv[1:] or list(MODELS)
    for name in only:
        spec = MODELS[name]
        out_dir = os.path.join(OUT_DIR, name)
        os.makedirs(out_dir, exist_ok=True)
        batch, batch_record = make_batch(name, spec)
        _, overrides = load(spec)
        ref = {
            "versions": versions(),
            "model": {"fixture": spec["path"], "class": spec["cls"].__name__, "dtype": "float32",
                      "attn_implementation": "eager", "config_overrides": overrides, "mode": "train (dropout 0)"},
            "batch": batch_record,
        }
        ref["full"] = full_grads(name, spec, batch, out_dir)
        ref["lora"] = lora_grads(name, spec, batch, out_dir)
        ref["adamw"] = trajectories(name, spec, batch, out_dir)
        if name == "bert-seq-cls":
            ref["sgd"] = sgd_run(spec, batch)
        with open(os.path.join(out_dir, "reference.json"), "w") as f:
            json.dump(ref, f, indent=1)
            f.write("\n")
        print(name, "loss", ref["full"]["loss"], "lora loss", ref["lora"]["loss"],
              "trainer diffs", ref["adamw"]["full"]["trainer_check"]["max_abs_diff"],
              ref["adamw"]["lora"]["trainer_check"]["max_abs_diff"])


if __name__ == "__main__":
    main()
