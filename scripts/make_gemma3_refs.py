#!/usr/bin/env python3
"""Gemma 3 reference data from transformers itself: the 270M GGUF and a tiny random Gemma3ForCausalLM.

    scripts/fetch_models.sh
    /work/venv-ref/bin/pip install -r scripts/requirements-reference.txt
    /work/venv-ref/bin/python scripts/make_gemma3_refs.py            # both
    /work/venv-ref/bin/python scripts/make_gemma3_refs.py gguf|tiny  # one of them

1. tests/fixtures/causal_lm/gemma-3-270m.json  (same layout as make_causal_lm_refs.py's qwen fixture)
   gemma-3-270m-q4_k_m.gguf loaded with AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=float32):
   transformers dequantizes every tensor to f32 and, for gemma3, SUBTRACTS 1 from every "*norm.weight"
   (Gemma2TensorProcessor; llama.cpp stores the effective 1+w multiplier, Gemma3RMSNorm multiplies by 1+w).
   The model has no chat template, so each case is a plain-text prompt:
     prompt           the text; input_ids = tok(prompt)["input_ids"] (the tokenizer prepends <bos>)
     new_tokens       greedy continuation (max_new_tokens=16, do_sample=False, repetition_penalty=1.0),
                      stopping at eos_ids (the eos token, if emitted, is included as the last element)
     gaps, top2, step0, forward_last, max_abs_diff_step0_forward   as in the qwen fixture
   The header also holds model_class and text_config (model.config.to_dict() as built from the GGUF).

2. tests/fixtures/causal_lm/tiny/gemma3/  (same layout as make_tiny_checkpoints.py's tiny models)
   Gemma3TextConfig: 4 layers with layer_types sliding, sliding, sliding, full; hidden 64, head_dim 16,
   4 heads, 2 KV heads, intermediate 128 (gelu_pytorch_tanh), vocab 256, sliding_window 8,
   max_position_embeddings 128, query_pre_attn_scalar 16, rope theta 1e6 (full) / 1e4 (sliding),
   rms eps 1e-6, tie_word_embeddings=True, no softcapping (Gemma 3 defaults). Weights are redrawn from
   torch.Generator(seed) like make_tiny_checkpoints.py, except: norm weights are drawn around 0
   (Gemma3RMSNorm multiplies by 1+w), the final norm around 11 (multiplier ~12), and the tied embedding
   has std 0.03 (the input is scaled by sqrt(hidden)=8, the lm_head is not; with a larger embedding the
   residual is dominated by the current token and the tied head just repeats it). The seed is the first of base, base+100, ... whose greedy
   continuation has every top-2 gap >= MIN_GAP.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GenerationConfig,
)

# Shared with the Qwen reference and the other tiny checkpoints (same JSON formats).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_causal_lm_refs import eos_ids_of, greedy_case, r, sha256  # noqa: E402
from make_tiny_checkpoints import greedy  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "causal_lm")
MODELS_DIR = os.environ.get("FERRO_MODELS_DIR", os.path.expanduser("~/.cache/ferroformers/models"))
MODEL = "gemma-3-270m"
GGUF = "gemma-3-270m-q4_k_m.gguf"
MAX_NEW_TOKENS = 16
TOP_K = 64

CONFIG_KEYS = [
    "model_type", "architectures", "hidden_size", "intermediate_size", "num_hidden_layers", "head_dim",
    "num_attention_heads", "num_key_value_heads", "sliding_window", "layer_types", "rope_parameters",
    "rope_theta", "rope_local_base_freq", "rope_scaling", "query_pre_attn_scalar", "final_logit_softcapping",
    "attn_logit_softcapping", "rms_norm_eps", "tie_word_embeddings", "vocab_size", "max_position_embeddings",
    "hidden_activation", "bos_token_id", "eos_token_id", "pad_token_id", "use_bidirectional_attention",
]

PROMPTS = [
    ("capital", "The capital of France is"),
    ("fibonacci", "def fibonacci(n):"),
    (
        "paragraph",
        "The old lighthouse stood at the edge of the cliff for more than a century, guiding fishing boats "
        "safely back to the harbor through storms and fog. When the keeper finally retired, the village "
        "decided to turn the building into a small museum, and every summer children came to climb the "
        "narrow spiral stairs and look out at the",
    ),
]


def jsonable(x):
    return json.loads(json.dumps(x, default=str))


def config_summary(cfg):
    d = cfg.to_dict()
    out = {k: d[k] for k in CONFIG_KEYS if k in d}
    out["_attn_implementation"] = cfg._attn_implementation
    return jsonable(out)


# ----------------------------------------------------------------------------------------------- GGUF


def make_gguf():
    mdir = os.path.join(MODELS_DIR, MODEL)
    gguf_path = os.path.join(mdir, GGUF)
    if not os.path.exists(gguf_path):
        sys.exit(f"missing {gguf_path}; run scripts/fetch_models.sh")

    tok = AutoTokenizer.from_pretrained(mdir, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(mdir, gguf_file=GGUF, dtype=torch.float32)
    model.eval()
    text_cfg = model.config.get_text_config()
    gc = model.generation_config
    eos_ids = eos_ids_of(gc, tok)
    print("model:", type(model).__name__, "config:", config_summary(text_cfg), file=sys.stderr)
    print("generation_config:", gc.to_diff_dict(), "eos_ids:", eos_ids, file=sys.stderr)
    print("norm weight stats (after transformers' -1):",
          {n: (r(p.mean()), r(p.min()), r(p.max())) for n, p in model.named_parameters()
           if n.endswith("norm.weight") and ".layers.0." in n or n == "model.norm.weight"}, file=sys.stderr)

    out_cases = []
    near_ties = []
    for name, prompt in PROMPTS:
        ids = [int(i) for i in tok(prompt)["input_ids"]]
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0]
        out_cases.append({"name": name, "prompt": prompt,
                          **greedy_case(model, tok, name, ids, eos_ids, pad_id, near_ties, MAX_NEW_TOKENS)})

    doc = {
        "model": MODEL,
        "gguf_file": GGUF,
        "gguf_sha256": sha256(gguf_path),
        "model_class": type(model).__name__,
        "dtype": "float32 (GGUF dequantized by transformers; norm weights stored as 1+w, loaded as w)",
        "attn_implementation": text_cfg._attn_implementation,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "python": sys.version.split()[0]},
        "text_config": config_summary(text_cfg),
        "generation": {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False, "repetition_penalty": 1.0,
                       "eos_ids": eos_ids, "model_generation_config": jsonable(gc.to_diff_dict())},
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


# ----------------------------------------------------------------------------------------------- tiny

PROMPT_LEN = 20
NEW_TOKENS = 20
PROMPT_SEED = 1234
BOS, EOS = 1, 2
MIN_GAP = 0.05
TINY_BASE_SEED = 4

TINY_CONFIG = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=128,
    hidden_activation="gelu_pytorch_tanh",
    rms_norm_eps=1e-6,
    sliding_window=8,
    layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
    query_pre_attn_scalar=16,
    final_logit_softcapping=None,
    attn_logit_softcapping=None,
    rope_parameters={
        "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    },
    tie_word_embeddings=True,
    bos_token_id=BOS,
    eos_token_id=EOS,
    pad_token_id=0,
    use_cache=True,
)


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name == "model.norm.weight":
                # final norm: multiplier ~12, so the tied lm_head (std 0.03 rows) gives logits a few units wide
                p.copy_(11.0 + 0.5 * torch.randn(p.shape, generator=g))
            elif name.endswith("norm.weight"):
                # Gemma3RMSNorm scales by (1 + w): multipliers around 1 like the other tiny models
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                # scaled by sqrt(64)=8 on input (rms 0.24): small next to the 8 post-normed block outputs
                # (rms ~1 each), else the tied lm_head just predicts the current token again
                p.copy_(0.03 * torch.randn(p.shape, generator=g))
            elif name == "lm_head.weight":
                p.copy_(2.0 * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            else:  # Linear [out, in]
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def build_tiny(seed):
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(**TINY_CONFIG)
    cfg._attn_implementation = "eager"
    model = Gemma3ForCausalLM(cfg).to(torch.float32)
    randomize(model, seed)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.eval()
    model.generation_config = GenerationConfig(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=0)
    return model


def make_tiny():
    g = torch.Generator().manual_seed(PROMPT_SEED)
    prompt = torch.randint(3, TINY_CONFIG["vocab_size"], (PROMPT_LEN,), generator=g).tolist()
    seed = TINY_BASE_SEED
    while True:
        model = build_tiny(seed)
        new, gaps = greedy(model, prompt)
        if min(gaps) >= MIN_GAP:
            break
        print(f"gemma3: seed {seed} min gap {min(gaps):.4g} < {MIN_GAP}, next seed", file=sys.stderr)
        seed += 100
    print("tiny config:", config_summary(model.config), file=sys.stderr)

    out = os.path.join(OUT_DIR, "tiny", "gemma3")
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)

    inp = torch.tensor([prompt])
    with torch.no_grad():
        logits = model(input_ids=inp).logits[0].float()
        seq = list(prompt)
        for _ in range(NEW_TOKENS):
            seq.append(int(model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1].argmax()))
        check = seq[PROMPT_LEN:]
        full = model(input_ids=torch.tensor([prompt + new]), use_cache=False).logits[0, -1].float()
    if check != new:
        print(f"WARNING gemma3: cached greedy {new} != uncached {check}", file=sys.stderr)

    ref = {
        "model": "gemma3",
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
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, separators=(",", ":"))
        f.write("\n")
    sizes = {fn: os.path.getsize(os.path.join(out, fn)) for fn in sorted(os.listdir(out))}
    print(f"gemma3: seed {seed} new {new} min gap {min(gaps):.4g} prompt-logit range "
          f"[{logits.min():.3f}, {logits.max():.3f}] sizes {sizes}", file=sys.stderr)


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    which = sys.argv[1:] or ["tiny", "gguf"]
    if "tiny" in which:
        make_tiny()
    if "gguf" in which:
        make_gguf()


if __name__ == "__main__":
    main()
