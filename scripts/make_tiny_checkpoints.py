#!/usr/bin/env python3
"""Tiny random decoder-only checkpoints (Llama, Llama with llama3 RoPE scaling, Qwen2, Qwen2 with YaRN RoPE
scaling, Mistral) plus
transformers' own logits and greedy continuations, as fixtures for the Rust tests.

    /work/venv-ref/bin/pip install -r scripts/requirements-reference.txt
    /work/venv-ref/bin/python scripts/make_tiny_checkpoints.py

Writes tests/fixtures/causal_lm/tiny/<name>/:
  config.json, generation_config.json, model.safetensors   (model.save_pretrained(safe_serialization=True))
  reference.json
      prompt_ids        20 token ids (torch.Generator seeded with PROMPT_SEED, uniform over [3, vocab))
      logits            [20][vocab] logits of one forward over prompt_ids (rounded to 6 decimals)
      greedy_new_tokens 20 greedy tokens (do_sample=False, eos_token_id=None, so it never stops early)
      greedy_gaps       per step, raw logit[top1] - logit[top2]
      greedy_check      the same continuation recomputed as an argmax loop of full forwards (no KV cache)
      full_logits_last  logits of one full forward over prompt+continuation (40 positions) at the last position
      attention_factor  (yarn only)        transformers' rotary_emb.attention_scaling (cos/sin multiplier)
      inv_freq          (yarn only)        transformers' rotary_emb.inv_freq buffer, [head_dim / 2]

All models: 2 layers, hidden 64, intermediate 128, 4 heads (head_dim 16), 2 KV heads (GQA), vocab 256,
max_position_embeddings 128, f32, eager attention. Weights are NOT transformers' init (std 0.02 would
give near-uniform logits and fragile greedy ties): every parameter is redrawn from torch.Generator(seed)
with fan-in scaling, norm weights around 1, biases ~0.1, so logits spread over a few units; the seed is the
first of base, base+100, ... whose greedy continuation has every top-2 gap >= MIN_GAP (0.05), recorded as
weight_seed in reference.json.
  llama     default RoPE, theta 10000, untied lm_head
  llama3    Llama with rope_parameters of type llama3 (factor 8, low 1, high 4, original_max 32) so head_dim 16's
            frequencies hit all three branches (unchanged / smoothed / divided by factor)
  qwen2     QKV biases, theta 1e6, rms eps 1e-6, tie_word_embeddings=True (no lm_head.weight stored),
            like Qwen2.5-0.5B
  qwen2_yarn  qwen2's shape with rope_parameters of type yarn (theta 10000, factor 4, original_max 32, so the
            40-position forward goes past 32 and head_dim 16's frequencies hit the extrapolated / ramped /
            interpolated ranges; attention_factor 0.1 ln 4 + 1), tie_word_embeddings=False (lm_head stored)
  mistral   sliding_window=8 (transformers: query i sees keys j with i-8 < j <= i), theta 10000
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "causal_lm", "tiny")
PROMPT_LEN = 20
NEW_TOKENS = 20
PROMPT_SEED = 1234
BOS, EOS = 1, 2
MIN_GAP = 0.05

COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    hidden_act="silu",
    bos_token_id=BOS,
    eos_token_id=EOS,
    pad_token_id=None,
    use_cache=True,
)


def specs():
    return [
        ("llama", LlamaConfig, LlamaForCausalLM, 0,
         dict(rms_norm_eps=1e-5, tie_word_embeddings=False,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
        ("llama3", LlamaConfig, LlamaForCausalLM, 1,
         dict(rms_norm_eps=1e-5, tie_word_embeddings=False,
              rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 32})),
        ("qwen2", Qwen2Config, Qwen2ForCausalLM, 2,
         dict(rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
              rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
        ("mistral", MistralConfig, MistralForCausalLM, 3,
         dict(rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=8,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
        # base seed 5: 4 is make_gemma3_refs.py's tiny gemma3
        ("qwen2_yarn", Qwen2Config, Qwen2ForCausalLM, 5,
         dict(rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False,
              rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                               "original_max_position_embeddings": 32})),
    ]


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                # tied: the same matrix is the lm_head, so keep logits (hidden rms ~1, dim 64) a few units wide
                std = 0.25 if model.config.tie_word_embeddings else 1.0
                p.copy_(std * torch.randn(p.shape, generator=g))
            elif name == "lm_head.weight":
                p.copy_(2.0 * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            else:  # Linear [out, in]
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def r(x):
    return round(float(x), 6)


def gap(row):
    v = torch.topk(row.double(), 2).values
    return float(v[0] - v[1])


def build(cfg_cls, model_cls, seed, extra):
    torch.manual_seed(seed)
    cfg = cfg_cls(**COMMON, **extra)
    cfg._attn_implementation = "eager"
    model = model_cls(cfg).to(torch.float32)
    randomize(model, seed)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.eval()
    model.generation_config = GenerationConfig(bos_token_id=BOS, eos_token_id=EOS)
    return model


def greedy(model, prompt, bos=BOS):
    inp = torch.tensor([prompt])
    with torch.no_grad():
        gen = model.generate(
            inp,
            attention_mask=torch.ones_like(inp),
            generation_config=GenerationConfig(
                do_sample=False, num_beams=1, max_new_tokens=NEW_TOKENS, eos_token_id=None,
                pad_token_id=None, bos_token_id=bos, repetition_penalty=1.0,
                output_logits=True, return_dict_in_generate=True,
            ),
        )
    new = gen.sequences[0, len(prompt):].tolist()
    assert len(new) == NEW_TOKENS, len(new)
    return new, [gap(s[0]) for s in gen.logits]


def main():
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(PROMPT_SEED)
    prompt = torch.randint(3, COMMON["vocab_size"], (PROMPT_LEN,), generator=g).tolist()
    for name, cfg_cls, model_cls, seed, extra in specs():
        # weight seed: the first of seed, seed+100, seed+200, ... whose greedy continuation has no
        # near-tie (every top-2 gap >= MIN_GAP), so f32 reimplementations must reproduce it exactly
        while True:
            model = build(cfg_cls, model_cls, seed, extra)
            new, gaps = greedy(model, prompt)
            if min(gaps) >= MIN_GAP:
                break
            print(f"{name}: seed {seed} min gap {min(gaps):.4g} < {MIN_GAP}, next seed", file=sys.stderr)
            seed += 100

        out = os.path.join(OUT_DIR, name)
        os.makedirs(out, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)

        inp = torch.tensor([prompt])
        with torch.no_grad():
            logits = model(input_ids=inp).logits[0].float()
            # cache-free check: argmax over full forwards
            seq = list(prompt)
            for _ in range(NEW_TOKENS):
                seq.append(int(model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1].argmax()))
            check = seq[PROMPT_LEN:]
            full = model(input_ids=torch.tensor([prompt + new]), use_cache=False).logits[0, -1].float()
        if check != new:
            print(f"WARNING {name}: cached greedy {new} != uncached {check}", file=sys.stderr)

        ref = {
            "model": name,
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
            "dtype": "float32",
            "attn_implementation": "eager",
            "prompt_seed": PROMPT_SEED,
            "weight_seed": seed,
            "prompt_ids": prompt,
            "logits": [[r(x) for x in row] for row in logits.tolist()],
            "greedy_new_tokens": new,
            "greedy_gaps": [r(x) for x in gaps],
            "greedy_check": check,
            "full_logits_last": [r(x) for x in full.tolist()],
        }
        if model.config.rope_parameters["rope_type"] == "yarn":
            rot = model.model.rotary_emb
            ref["attention_factor"] = float(rot.attention_scaling)
            ref["inv_freq"] = [float(x) for x in rot.inv_freq.float().tolist()]
        with open(os.path.join(out, "reference.json"), "w") as f:
            json.dump(ref, f, separators=(",", ":"))
            f.write("\n")
        sizes = {fn: os.path.getsize(os.path.join(out, fn)) for fn in sorted(os.listdir(out))}
        print(f"{name}: new {new} min gap {min(gaps):.4g} prompt-logit range "
              f"[{logits.min():.3f}, {logits.max():.3f}] sizes {sizes}", file=sys.stderr)


if __name__ == "__main__":
    main()
