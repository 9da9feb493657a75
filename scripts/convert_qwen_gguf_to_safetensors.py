#!/usr/bin/env python3
"""Convert the Qwen2.5-Coder-0.5B-Instruct GGUF into a plain f32 safetensors checkpoint folder.

    scripts/fetch_models.sh
    /work/venv-ref/bin/pip install -r scripts/requirements-reference.txt
    /work/venv-ref/bin/python scripts/convert_qwen_gguf_to_safetensors.py [OUT_DIR]

OUT_DIR defaults to /work/refcache/qwen2.5-coder-0.5b-instruct-safetensors (outside the repo; the
checkpoint is ~2 GB and is not committed).

Input: ~/.cache/ferroformers/models/qwen2.5-coder-0.5b-instruct/qwen2.5-coder-0.5b-instruct.gguf, loaded with
AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=torch.float32), i.e. transformers dequantizes
every tensor to f32. The output therefore holds exactly the *dequantized* GGUF weights, so it produces the same
logits as the GGUF-loaded model (and as the references made by scripts/make_causal_lm_refs.py).

Produces in OUT_DIR:
  config.json              a plain Qwen2Config (model_type qwen2, Qwen2ForCausalLM, tie_word_embeddings false:
                           this GGUF carries its own output.weight / lm_head)
  generation_config.json   eos_token_id 151645 (<|im_end|>), bos/pad 151643
  model.safetensors        (or sharded model-*.safetensors + index) f32 weights
  tokenizer.json, tokenizer_config.json, chat_template.jinja ...   the tokenizer transformers builds from the GGUF

Why the state-dict copy: transformers 5.24 refuses save_pretrained() on a model that was loaded from a GGUF file.
So a fresh Qwen2ForCausalLM is built from a cleaned copy of the GGUF model's config (no GGUF/quantization
leftovers, tie_word_embeddings forced False), the GGUF model's state dict is loaded into it with strict=True,
one forward is checked to give bit-identical logits, and that fresh model is saved.

After saving, the folder is reloaded with AutoModelForCausalLM.from_pretrained(OUT_DIR) and must greedy-generate
the same tokens as the GGUF model for the chat prompt "Who are you?": generate(max_new_tokens=32, greedy,
stopping at eos 151645 -- it stops after 13 tokens) and a plain 32-step argmax loop that ignores eos.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    Qwen2Config,
    Qwen2ForCausalLM,
)

MODEL_DIR = os.path.expanduser("~/.cache/ferroformers/models/qwen2.5-coder-0.5b-instruct")
GGUF_NAME = "qwen2.5-coder-0.5b-instruct.gguf"
DEFAULT_OUT = "/work/refcache/qwen2.5-coder-0.5b-instruct-safetensors"
EOS_ID = 151645  # <|im_end|>
BOS_PAD_ID = 151643  # <|endoftext|>

# Config keys that must not survive into a plain checkpoint's config.json.
DROP_KEYS = {"quantization_config", "gguf_file", "_name_or_path", "_model_name_or_path", "transformers_version",
             "_commit_hash", "dtype", "torch_dtype"}


def greedy(model, input_ids, n=32):
    with torch.no_grad():
        out = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=n,
            do_sample=False,
            repetition_penalty=1.0,
            eos_token_id=EOS_ID,
            pad_token_id=BOS_PAD_ID,
        )
    return out[0, input_ids.shape[1]:].tolist()


def greedy_ignoring_eos(model, input_ids, n=32):
    """Plain argmax loop over full forwards (no cache, no stopping): always n tokens."""
    ids = input_ids
    with torch.no_grad():
        for _ in range(n):
            nxt = model(ids).logits[0, -1].argmax().view(1, 1)
            ids = torch.cat([ids, nxt], dim=1)
    return ids[0, input_ids.shape[1]:].tolist()


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    torch.set_num_threads(2)
    torch.manual_seed(0)

    tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=GGUF_NAME)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        MODEL_DIR, gguf_file=GGUF_NAME, dtype=torch.float32, attn_implementation="eager"
    )
    gguf_model.eval()

    # --- plain config --------------------------------------------------------------------------------------
    cfg_dict = gguf_model.config.to_dict()
    dropped = sorted(k for k in cfg_dict if k in DROP_KEYS)
    for k in DROP_KEYS:
        cfg_dict.pop(k, None)
    cfg_dict["tie_word_embeddings"] = False
    cfg_dict["architectures"] = ["Qwen2ForCausalLM"]
    cfg_dict["eos_token_id"] = EOS_ID
    config = Qwen2Config(**{k: v for k, v in cfg_dict.items() if k != "model_type"})
    config.dtype = torch.float32
    assert config.model_type == "qwen2" and not config.tie_word_embeddings
    assert not hasattr(config, "quantization_config"), "config still carries quantization_config"
    print(f"dropped config keys: {dropped}", file=sys.stderr)

    # --- fresh model + strict state-dict copy --------------------------------------------------------------
    fresh = Qwen2ForCausalLM(config).to(torch.float32)
    fresh.config._attn_implementation = "eager"
    sd = gguf_model.state_dict()
    missing_unexpected = fresh.load_state_dict(sd, strict=True)
    print(f"load_state_dict: {missing_unexpected}", file=sys.stderr)
    fresh.eval()
    assert fresh.lm_head.weight.data_ptr() != fresh.model.embed_tokens.weight.data_ptr(), "lm_head is tied"
    assert not torch.equal(fresh.lm_head.weight, fresh.model.embed_tokens.weight), "lm_head == embed_tokens?"

    ids = tok("def fibonacci(n):\n    ", return_tensors="pt").input_ids
    with torch.no_grad():
        a = gguf_model(ids).logits
        b = fresh(ids).logits
    diff = (a - b).abs().max().item()
    print(f"forward check on {ids.shape[1]} tokens: max |gguf - fresh| = {diff}", file=sys.stderr)
    assert torch.equal(a, b), f"fresh model logits differ from the GGUF model (max abs diff {diff})"

    # --- save ----------------------------------------------------------------------------------------------
    os.makedirs(out_dir, exist_ok=True)
    fresh.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    GenerationConfig(bos_token_id=BOS_PAD_ID, eos_token_id=EOS_ID, pad_token_id=BOS_PAD_ID,
                     do_sample=False).save_pretrained(out_dir)

    # --- verify the saved folder ---------------------------------------------------------------------------
    messages = [{"role": "user", "content": "Who are you?"}]
    prompt_ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    prompt_ids = prompt_ids["input_ids"]
    ref_tokens = greedy(gguf_model, prompt_ids)
    ref_tokens_32 = greedy_ignoring_eos(gguf_model, prompt_ids)
    del gguf_model, fresh, sd

    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, attn_implementation="eager")
    reloaded.eval()
    assert next(reloaded.parameters()).dtype == torch.float32, next(reloaded.parameters()).dtype
    reloaded_tok = AutoTokenizer.from_pretrained(out_dir)
    reloaded_prompt = reloaded_tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    assert reloaded_prompt["input_ids"] == prompt_ids[0].tolist(), "saved tokenizer gives a different prompt"
    # Also check the *saved* tokenizer's encoding of a few plain strings against the GGUF tokenizer.
    for text in ["def fibonacci(n):\n    ", "Hello, world! 你好 <|im_start|>x", "  \t\n\n spaces  "]:
        assert reloaded_tok(text).input_ids == tok(text).input_ids, f"saved tokenizer differs on {text!r}"

    new_tokens = greedy(reloaded, prompt_ids)
    assert new_tokens == ref_tokens, f"reloaded greedy tokens differ:\n{new_tokens}\nvs\n{ref_tokens}"
    new_tokens_32 = greedy_ignoring_eos(reloaded, prompt_ids)
    assert new_tokens_32 == ref_tokens_32, f"no-eos greedy tokens differ:\n{new_tokens_32}\nvs\n{ref_tokens_32}"

    print(json.dumps({
        "out_dir": out_dir,
        "prompt_ids": prompt_ids[0].tolist(),
        "greedy_tokens": new_tokens,
        "greedy_text": tok.decode(new_tokens),
        "greedy_tokens_32_ignoring_eos": new_tokens_32,
        "greedy_text_32_ignoring_eos": tok.decode(new_tokens_32),
        "files": {f: os.path.getsize(os.path.join(out_dir, f)) for f in sorted(os.listdir(out_dir))},
    }, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
