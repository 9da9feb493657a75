#!/usr/bin/env python3
"""Sentence-embedding reference data for all-MiniLM-L6-v2, from sentence-transformers and transformers.

    scripts/fetch_models.sh --only minilm
    /work/venv-ref/bin/pip install -r scripts/requirements-reference.txt
    nice -n 10 /work/venv-ref/bin/python scripts/make_encoder_refs.py

Reads tests/fixtures/encoders/sentences.json (50 hand-written English sentences) and writes
tests/fixtures/encoders/all-MiniLM-L6-v2.json. Produced with sentence-transformers 6.2.0,
transformers 5.24.0, torch 2.15.0 (CPU, float32, 2 threads); never needed at run time.

The model folder is loaded twice:
  * SentenceTransformer(dir, device="cpu"): modules.json = Transformer -> Pooling (1_Pooling/config.json:
    mean over tokens with attention_mask 1) -> Normalize (L2). The Normalize module has no folder
    (modules.json names 2_Normalize, which does not exist; Normalize has no config, so that is fine).
  * AutoTokenizer / AutoModel (BertModel) on the same folder, float32.

Per sentence (`sentences`):
  input_ids   what sentence-transformers feeds the model for this sentence alone: its
              Transformer.preprocess (tokenizer with [CLS] ... [SEP], truncation to max_seq_length = 256,
              no padding). Asserted equal to AutoTokenizer(s, truncation=True, max_length=256).
  embedding   SentenceTransformer.encode([s], normalize_embeddings=False) for the sentence alone (no
              padding), rounded to 7 significant digits. normalize_embeddings=False is encode's default;
              the output is still L2-normalized because the pipeline ends in the Normalize module
              (`embedding_is_normalized`, and `norm_max_abs_dev_from_1` says how closely).
For the first 3 sentences (`token_level`):
  last_hidden_state   AutoModel(**tok(s)).last_hidden_state[0], [tokens][384], 6 significant digits
  pooled              mean of last_hidden_state over the tokens (mask is all ones), before Normalize,
                      7 significant digits; `pooled_norm` is its L2 norm
  max_abs_diff_pooled_vs_sentence_transformers   vs the output of ST's own Transformer+Pooling modules
  max_abs_diff_normalized_vs_embedding           pooled / ||pooled|| vs `embedding` (unrounded)
`batch_check`: encode of all 50 in one batch (batch_size=50, padded to the longest) vs one at a time.

The tokenizer.json in the folder carries truncation max_length 128 and padding Fixed 128 (from the
original upload); transformers' tokenizer call overrides both (sentence-transformers passes
padding=True, truncation, and model_max_length = max_seq_length = 256). A plain `tokenizers` load of
that file would pad every input to 128 and cut sentence 48 (165 tokens) at 128: `tokenizer_json_settings`
records this and the ids that file gives for the longest sentence without any override.
"""

import hashlib
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import sentence_transformers  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "encoders")
MODELS_DIR = os.environ.get("FERRO_MODELS_DIR", os.path.expanduser("~/.cache/ferroformers/models"))
MODEL = "all-MiniLM-L6-v2"
TOKEN_LEVEL = 3  # sentences with last_hidden_state recorded
THREADS = 2


def sig(x, digits):
    return float(f"{float(x):.{digits}g}")


def vec(v, digits):
    return [sig(x, digits) for x in np.asarray(v, dtype=np.float64).ravel().tolist()]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def c(x):
    """Compact JSON for one value."""
    return json.dumps(x, ensure_ascii=False, separators=(",", ":"))


