#!/usr/bin/env python3
"""Checks that GGUFs written by `ferro quantize` load in llama.cpp and generate what ferro
generates from them. Not run by CI (needs llama-cpp-python and the packaged Qwen GGUF).

    cargo build --release -p ferro-cli
    /work/venv-ref/bin/python scripts/check_quantize_llama_cpp.py   # llama-cpp-python 0.3.36

Writes into a temporary folder:
  (a) the packaged Qwen2.5-Coder-0.5B-Instruct GGUF requantized to q8_0 and to q4_k
      (~/.cache/ferroformers/models/..., or $FERRO_MODELS_DIR);
  (b) the tiny Qwen2 fixture (tests/fixtures/causal_lm/tiny/qwen2) with a small byte-level
      BPE tokenizer.json added (the fixture has none), quantized to q8_0.
For each file and each of 3 raw prompts (no chat template, so both see the same tokens):
llama.cpp (with an f32 KV cache, as ferro's) greedily generates 16 tokens, `ferro run --max-new-tokens 16 --greedy` with a
template that passes the prompt through unchanged does the same, and the continuations are
compared as text (and the prompt's token ids, ferro's `tokenize` against llama.cpp's).
AGREE: the same; TIE: they part where llama.cpp's top-2 logit gap is under NEAR_TIE of
its largest logit;
DIFFER: anything else, and the script exits non-zero.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
FERRO = ROOT / "target" / "release" / "ferro"
MODELS = Path(os.environ.get("FERRO_MODELS_DIR", Path.home() / ".cache" / "ferroformers" / "models"))
QWEN = MODELS / "qwen2.5-coder-0.5b-instruct" / "qwen2.5-coder-0.5b-instruct.gguf"
TINY = ROOT / "tests" / "fixtures" / "causal_lm" / "tiny" / "qwen2"
N_NEW = 16
# A divergence is accepted where llama.cpp's own top two logits are closer than this share
# of its largest logit: both engines quantize activations to 8 bits, and rounding and the
# order of sums move logits by about that much (the tiny random models, whose logits are
# most sensitive, are 1-3 % off transformers' on our kernels).
NEAR_TIE = 0.01
F32 = 0  # ggml type id

QWEN_PROMPTS = [
    "def fibonacci(n):",
    "The capital of France is",
    "// A function that reverses a string in C\n",
]
TINY_PROMPTS = ["hello world", "Hello, world! hell", "or what"]

# The Qwen2 split regex (tokenizer.ggml.pre = "qwen2").
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def ferro(*args):
    out = subprocess.run([str(FERRO), *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"ferro {' '.join(args)} failed:\n{out.stderr}")
    return out


def tiny_with_tokenizer(dest: Path):
    """The tiny Qwen2 checkpoint plus a byte-level BPE over its 256 ids: 3 specials, the
    printable ASCII bytes, the byte-level space, a few merges, then `t{id}` tokens."""
    dest.mkdir()
    for f in ["config.json", "generation_config.json", "model.safetensors"]:
        shutil.copy(TINY / f, dest / f)
    vocab = ["<pad>", "<s>", "</s>"] + [chr(b) for b in range(ord("!"), ord("~") + 1)] + ["\u0120"]
    merges = [("h", "e"), ("l", "l"), ("\u0120", "w"), ("o", "r"), ("he", "ll")]
    vocab += [a + b for a, b in merges]
    # Fill every id with printable text, so continuations compare as text.
    vocab += [f"t{i}" for i in range(len(vocab), 256)]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, t in enumerate(vocab[:3])
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
            byte_level,
        ]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": {t: i for i, t in enumerate(vocab)},
                  "merges": [[a, b] for a, b in merges]},
    }
    (dest / "tokenizer.json").write_text(json.dumps(tok))
    (dest / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": None, "eos_token": "</s>", "pad_token": "<pad>", "add_bos_token": False}))


def llama_cpp_greedy(llm, prompt: str):
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    new = []
    llm.reset()
    for tok in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            break
        new.append(tok)
        if len(new) == N_NEW:
            break
    return ids, new, llm.detokenize(new).decode("utf-8", errors="replace")


def divergence(llm, ids, new, ferro_text):
    """The first new token where llama.cpp's text leaves ferro's, and llama.cpp's gap
    between its top two logits there (a near-tie when small)."""
    for k in range(len(new)):
        if not ferro_text.startswith(llm.detokenize(new[: k + 1]).decode("utf-8", errors="replace")):
            llm.reset()
            llm.eval(ids + new[:k])
            # Without logits_all, llama-cpp-python keeps no scores: read the last row.
            row = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
            logits = sorted((row[i] for i in range(llm.n_vocab())), reverse=True)
            scale = max(abs(logits[0]), abs(logits[-1]))
            return k, float(logits[0] - logits[1]), scale
    return len(new), None, None


def ferro_greedy(path: Path, prompt: str, template: Path):
    ids = json.loads(ferro("tokenize", "--model", str(path), prompt).stdout)
    out = ferro("run", "--model", str(path), "--max-new-tokens", str(N_NEW), "--greedy",
                "--chat-template", str(template), prompt).stdout
    return ids, out[:-1] if out.endswith("\n") else out


def main():
    if not FERRO.exists():
        sys.exit(f"{FERRO} is missing: cargo build --release -p ferro-cli")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        template = tmp / "raw.jinja"
        template.write_text("{{ messages[-1]['content'] }}")
        cases = []
        if QWEN.exists():
            for ty in ["q8_0", "q4_k"]:
                out = tmp / f"qwen-{ty}.gguf"
                r = ferro("quantize", str(QWEN), str(out), "--type", ty)
                print(r.stderr.strip().splitlines()[-1])
                cases.append((out, QWEN_PROMPTS))
        else:
            print(f"MISSING {QWEN} (scripts/fetch_models.sh --only qwen); skipping (a)")
            ok = False
        tiny = tmp / "tiny-qwen2"
        tiny_with_tokenizer(tiny)
        out = tmp / "tiny-qwen2-q8_0.gguf"
        r = ferro("quantize", str(tiny), str(out), "--type", "q8_0")
        print(r.stderr.strip().splitlines()[-1])
        cases.append((out, TINY_PROMPTS))

        for path, prompts in cases:
            # An f32 KV cache, as ferro keeps: with llama.cpp's default f16 cache the q8_0
            # file's "The capital of France is" parts at a 0.12 logit gap.
            llm = llama_cpp.Llama(model_path=str(path), n_threads=2, n_ctx=128, verbose=False,
                                  type_k=F32, type_v=F32)
            for prompt in prompts:
                l_ids, l_new, l_text = llama_cpp_greedy(llm, prompt)
                f_ids, f_text = ferro_greedy(path, prompt, template)
                verdict, note = "AGREE", ""
                if l_ids != f_ids:
                    verdict = "DIFFER"
                    note = f"    prompt ids  llama.cpp {l_ids}\n                ferro     {f_ids}\n"
                elif l_text != f_text:
                    k, gap, scale = divergence(llm, l_ids, l_new, f_text)
                    verdict = "TIE" if gap is not None and gap < NEAR_TIE * scale else "DIFFER"
                    note = (f"    first different new token: #{k}; llama.cpp's top-2 logit gap there: "
                            f"{gap:.2g} (largest logit {scale:.3g})\n")
                ok &= verdict != "DIFFER"
                print(f"{verdict:6} {path.name:24} {prompt!r}")
                print(f"{note}    llama.cpp {l_text!r}\n    ferro     {f_text!r}")
    print("all agree (up to near-ties)" if ok else "SOME DIFFER")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
