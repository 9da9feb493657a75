#!/usr/bin/env python3
"""Tiny llama.cpp-style GGUF files of the tiny Llama checkpoint, plus transformers' own logits and greedy
continuations when it loads them, as fixtures for the Rust GGUF loader.

    /work/venv-ref/bin/pip install -r scripts/requirements-reference.txt   # transformers, torch, gguf
    /work/venv-ref/bin/python scripts/make_tiny_llama_gguf.py

Reads  tests/fixtures/causal_lm/tiny/llama/{config.json,model.safetensors,reference.json}
       (written by scripts/make_tiny_checkpoints.py: 2 layers, hidden 64, 4 heads, 2 KV heads, head_dim 16,
       vocab 256, untied lm_head, f32, default RoPE theta 10000).
Writes tests/fixtures/causal_lm/tiny/llama_gguf/:
  tiny-llama-f32.gguf   every tensor F32                          (convert_hf_to_gguf.py --outtype f32)
  tiny-llama-f16.gguf   2-D weights F16, norms F32                (--outtype f16)
  tiny-llama-q8_0.gguf  2-D weights Q8_0, norms F32               (--outtype q8_0)
  tiny-llama-q4_0.gguf  2-D weights Q4_0, norms F32               (gguf.quants; llama-quantize would make
                        output.weight Q6_K, here every 2-D weight is Q4_0)
  reference.json
      note, versions {transformers, torch, gguf}, dtype, attn_implementation, source, prompt_ids,
      files: one entry per file
          file               the GGUF's name
          tensor_types       gguf tensor name -> ggml type name
          prompt_ids         the source reference's 20 prompt ids
          logits             [20][256] logits of one forward of the model transformers loads from the file
                             (AutoModelForCausalLM.from_pretrained(dir, gguf_file=file), f32, eager; 6 decimals)
          greedy_new_tokens  20 greedy tokens (do_sample=False, eos_token_id=None, never stops early)
          greedy_gaps        per step, raw logit[top1] - logit[top2]
          max_abs_logit_diff_vs_source  against the safetensors checkpoint's logits (0 for f32)

The files are made the way llama.cpp's convert_hf_to_gguf.py (class LlamaModel) makes them:
  * architecture "llama"; metadata keys in the converter's order: general.architecture, general.type,
    general.name, llama.block_count, llama.context_length, llama.embedding_length,
    llama.feed_forward_length, llama.attention.head_count, llama.attention.head_count_kv,
    llama.rope.freq_base, llama.attention.layer_norm_rms_epsilon, llama.attention.key_length,
    llama.attention.value_length, general.file_type, llama.vocab_size, llama.rope.dimension_count,
    tokenizer.ggml.* (a 256-token sentencepiece-style "llama" vocabulary, see make_vocab),
    general.quantization_version;
  * tensors in the source safetensors' key order, renamed (lm_head.weight -> output.weight,
    model.embed_tokens -> token_embd, model.norm -> output_norm, model.layers.N.* -> blk.N.attn_norm,
    attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down);
  * q_proj and k_proj PERMUTED for llama.cpp's interleaved (GPT-J style) rotary layout:
        permute(w, n_head, n_head_kv):
            if n_head_kv is not None and n_head != n_head_kv: n_head = n_head_kv
            w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    attn_q: permute(q, 4, 4) (4 heads); attn_k: permute(k, 4, 2) (so 2 heads, the KV head count).
    Within each head the rows [0, 8) (first rotary half) and [8, 16) (second half) get interleaved:
    new row 2i = old row i, new row 2i+1 = old row 8 + i.
    Undo: w.reshape(n, rows_per_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape).
  * numpy arrays in torch's (out, in) layout; GGUFWriter stores the dims reversed (ne0 = in).

Checks (asserted): the state dict transformers loads from the f32 file equals the source checkpoint's
exactly (so it un-permutes q with 4 heads and k with the 2 KV heads); from the f16/q8_0/q4_0 files it equals
gguf.quants' dequantize(quantize(source)) of each 2-D weight (quantizing along rows commutes with the row
permutation) and the source norms.

Llama3 RoPE scaling (tests/fixtures/causal_lm/tiny/llama3) is NOT converted: llama.cpp stores llama3
scaling only as an extra 1-D tensor rope_freqs.weight (per-frequency divisors) and writes no
llama.rope.scaling.* keys for it, and transformers' GGUF loader for "llama" maps only
rope.freq_base/rope.dimension_count (rope.scaling.* is read for gpt-oss only) and drops rope_freqs.weight,
so it would load such a file as default RoPE and its logits would not be a llama3 reference.

Deterministic: no randomness (the weights come from the source checkpoint; quantization is round-to-nearest).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from gguf import GGMLQuantizationType, LlamaFileType  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaForCausalLM  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tiny_checkpoints import greedy  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SRC_DIR = os.path.join(ROOT, "tests", "fixtures", "causal_lm", "tiny", "llama")
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "causal_lm", "tiny", "llama_gguf")
MAX_FILE_BYTES = 600_000

# name -> (2-D weight type, general.file_type)
FILES = [
    ("tiny-llama-f32.gguf", GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
    ("tiny-llama-f16.gguf", GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    ("tiny-llama-q8_0.gguf", GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    ("tiny-llama-q4_0.gguf", GGMLQuantizationType.Q4_0, LlamaFileType.MOSTLY_Q4_0),
]

HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}

PERMUTE_NOTE = (
    "attn_q / attn_k are stored as llama.cpp's convert_hf_to_gguf.py LlamaModel.permute(w, n_head, n_head_kv): "
    "if n_head_kv is not None and n_head != n_head_kv: n_head = n_head_kv; "
    "w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape), "
    "with q: permute(q, 4, 4), k: permute(k, 4, 2) (i.e. 2 KV heads). Per head of 16 rows, stored row 2i = "
    "HF row i and stored row 2i+1 = HF row 8 + i. Undo (what transformers' LlamaTensorProcessor does, "
    "with n = 4 for q and n = num_key_value_heads = 2 for k): "
    "w.reshape(n, w.shape[0] // n // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape). "
    "Numpy shapes are torch's (out, in); GGUF dims are reversed (ne0 = in). Quantized files quantize the "
    "permuted rows (blocks of 32 along in), so their dequantized, un-permuted weights equal "
    "dequantize(quantize(source)). Logits/greedy are transformers' model loaded from each file, f32, eager."
)


def permute(w, n_head, n_head_kv):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf_name):
    if hf_name == "lm_head.weight":
        return "output.weight"
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    parts = hf_name.split(".")
    assert parts[:2] == ["model", "layers"] and parts[-1] == "weight", hf_name
    return f"blk.{parts[2]}.{HF_TO_GGUF['.'.join(parts[3:-1])]}.weight"


def make_vocab(n):
    """A 256-entry sentencepiece-style ("llama") vocabulary, unique tokens, usable by transformers:
    0 <unk> (UNKNOWN), 1 <s> / 2 </s> (CONTROL), 3 "▁", 4.. the printable ASCII characters "!".."~",
    then "▁a".."▁z", then two-letter pairs "aa", "ab", ... until n (NORMAL). Scores: 0 for the specials,
    -index for the rest (earlier = preferred merge)."""
    tokens = ["<unk>", "<s>", "</s>", "\u2581"]
    tokens += [chr(c) for c in range(0x21, 0x7F)]
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens += ["\u2581" + c for c in letters]
    tokens += [a + b for a in letters for b in letters][: n - len(tokens)]
    assert len(tokens) == n and len(set(tokens)) == n
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.NORMAL] * (n - 3)
    scores = [0.0, 0.0, 0.0] + [-float(i) for i in range(3, n)]
    return tokens, [int(t) for t in types], scores


def tensor_for(name, arr, wtype):
    """(array to write, ggml type) as the converter picks it: norms and 1-D stay F32."""
    if arr.ndim <= 1 or name.endswith("_norm.weight") or wtype == GGMLQuantizationType.F32:
        return arr.astype(np.float32), GGMLQuantizationType.F32
    if wtype == GGMLQuantizationType.F16:
        return arr.astype(np.float16), GGMLQuantizationType.F16
    return gguf.quants.quantize(arr.astype(np.float32), wtype), wtype


def write_gguf(path, cfg, src, wtype, ftype):
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    w = gguf.GGUFWriter(path, "llama")  # writes general.architecture
    w.add_type("model")
    w.add_name("Tiny Llama")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(float(cfg["rope_parameters"]["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_file_type(int(ftype))
    w.add_vocab_size(cfg["vocab_size"])
    w.add_rope_dimension_count(head_dim)

    tokens, types, scores = make_vocab(cfg["vocab_size"])
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    types_out = {}
    for hf_name, arr in src.items():  # safetensors key order, as the converter iterates it
        name = gguf_name(hf_name)
        if name.endswith("attn_q.weight"):
            arr = permute(arr, n_head, n_head)
        elif name.endswith("attn_k.weight"):
            arr = permute(arr, n_head, n_kv)
        data, qtype = tensor_for(name, arr, wtype)
        w.add_tensor(name, data, raw_dtype=qtype)
        types_out[name] = qtype.name

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return types_out


def expected_state_dict(src, wtype):
    """What the model loaded from a file of this type must hold, in HF names and layout."""
    out = {}
    for hf_name, arr in src.items():
        name = gguf_name(hf_name)
        data, qtype = tensor_for(name, arr, wtype)
        if qtype not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            data = gguf.quants.dequantize(data, qtype)
        out[hf_name] = torch.from_numpy(np.ascontiguousarray(data.astype(np.float32)))
    return out


def r(x):
    return round(float(x), 6)


def main():
    torch.set_num_threads(2)
    with open(os.path.join(SRC_DIR, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(SRC_DIR, "reference.json")) as f:
        src_ref = json.load(f)
    assert cfg["rope_parameters"]["rope_type"] == "default", cfg["rope_parameters"]
    prompt = src_ref["prompt_ids"]
    src = load_file(os.path.join(SRC_DIR, "model.safetensors"))

    # sanity: permute/unpermute are inverses, and the converter's permutation is not the identity here
    for n, m in ((4, 4), (4, 2)):
        a = src["model.layers.0.self_attn.q_proj.weight" if m == 4 else "model.layers.0.self_attn.k_proj.weight"]
        p = permute(a, n, m)
        assert not np.array_equal(p, a) and np.array_equal(unpermute(p, m), a)

    source = LlamaForCausalLM.from_pretrained(SRC_DIR, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        src_logits = source(input_ids=torch.tensor([prompt])).logits[0].float()

    os.makedirs(OUT_DIR, exist_ok=True)
    entries = []
    for fname, wtype, ftype in FILES:
        path = os.path.join(OUT_DIR, fname)
        types = write_gguf(path, cfg, src, wtype, ftype)
        size = os.path.getsize(path)
        assert size < MAX_FILE_BYTES, (fname, size)

        model = AutoModelForCausalLM.from_pretrained(
            OUT_DIR, gguf_file=fname, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        mc = model.config
        assert type(model) is LlamaForCausalLM, type(model)
        for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "max_position_embeddings", "tie_word_embeddings"):
            assert getattr(mc, k) == cfg[k], (fname, k, getattr(mc, k), cfg[k])
        # GGUF stores the epsilon as a float32: transformers reads back 9.999999747378752e-06 for 1e-5
        assert mc.rms_norm_eps == float(np.float32(cfg["rms_norm_eps"])), (fname, mc.rms_norm_eps)
        assert mc.rope_parameters["rope_type"] == "default", mc.rope_parameters
        assert mc.rope_parameters["rope_theta"] == cfg["rope_parameters"]["rope_theta"], mc.rope_parameters

        sd = {k: v.float() for k, v in model.state_dict().items()}
        want = expected_state_dict(src, wtype)
        assert sorted(sd) == sorted(want), (sorted(set(sd) ^ set(want)))
        for k, v in want.items():
            assert torch.equal(sd[k], v), (fname, k, (sd[k] - v).abs().max())
        if wtype == GGMLQuantizationType.F32:
            for k, v in src.items():  # the round trip, exactly
                assert torch.equal(sd[k], torch.from_numpy(v)), (fname, k)

        inp = torch.tensor([prompt])
        with torch.no_grad():
            logits = model(input_ids=inp).logits[0].float()
        new, gaps = greedy(model, prompt, cfg["bos_token_id"])
        diff = float((logits - src_logits).abs().max())
        if wtype == GGMLQuantizationType.F32:
            assert diff == 0.0, diff
            assert new == src_ref["greedy_new_tokens"], (new, src_ref["greedy_new_tokens"])
        entries.append({
            "file": fname,
            "bytes": size,
            "tensor_types": types,
            "prompt_ids": prompt,
            "logits": [[r(x) for x in row] for row in logits.tolist()],
            "greedy_new_tokens": new,
            "greedy_gaps": [r(x) for x in gaps],
            "max_abs_logit_diff_vs_source": r(diff),
        })
        print(f"{fname}: {size} bytes, new {new} min gap {min(gaps):.4g} "
              f"max |logit - source| {diff:.4g} same greedy as source: {new == src_ref['greedy_new_tokens']}",
              file=sys.stderr)

    ref = {
        "note": PERMUTE_NOTE,
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": _gguf_version(),
        },
        "source": "tests/fixtures/causal_lm/tiny/llama",
        "dtype": "float32",
        "attn_implementation": "eager",
        "prompt_ids": prompt,
        "files": entries,
    }
    with open(os.path.join(OUT_DIR, "reference.json"), "w") as f:
        json.dump(ref, f, separators=(",", ":"))
        f.write("\n")


def _gguf_version():
    from importlib.metadata import version

    return version("gguf")


if __name__ == "__main__":
    main()