def dump(doc, path):
    """Top level one key per line; `sentences` one per line; hidden states one token row per line."""
    out = ["{"]
    keys = list(doc)
    for k_i, key in enumerate(keys):
        comma = "," if k_i + 1 < len(keys) else ""
        val = doc[key]
        if key == "sentences":
            out.append(f" {c(key)}:[")
            out += [f"  {c(s)}" + ("," if i + 1 < len(val) else "") for i, s in enumerate(val)]
            out.append(" ]" + comma)
        elif key == "token_level":
            out.append(f" {c(key)}:[")
            for i, t in enumerate(val):
                out.append("  {")
                fields = [(k, v) for k, v in t.items() if k != "last_hidden_state"]
                for k, v in fields:
                    out.append(f"   {c(k)}:{c(v)},")
                rows = t["last_hidden_state"]
                out.append('   "last_hidden_state":[')
                out += [f"    {c(r)}" + ("," if j + 1 < len(rows) else "") for j, r in enumerate(rows)]
                out.append("   ]")
                out.append("  }" + ("," if i + 1 < len(val) else ""))
            out.append(" ]" + comma)
        else:
            out.append(f" {c(key)}:{c(val)}{comma}")
    out.append("}")
    text = "\n".join(out) + "\n"
    json.loads(text)  # well-formed
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main():
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    mdir = os.path.join(MODELS_DIR, MODEL)
    if not os.path.exists(os.path.join(mdir, "model.safetensors")):
        sys.exit(f"missing {mdir}/model.safetensors; run scripts/fetch_models.sh --only minilm")
    sentences = read_json(os.path.join(OUT_DIR, "sentences.json"))
    assert len(sentences) == 50 and all(isinstance(s, str) for s in sentences)

    st = SentenceTransformer(mdir, device="cpu")
    st.eval()
    max_seq_length = st.max_seq_length
    tok = AutoTokenizer.from_pretrained(mdir)
    hf = AutoModel.from_pretrained(mdir, dtype=torch.float32)
    hf.eval()
    assert next(hf.parameters()).dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in st.parameters())
    print(st, file=sys.stderr)
    print(f"max_seq_length {max_seq_length}; ST attn {st[0].model.config._attn_implementation}, "
          f"AutoModel attn {hf.config._attn_implementation}", file=sys.stderr)

    # --- tokenization, as sentence-transformers does it (one sentence, no padding) ---
    ids_all = []
    for s in sentences:
        feats = st.preprocess([s])
        ids = [int(i) for i in feats["input_ids"][0].tolist()]
        assert all(int(m) == 1 for m in feats["attention_mask"][0].tolist())
        ref = tok(s, truncation=True, max_length=max_seq_length)["input_ids"]
        assert ids == list(ref), (s, ids, ref)
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        ids_all.append(ids)

    # --- embeddings: one at a time, and all 50 in one batch ---
    with torch.no_grad():
        single = np.stack([st.encode([s], normalize_embeddings=False, convert_to_numpy=True)[0]
                           for s in sentences])
        batch = st.encode(sentences, batch_size=len(sentences), normalize_embeddings=False,
                          convert_to_numpy=True)
        forced = st.encode(sentences, batch_size=len(sentences), normalize_embeddings=True,
                           convert_to_numpy=True)
    assert single.dtype == np.float32 and single.shape == (50, 384), (single.dtype, single.shape)
    norms = np.linalg.norm(single.astype(np.float64), axis=1)
    norm_dev = float(np.abs(norms - 1.0).max())
    normalized = norm_dev < 1e-5
    diff = np.abs(batch.astype(np.float64) - single.astype(np.float64))
    per_sentence = diff.max(axis=1)
    worst = int(per_sentence.argmax())
    batch_check = {
        "batch_size": len(sentences),
        "padding": "to the longest in the batch (%d tokens)" % max(len(i) for i in ids_all),
        "max_abs_diff_batch_vs_single": float(diff.max()),
        "worst_sentence": worst,
        "mean_abs_diff": float(diff.mean()),
        "max_abs_diff_normalize_embeddings_true_vs_false": float(
            np.abs(forced.astype(np.float64) - batch.astype(np.float64)).max()),
    }
    print(f"norm dev {norm_dev:.3g}; batch check {batch_check}", file=sys.stderr)

    # --- token level, transformers AutoModel ---
    token_level = []
    for i in range(TOKEN_LEVEL):
        enc = tok(sentences[i], truncation=True, max_length=max_seq_length, return_tensors="pt")
        assert enc["input_ids"][0].tolist() == ids_all[i]
        with torch.no_grad():
            h = hf(**enc).last_hidden_state[0].float()  # [T, 384]
            feats = st.preprocess([sentences[i]])
            st_pooled = st[1](st[0](feats))["sentence_embedding"][0].float()
        mask = enc["attention_mask"][0].unsqueeze(-1).float()
        pooled = (h * mask).sum(0) / mask.sum().clamp(min=1e-9)
        normed = pooled / pooled.norm()
        token_level.append({
            "index": i,
            "sentence": sentences[i],
            "input_ids": ids_all[i],
            "pooled_norm": sig(pooled.norm(), 7),
            "max_abs_diff_pooled_vs_sentence_transformers": float((pooled - st_pooled).abs().max()),
            "max_abs_diff_normalized_vs_embedding": float(
                (normed - torch.from_numpy(single[i])).abs().max()),
            "pooled": vec(pooled.numpy(), 7),
            "last_hidden_state": [vec(row, 6) for row in h.numpy()],
        })
        print(f"token level {i}: {len(ids_all[i])} tokens, pooled norm {float(pooled.norm()):.5g}, "
              f"vs ST pooled {token_level[-1]['max_abs_diff_pooled_vs_sentence_transformers']:.3g}, "
              f"normalized vs embedding {token_level[-1]['max_abs_diff_normalized_vs_embedding']:.3g}",
              file=sys.stderr)

    # --- what a plain `tokenizers` load of tokenizer.json does (no override) ---
    tj_path = os.path.join(mdir, "tokenizer.json")
    tj = read_json(tj_path)
    longest = max(range(len(sentences)), key=lambda k: len(ids_all[k]))
    raw = tokenizers.Tokenizer.from_file(tj_path).encode(sentences[longest])
    tokenizer_json_settings = {
        "truncation": tj.get("truncation"),
        "padding": tj.get("padding"),
        "normalizer": tj.get("normalizer"),
        "note": "transformers/sentence-transformers override these (padding=True i.e. to the longest in "
                "the batch, truncation at max_seq_length=256); a bare tokenizers load applies them",
        "longest_sentence": longest,
        "longest_sentence_tokens_as_st": len(ids_all[longest]),
        "longest_sentence_raw_tokenizers_len": len(raw.ids),
        "longest_sentence_raw_tokenizers_last_ids": raw.ids[-3:],
        "short_sentence_raw_tokenizers_len": len(
            tokenizers.Tokenizer.from_file(tj_path).encode(sentences[0]).ids),
    }

    pooling_cfg = read_json(os.path.join(mdir, "1_Pooling", "config.json"))
    doc = {
        "model": MODEL,
        "source": "sentence-transformers/all-MiniLM-L6-v2 (scripts/fetch_models.sh --only minilm)",
        "files_sha256": {f: sha256(os.path.join(mdir, f)) for f in ("model.safetensors", "tokenizer.json")},
        "versions": {"sentence_transformers": sentence_transformers.__version__,
                     "transformers": transformers.__version__, "torch": torch.__version__,
                     "tokenizers": tokenizers.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "device": "cpu", "dtype": "float32", "torch_threads": THREADS,
        "attn_implementation": {"sentence_transformers": st[0].model.config._attn_implementation,
                                "auto_model": hf.config._attn_implementation},
        "modules": read_json(os.path.join(mdir, "modules.json")),
        "sentence_bert_config": read_json(os.path.join(mdir, "sentence_bert_config.json")),
        "max_seq_length": max_seq_length,
        "pooling_config": pooling_cfg,
        "pooling": "mean over tokens where attention_mask == 1 (the [CLS] and [SEP] included), "
                   "sum / max(count, 1e-9), then Normalize: x / max(||x||_2, 1e-12)",
        "embedding_dim": int(single.shape[1]),
        "encode_call": "SentenceTransformer.encode([sentence], normalize_embeddings=False), one sentence at a time",
        "embedding_is_normalized": bool(normalized),
        "norm_max_abs_dev_from_1": norm_dev,
        "rounding": {"embedding": "7 significant digits", "pooled": "7 significant digits",
                     "last_hidden_state": "6 significant digits"},
        "tokenizer_json_settings": tokenizer_json_settings,
        "batch_check": batch_check,
        "sentences": [{"index": k, "text": s, "input_ids": ids_all[k], "embedding": vec(single[k], 7)}
                      for k, s in enumerate(sentences)],
        "token_level": token_level,
    }
    path = os.path.join(OUT_DIR, MODEL + ".json")
    dump(doc, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
