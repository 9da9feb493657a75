#!/usr/bin/env python3
"""Semantic-search reference data: sentence-transformers' `util.semantic_search` over the 50 committed sentences.

    scripts/fetch_models.sh --only minilm
    nice -n 10 /work/venv-ref/bin/python scripts/make_semantic_search_refs.py

The corpus is tests/fixtures/encoders/sentences.json (the 50 sentences of make_encoder_refs.py), embedded with
all-MiniLM-L6-v2 by SentenceTransformer.encode (batch_size 32, float32, CPU); each query in QUERIES is embedded
alone and `util.semantic_search(query_embeddings, corpus_embeddings, top_k=TOP_K)` ranks the corpus by cosine
similarity. Writes tests/fixtures/encoders/semantic_search.json: versions, top_k, and per query the hits
(corpus_id, score rounded to 6 decimals) best first. Made with sentence-transformers 6.2.0, torch 2.15.0.
"""

import json
import os

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer, util

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "encoders")
MODEL = os.path.expanduser("~/.cache/ferroformers/models/all-MiniLM-L6-v2")
TOP_K = 5
QUERIES = [
    "How is the weather today?",
    "A recipe for dinner",
    "Learning a programming language",
    "Where can I travel this summer?",
]


def main():
    torch.set_num_threads(2)
    with open(os.path.join(FIXTURES, "sentences.json"), encoding="utf-8") as f:
        corpus = json.load(f)
    model = SentenceTransformer(MODEL, device="cpu")
    corpus_emb = model.encode(corpus, batch_size=32, convert_to_tensor=True)
    query_emb = model.encode(QUERIES, batch_size=1, convert_to_tensor=True)
    results = util.semantic_search(query_emb, corpus_emb, top_k=TOP_K)
    doc = {
        "description": "util.semantic_search over tests/fixtures/encoders/sentences.json; see "
        "scripts/make_semantic_search_refs.py",
        "versions": {"sentence_transformers": sentence_transformers.__version__, "torch": torch.__version__},
        "model": "all-MiniLM-L6-v2",
        "top_k": TOP_K,
        "queries": [
            {"query": q, "hits": [{"corpus_id": h["corpus_id"], "score": round(h["score"], 6)} for h in hits]}
            for q, hits in zip(QUERIES, results)
        ],
    }
    with open(os.path.join(FIXTURES, "semantic_search.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
