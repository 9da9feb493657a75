#!/usr/bin/env python3
"""Greedy-generation reference data for Qwen2.5-Coder-0.5B-Instruct (GGUF), from transformers itself.

    scripts/fetch_models.sh
    /work/venv-ref/bin/pip install -r scripts/requirements-reference.txt
    /work/venv-ref/bin/python scripts/make_causal_lm_refs.py

Writes tests/fixtures/causal_lm/qwen2.5-coder-0.5b-instruct.json.

The GGUF is loaded with AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=torch.float32):
transformers dequantizes every tensor to f32, so these are the logits of the *dequantized* weights
computed in f32 on CPU (eager attention).

Per case:
  messages         the chat (input to apply_chat_template(add_generation_prompt=True))
  input_ids        the tokenized prompt
  new_tokens       greedy continuation (max_new_tokens=32, do_sample=False, repetition_penalty=1.0),
                   stopping at eos_ids (the eos token, if emitted, is included as the last element)
  gaps             per generated step, raw logit[top1] - logit[top2]
  top2             per generated step, [[id1, logit1], [id2, logit2]] of the raw logits
  step0            for the first step (the prompt's last position): top-64 [id, logit] pairs (descending)
                   and logsumexp of the whole row
  forward_last     the same, from a single plain forward over input_ids (no generate); should equal step0
  max_abs_diff_step0_forward   max |step0 row - forward row| over the full vocab
"""

import hashlib
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "causal_lm")
MODELS_DIR = os.environ.get("FERRO_MODELS_DIR", os.path.expanduser("~/.cache/ferroformers/models"))
MODEL = "qwen2.5-coder-0.5b-instruct"
GGUF = MODEL + ".gguf"
MAX_NEW_TOKENS = 32
TOP_K = 64
LONG_PROMPT_TOKENS = 600


