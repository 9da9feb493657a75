#!/usr/bin/env python3
"""The corpus and tokenizer for training a small causal LM from scratch (examples/train/tiny-llama-from-scratch.toml,
crates/train/tests/from_scratch.rs).

    nice -n 10 /work/venv-ref/bin/python scripts/make_scratch_corpus.py [path/to/eighty.txt]

Text: Jules Verne, "Around the World in Eighty Days" (George Makepeace Towle's 1873 English translation), public
domain. The file is Project Gutenberg EBook #103 as shipped in the esaxx-rs 0.1.10 crate (`data/eighty.txt`,
found under ~/.cargo/registry/src/*/esaxx-rs-0.1.10/ once cargo has fetched the workspace's dependencies;
sha256 checked below). Only the book's own text is kept: the Project Gutenberg header, table of contents, footer
and licence are dropped, so no Project Gutenberg trademark text is redistributed.

Each paragraph (lines separated by a blank line, joined with single spaces) is one document, a JSON line
{"text": ...}. Chapters I-XXII go to train.jsonl, chapter XXIII to eval.jsonl; the "Chapter N" heading lines are
dropped, the chapter titles stay as paragraphs.

Tokenizer: a byte-level BPE (GPT-2's scheme: ByteLevel pre-tokenizer and decoder, no normalizer) with 2,048 entries,
trained by the `tokenizers` library on train.jsonl; `<|endoftext|>` (id 0) is its only special token and serves as
EOS, BOS and padding, as GPT-2's does. Saved with transformers' PreTrainedTokenizerFast.save_pretrained
(tokenizer.json, tokenizer_config.json) into tokenizer/.

Deterministic: reruns give byte-identical files (checked with different PYTHONHASHSEEDs).
"""

import glob
import hashlib
import json
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "training", "scratch")
SHA256 = "f95647ced7981db2c1c7c50c77a1b89e3df569d9a20e8ad5c9e40ed2d2f4d268"
VOCAB_SIZE = 2048
EOS = "<|endoftext|>"
TRAIN_CHAPTERS = 22  # chapters 1..22 train, chapter 23 eval


def source_path():
    if len(sys.argv) > 1:
        return sys.argv[1]
    pattern = os.path.expanduser("~/.cargo/registry/src/*/esaxx-rs-0.1.10/data/eighty.txt")
    found = sorted(glob.glob(pattern))
    if not found:
        sys.exit(f"no {pattern}: run `cargo fetch` in the workspace, or give the file's path")
    return found[0]


def chapters(text):
    """The book's chapters, each a list of paragraphs."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    start = text.index("\nChapter I\n")
    end = text.index("End of Project Gutenberg's")
    body = text[start:end]
    parts = re.split(r"\nChapter [IVXL]+\n", body)
    out = []
    for part in parts[1:]:
        paragraphs = []
        for block in re.split(r"\n\s*\n", part):
            p = re.sub(r"\s+", " ", block).strip()
            if p:
                paragraphs.append(p)
        out.append(paragraphs)
    return out


def write_jsonl(path, paragraphs):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for p in paragraphs:
            f.write(json.dumps({"text": p}, ensure_ascii=False) + "\n")


def train_tokenizer(paragraphs, folder):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(paragraphs, trainer)
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS, model_max_length=1024
    )
    fast.save_pretrained(folder)


def main():
    path = source_path()
    data = open(path, "rb").read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        sys.exit(f"{path}: sha256 {digest}, expected {SHA256}")
    book = chapters(data.decode("utf-8"))
    assert len(book) == 37, len(book)
    train = [p for ch in book[:TRAIN_CHAPTERS] for p in ch]
    evals = book[TRAIN_CHAPTERS]
    os.makedirs(OUT, exist_ok=True)
    write_jsonl(os.path.join(OUT, "train.jsonl"), train)
    write_jsonl(os.path.join(OUT, "eval.jsonl"), evals)
    train_tokenizer(train, os.path.join(OUT, "tokenizer"))
    sizes = {f: os.path.getsize(os.path.join(OUT, f)) for f in ("train.jsonl", "eval.jsonl")}
    print(f"{len(train)} train / {len(evals)} eval paragraphs; bytes {sizes}")


if __name__ == "__main__":
    main()
