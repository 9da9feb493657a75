#!/usr/bin/env python3
"""Record what transformers' own tokenizers do on the corpus, as JSON fixtures for the Rust tests.

    scripts/fetch_models.sh                                   # models into the cache
    python3 -m venv /work/venv-ref
    /work/venv-ref/bin/pip install -r scripts/requirements-reference.txt
    /work/venv-ref/bin/python scripts/make_tokenizer_refs.py [qwen] [gemma] [minilm]   # default: all

Reads tests/fixtures/tokenizers/corpus.json and writes, per model,
tests/fixtures/tokenizers/<model>.json (encodings, decodings, offsets, batch padding/truncation, header)
and, for the GGUF models, tests/fixtures/tokenizers/<model>.pipeline.json (the tokenizer.json that
transformers builds from the GGUF, minus vocab and merges). The full tokenizer.json and a listing of the
GGUF `tokenizer.*` metadata go to $FERRO_REFCACHE (default /work/refcache), outside the repo.
CI never runs this; it needs the models (~750 MB) and transformers + torch.
"""

import hashlib
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tokenizers")
MODELS_DIR = os.environ.get("FERRO_MODELS_DIR", os.path.expanduser("~/.cache/ferroformers/models"))
REFCACHE = os.environ.get("FERRO_REFCACHE", "/work/refcache")
OFFSETS_MAX_CHARS = 300

MODELS = {
    "qwen": ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct.gguf"),
    "gemma": ("gemma-3-270m", "gemma-3-270m-q4_k_m.gguf"),
    "minilm": ("all-MiniLM-L6-v2", None),
}

BATCH = [
    "Hi",
    "Hello world, this is a longer sentence with quite a few more tokens than the others.",
    "中文和 emoji 🙂 mixed",
    "<|im_start|>user\nshort<|im_end|>",
]


def load(key):
    name, gguf = MODELS[key]
    path = os.path.join(MODELS_DIR, name)
    if not os.path.isdir(path):
        sys.exit(f"missing {path}: run scripts/fetch_models.sh first")
    if gguf:
        return name, os.path.join(path, gguf), AutoTokenizer.from_pretrained(path, gguf_file=gguf)
    return name, None, AutoTokenizer.from_pretrained(path)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def byte_offsets(text, offsets):
    """Python returns offsets in code points; the Rust side works in UTF-8 bytes."""
    starts = [0]
    for ch in text:
        starts.append(starts[-1] + len(ch.encode("utf-8")))
    return [[starts[s], starts[e]] for s, e in offsets]


def header(tok, name, gguf_path, corpus, lossless_failures):
    special = {}
    for attr in ("bos", "eos", "pad", "unk", "cls", "sep", "mask"):
        token = getattr(tok, f"{attr}_token", None)
        if token is not None or attr in ("bos", "eos", "pad", "unk"):
            special[f"{attr}_token"] = token
            special[f"{attr}_token_id"] = getattr(tok, f"{attr}_token_id", None) if token is not None else None
    h = {
        "model": name,
        "source": {"gguf_file": os.path.basename(gguf_path), "sha256": sha256_file(gguf_path)} if gguf_path else
        {"dir": name, "tokenizer_json_sha256": sha256_file(os.path.join(MODELS_DIR, name, "tokenizer.json"))},
        "loaded_with": "AutoTokenizer.from_pretrained(dir, gguf_file=...)" if gguf_path else "AutoTokenizer.from_pretrained(dir)",
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "tokenizer_class": type(tok).__name__,
        "backend_model_type": type(tok.backend_tokenizer.model).__name__,
        **special,
        "all_special_tokens": tok.all_special_tokens,
        "all_special_ids": tok.all_special_ids,
        "model_max_length": tok.model_max_length,
        "padding_side": tok.padding_side,
        "truncation_side": tok.truncation_side,
        "clean_up_tokenization_spaces": tok.clean_up_tokenization_spaces,
        "vocab_size": len(tok),
        "backend_vocab_size_with_added": tok.backend_tokenizer.get_vocab_size(with_added_tokens=True),
        "backend_vocab_size_without_added": tok.backend_tokenizer.get_vocab_size(with_added_tokens=False),
        "has_chat_template": bool(getattr(tok, "chat_template", None)),
        "corpus_size": len(corpus),
        "lossless": not lossless_failures,
        "lossless_definition": "decode(encode(s, add_special_tokens=False), skip_special_tokens=False) == s",
        "lossless_failures": lossless_failures,
        "offsets_note": f"offsets only for strings under {OFFSETS_MAX_CHARS} chars, from add_special_tokens=True; "
        "'offsets' are Python code-point indices, 'offsets_bytes' the same spans in UTF-8 bytes",
    }
    for attr in ("add_bos_token", "add_eos_token", "add_prefix_space", "do_lower_case", "split_special_tokens"):
        if hasattr(tok, attr):
            h[attr] = getattr(tok, attr)
    return h


def batch_section(tok):
    def run(**kw):
        enc = tok(BATCH, **kw)
        return {"kwargs": kw, "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    return {
        "texts": BATCH,
        "padding_right": run(padding=True, padding_side="right"),
        "padding_left": run(padding=True, padding_side="left"),
        "truncation_max_length_8": run(truncation=True, max_length=8),
        "truncation_and_padding_max_length_8": run(truncation=True, max_length=8, padding="max_length"),
        "padding_true_default_side": run(padding=True),
    }