def r(x):
    return round(float(x), 6)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def long_user_message(tok):
    """~600 tokens: the head of scripts/make_tokenizer_refs.py, cut on a line boundary.

    The text is stored in the fixture (messages), so later edits of that file don't matter."""
    with open(os.path.join(ROOT, "scripts", "make_tokenizer_refs.py"), encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    prefix = "Review this Python script and list its three most important functions:\n\n```python\n"
    body = ""
    for line in lines:
        if len(tok.encode(prefix + body + line + "```", add_special_tokens=False)) > LONG_PROMPT_TOKENS:
            break
        body += line
    return prefix + body + "```"


def cases(tok):
    return [
        ("who_are_you", [{"role": "user", "content": "Who are you?"}]),
        (
            "system_coding",
            [
                {"role": "system", "content": "You are a senior Rust engineer. Answer with code only."},
                {"role": "user", "content": "Write a function that reverses the words in a &str and returns a String."},
            ],
        ),
        (
            "multi_turn",
            [
                {"role": "user", "content": "What is a closure in Python?"},
                {"role": "assistant", "content": "A closure is a function that captures variables from its enclosing scope."},
                {"role": "user", "content": "Show a tiny example with a counter."},
            ],
        ),
        ("chinese", [{"role": "user", "content": "用Python写一个快速排序函数，并简要解释它的时间复杂度。"}]),
        (
            "json_request",
            [
                {
                    "role": "user",
                    "content": 'Return only a JSON object with keys "name", "language" and "stars" '
                    "describing a popular open-source web framework. No prose.",
                }
            ],
        ),
        ("long_code_review", [{"role": "user", "content": long_user_message(tok)}]),
    ]


def top_summary(row):
    row = row.double()
    vals, ids = torch.topk(row, TOP_K)
    return {
        "top": [[int(i), r(v)] for i, v in zip(ids.tolist(), vals.tolist())],
        "logsumexp": r(torch.logsumexp(row, dim=-1)),
    }


def top2(row):
    v, i = torch.topk(row.double(), 2)
    return [[int(i[0]), r(v[0])], [int(i[1]), r(v[1])]]


def gap(row):
    v = torch.topk(row.double(), 2).values
    return float(v[0] - v[1])


def eos_ids_of(gc, tok):
    """The eos ids generate stops at: the generation config's, else the tokenizer's."""
    eos = gc.eos_token_id
    eos_ids = sorted(set(eos if isinstance(eos, list) else [eos])) if eos is not None else []
    return eos_ids or [tok.eos_token_id]


def greedy_case(model, tok, name, ids, eos_ids, pad_id, near_ties, max_new_tokens=None):
    """Greedy continuation of `ids` with raw-logit gaps, plus the last-position logits of one
    forward; appends steps whose top-2 gap is below 0.01 to `near_ties`."""
    max_new_tokens = max_new_tokens or MAX_NEW_TOKENS
    inp = torch.tensor([ids])
    with torch.no_grad():
        fwd = model(input_ids=inp, attention_mask=torch.ones_like(inp)).logits[0, -1].float()
        g = model.generate(
            inp,
            attention_mask=torch.ones_like(inp),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            repetition_penalty=1.0,
            eos_token_id=eos_ids,
            pad_token_id=pad_id,
            output_scores=True,
            output_logits=True,
            return_dict_in_generate=True,
        )
    new = [int(t) for t in g.sequences[0, len(ids):].tolist()]
    logits = [step[0].float() for step in g.logits]
    assert len(logits) == len(new), (len(logits), len(new))
    # greedy over raw logits must equal the chosen token (no processors active)
    for s, (row, t) in enumerate(zip(logits, new)):
        am = int(torch.argmax(row))
        if am != t:
            print(f"WARNING {name} step {s}: argmax {am} != token {t}", file=sys.stderr)
    gaps = [gap(row) for row in logits]
    for s, gv in enumerate(gaps):
        if gv < 0.01:
            near_ties.append({"case": name, "step": s, "gap": gv})
    diff = float((logits[0] - fwd).abs().max())
    print(f"{name}: prompt {len(ids)} tokens, {len(new)} new, min gap {min(gaps):.4g}, "
          f"step0-vs-forward {diff:.3g}: {tok.decode(new)!r}", file=sys.stderr)
    return {
        "input_ids": ids,
        "new_tokens": new,
        "new_text": tok.decode(new),
        "gaps": [r(x) for x in gaps],
        "top2": [top2(row) for row in logits],
        "step0": top_summary(logits[0]),
        "forward_last": top_summary(fwd),
        "max_abs_diff_step0_forward": diff,
    }


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    mdir = os.path.join(MODELS_DIR, MODEL)
    gguf_path = os.path.join(mdir, GGUF)
    if not os.path.exists(gguf_path):
        sys.exit(f"missing {gguf_path}; run scripts/fetch_models.sh")

    tok = AutoTokenizer.from_pretrained(mdir, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(mdir, gguf_file=GGUF, dtype=torch.float32)
    model.eval()
    gc = model.generation_config
    eos_ids = eos_ids_of(gc, tok)
    print("generation_config:", gc.to_diff_dict(), "eos_ids:", eos_ids, file=sys.stderr)

    out_cases = []
    near_ties = []
    for name, messages in cases(tok):
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        ids = [int(i) for i in ids]
        out_cases.append({"name": name, "messages": messages,
                          **greedy_case(model, tok, name, ids, eos_ids, eos_ids[0], near_ties)})

    doc = {
        "model": MODEL,
        "gguf_file": GGUF,
        "gguf_sha256": sha256(gguf_path),
        "dtype": "float32 (GGUF dequantized by transformers)",
        "attn_implementation": model.config._attn_implementation,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "python": sys.version.split()[0]},
        "generation": {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False, "repetition_penalty": 1.0,
                       "eos_ids": eos_ids, "model_generation_config": gc.to_diff_dict()},
        "top_k_recorded": TOP_K,
        "near_ties_below_0.01": near_ties,
        "cases": out_cases,
    }
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, MODEL + ".json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes); near ties: {near_ties}", file=sys.stderr)


if __name__ == "__main__":
    main()