def pipeline_json(backend_json):
    """The tokenizer.json transformers built, without vocab and merges (those come from the GGUF)."""
    full = json.loads(backend_json)
    model = dict(full["model"])
    vocab = model.pop("vocab", None)
    merges = model.pop("merges", None)
    summary = {}
    if isinstance(vocab, dict):
        by_id = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        summary["vocab_size"] = len(by_id)
        summary["vocab_sha256"] = hashlib.sha256("\n".join(by_id).encode()).hexdigest()
    if merges is not None:
        pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in merges]
        summary["merges_count"] = len(pairs)
        summary["merges_first"] = pairs[:10]
        summary["merges_sha256"] = hashlib.sha256("\n".join(f"{a} {b}" for a, b in pairs).encode()).hexdigest()
    summary["checksum_note"] = ("vocab_sha256 = sha256 of tokens in id order joined by '\\n'; "
                                "merges_sha256 = sha256 of 'left right' lines joined by '\\n', in merge order")
    out = {k: v for k, v in full.items() if k != "model"}
    out["model"] = model
    out["model_summary"] = summary
    return out


def gguf_metadata_listing(path):
    from gguf import GGUFReader

    lines = [f"### {os.path.basename(path)}", "", "| key | type | value(s) |", "| --- | --- | --- |"]
    fields = GGUFReader(path).fields
    for key, field in fields.items():
        if not (key.startswith("tokenizer.") or key == "general.architecture"):
            continue
        types = "/".join(t.name for t in field.types)
        value = field.contents()
        if isinstance(value, list):
            shown = f"len {len(value)}; first {json.dumps(value[:6], ensure_ascii=False)}"
            if key.endswith("token_type"):
                counts = {}
                for v in value:
                    counts[v] = counts.get(v, 0) + 1
                shown += f"; counts {dict(sorted(counts.items()))}"
        elif isinstance(value, str) and len(value) > 120:
            shown = f"{len(value)} chars: {json.dumps(value[:120], ensure_ascii=False)}..."
        else:
            shown = json.dumps(value, ensure_ascii=False)
        lines.append(f"| `{key}` | {types} | {shown.replace('|', '&#124;')} |")
    return "\n".join(lines) + "\n"


def dump(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT) if path.startswith(ROOT) else path}", file=sys.stderr)


def dump_pipeline(path, obj):
    """Like dump, but one added token per line (Gemma has 6384 of them)."""
    body = json.dumps({k: v for k, v in obj.items() if k != "added_tokens"}, ensure_ascii=False, indent=1)
    tokens = ",\n  ".join(json.dumps(t, ensure_ascii=False) for t in obj["added_tokens"])
    with open(path, "w", encoding="utf-8") as f:
        f.write(body[:-2] + ',\n "added_tokens": [\n  ' + tokens + "\n ]\n}\n")
    print(f"wrote {os.path.relpath(path, ROOT)}", file=sys.stderr)


def main(keys):
    with open(os.path.join(FIXTURES, "corpus.json"), encoding="utf-8") as f:
        corpus = json.load(f)
    os.makedirs(REFCACHE, exist_ok=True)
    for key in keys:
        name, gguf_path, tok = load(key)
        # Snapshot the backend right after loading: batch calls below leave padding/truncation set on it.
        backend_json = tok.backend_tokenizer.to_str(pretty=True)
        cases, failures = [], []
        for i, text in enumerate(corpus):
            ids = tok(text, add_special_tokens=True)["input_ids"]
            ids_no_special = tok(text, add_special_tokens=False)["input_ids"]
            case = {
                "i": i,
                "text": text,
                "ids": ids,
                "ids_no_special": ids_no_special,
                "decoded": tok.decode(ids, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            }
            if len(text) < OFFSETS_MAX_CHARS:
                enc = tok(text, add_special_tokens=True, return_offsets_mapping=True)
                assert enc["input_ids"] == ids
                case["offsets"] = [list(o) for o in enc["offset_mapping"]]
                case["offsets_bytes"] = byte_offsets(text, case["offsets"])
            if tok.decode(ids_no_special, skip_special_tokens=False) != text:
                failures.append(i)
            cases.append(case)
        ref = {"header": header(tok, name, gguf_path, corpus, failures), "batch": batch_section(tok), "cases": cases}
        dump(os.path.join(FIXTURES, f"{name}.json"), ref)
        if gguf_path:
            stripped = pipeline_json(backend_json)
            stripped["transformers_init"] = {
                k: ref["header"].get(k) for k in ("tokenizer_class", "bos_token", "eos_token", "pad_token", "unk_token",
                                                  "add_bos_token", "add_eos_token", "padding_side", "model_max_length")
            }
            dump_pipeline(os.path.join(FIXTURES, f"{name}.pipeline.json"), stripped)
            with open(os.path.join(REFCACHE, f"{name}.transformers-tokenizer.json"), "w", encoding="utf-8") as f:
                f.write(backend_json)
            with open(os.path.join(REFCACHE, f"{name}.gguf-tokenizer-metadata.md"), "w", encoding="utf-8") as f:
                f.write(gguf_metadata_listing(gguf_path))
        print(f"{name}: {len(cases)} cases, lossless={not failures} ({len(failures)} failures)", file=sys.stderr)


if __name__ == "__main__":
    args = sys.argv[1:] or list(MODELS)
    bad = [a for a in args if a not in MODELS]
    if bad:
        sys.exit(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    main(args)
