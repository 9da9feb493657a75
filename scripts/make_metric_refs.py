#!/usr/bin/env python3
"""Reference values of the evaluation metrics a Rust Trainer reports (BLEU, ROUGE, classification scores, seqeval's
entity-level scores), computed by the Python libraries everyone compares against, on a small sample written here.

    /work/venv-ref/bin/pip install -r scripts/requirements-reference.txt   # sacrebleu, rouge-score, seqeval, sklearn
    nice -n 10 /work/venv-ref/bin/python scripts/make_metric_refs.py

Writes tests/fixtures/training/metrics.json (reruns give byte-identical files). Made with sacrebleu 2.6.0,
rouge-score 0.1.2 (+ nltk 3.10.4 for its Porter stemmer), scikit-learn 1.9.1, seqeval 1.2.2; the exact versions are
recorded under "versions". Floats keep 12 significant digits (every value is a ratio of small counts or a BLEU
built from them; compare with a relative tolerance of ~1e-9; BLEU's scores are on 0..100, its bp can be tiny).

metrics.json:
  versions
  bleu      inputs: hypotheses and references as REFERENCE STREAMS (refs[k][i] = k-th reference of segment i; null
            where segment i has fewer references: sacrebleu drops None, so segments may have 1 or 2 references).
            corpus: sacrebleu.corpus_bleu(hyps, refs) with the defaults (tokenize 13a, smooth_method exp, mixed
            case, force=False, max n-gram 4): score, counts[4], totals[4], precisions[4], bp, sys_len, ref_len,
            signature; corpus_lowercase: the same with lowercase=True.
            sentence: per segment sacrebleu.sentence_bleu(hyp, [its non-null refs]) (defaults: smooth exp,
            use_effective_order=True), same fields.
            Cases: exact match, case and punctuation differences, Papineni et al.'s example, 13a splitting punctuation
            and keeping "don't", an EMPTY hypothesis, a one-word hypothesis (brevity penalty), numbers with , . % $.
            ref_len with several references is the length of the reference CLOSEST to the hypothesis length (ties:
            the shorter), summed over segments.
  rouge     inputs: prediction/target pairs (rouge-score's argument order is score(target, prediction)).
            per pair, for use_stemmer false and true: rouge1, rouge2, rougeL, rougeLsum -> precision, recall,
            fmeasure (RougeScorer([...], use_stemmer=...).score(target, prediction)); and score_multi over the pair's
            targets (the target with the best fmeasure, per rouge type). rouge-score's DefaultTokenizer lowercases,
            replaces every character outside [a-z0-9] by a space, splits on whitespace, and (stemmer on) applies
            nltk's PorterStemmer to tokens longer than 3 characters. rougeLsum splits on "\\n" only (split_summaries
            False) and is the union-LCS summary-level score; an empty side gives 0/0/0.
  classification  sklearn on a 4-class example (true labels 0..3, predictions 0..4: class 3 is never predicted,
            class 4 never true, so zero_division=0 matters) and a binary one: accuracy_score;
            precision/recall/f1 with average macro, micro, weighted and None (per class, labels = sorted union of
            y_true and y_pred), zero_division=0; confusion_matrix; support; binary: average="binary" (pos_label 1).
  seqeval   inputs: y_true, y_pred as lists of IOB2 tag sequences (edge cases: an entity at the end of a sequence,
            I- without B- at the start of a sequence, B- followed by I- of another type, two adjacent B-PER, a
            sequence of only O, several types). default: seqeval's default mode (conlleval-like chunking: an I-X
            after O or after another type STARTS an entity); strict: mode="strict", scheme=IOB2 (an I-X not preceded
            by B-X/I-X is no entity at all). For each: accuracy_score (token level), precision/recall/f1 (micro),
            classification_report(output_dict=True, zero_division=0) with per-type precision/recall/f1-score/support
            and "micro avg", "macro avg", "weighted avg"; plus the entity spans each mode extracts (type, start,
            end inclusive) per sequence, from seqeval.metrics.sequence_labeling.get_entities (default) and
            seqeval.scheme.Entities (strict).
"""

import json
import os
import sys
from importlib.metadata import version

import sacrebleu
import sklearn
from rouge_score import rouge_scorer
from seqeval.metrics import accuracy_score as seq_accuracy
from seqeval.metrics import classification_report as seq_report
from seqeval.metrics import f1_score as seq_f1
from seqeval.metrics import precision_score as seq_precision
from seqeval.metrics import recall_score as seq_recall
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, Entities
from sklearn import metrics as skm

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "training", "metrics.json")
SIGNIFICANT = 12

# (hypothesis, [reference, ...]) with one or two references.
BLEU_SEGMENTS = [
    ("The cat sat on the mat.", ["The cat sat on the mat.", "A cat was sitting on the mat."]),
    ("the cat is on the mat", ["There is a cat on the mat.", "The cat is on the mat."]),
    ("It is a guide to action which ensures that the military always obeys the commands of the party.",
     ["It is a guide to action that ensures that the military will forever heed Party commands.",
      "It is the guiding principle which guarantees the military forces always being under the command of the "
      "Party."]),
    ("Hello, world!", ["Hello world"]),
    ("", ["Nothing was said at all."]),
    ('He said: "don\'t do it" -- twice.', ['He said "don\'t do it" twice.', "He told them twice: don't."]),
    ("short", ["This is a much longer reference sentence than the hypothesis."]),
    ("In 2023, the price rose 3.5% to $1,200.", ["The price rose 3.5% to $1,200 in 2023."]),
]

# (prediction, [target, ...]); rougeLsum sees "\n" as a sentence break.
ROUGE_PAIRS = [
    ("The cat sat on the mat.", ["The cat sat on the mat."]),
    ("the cat was found under the bed", ["The cat was under the bed.", "A cat hid beneath the bed."]),
    ("Police killed the gunman.", ["The gunman was shot dead by police."]),
    ("The runners were running quickly; he runs daily.", ["A runner ran quick. He ran every day!"]),
    ("", ["Nothing was predicted."]),
    ("The economy grew 3% in 2023.\nUnemployment fell.", ["Unemployment fell sharply.\nThe economy grew by 3% in 2023."]),
    ("It's a DOG-friendly café, isn't it?", ["its a dog friendly cafe isnt it"]),
    ("one two three four five", ["five four three two one"]),
]
ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]

CLS_TRUE = [0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 1, 2, 2, 1, 0, 3]
CLS_PRED = [0, 2, 2, 0, 0, 1, 1, 4, 0, 1, 1, 2, 0, 1, 0, 2]
BIN_TRUE = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1]
BIN_PRED = [1, 0, 0, 1, 0, 1, 1, 0, 1, 0]

SEQ_TRUE = [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["O", "B-ORG", "I-ORG", "I-ORG", "O", "B-PER"],
    ["I-LOC", "I-LOC", "O", "B-MISC", "I-MISC"],
    ["O", "O", "O"],
    ["B-PER", "B-PER", "O", "B-LOC", "I-LOC"],
    ["B-ORG", "I-ORG", "O", "B-LOC", "I-ORG", "O"],
]
SEQ_PRED = [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["O", "B-ORG", "I-ORG", "O", "O", "B-PER"],
    ["B-LOC", "I-LOC", "O", "B-MISC", "I-MISC"],
    ["O", "B-PER", "O"],
    ["B-PER", "I-PER", "O", "B-LOC", "I-ORG"],
    ["B-ORG", "I-ORG", "O", "B-LOC", "I-ORG", "O"],
]


def r(x):
    return float(f"{float(x):.{SIGNIFICANT}g}")


def bleu_fields(b):
    return {
        "score": r(b.score),
        "counts": [int(c) for c in b.counts],
        "totals": [int(t) for t in b.totals],
        "precisions": [r(p) for p in b.precisions],
        "bp": r(b.bp),
        "sys_len": int(b.sys_len),
        "ref_len": int(b.ref_len),
    }


def bleu_refs():
    hyps = [h for h, _ in BLEU_SEGMENTS]
    n_streams = max(len(refs) for _, refs in BLEU_SEGMENTS)
    streams = [[refs[k] if k < len(refs) else None for _, refs in BLEU_SEGMENTS] for k in range(n_streams)]
    corpus = sacrebleu.corpus_bleu(hyps, streams)
    metric = sacrebleu.BLEU()
    metric.corpus_score(hyps, streams)
    corpus_lc = sacrebleu.corpus_bleu(hyps, streams, lowercase=True)
    out = {
        "inputs": {"hypotheses": hyps, "references": streams},
        "corpus": dict(bleu_fields(corpus), signature=str(metric.get_signature())),
        "corpus_lowercase": bleu_fields(corpus_lc),
        "sentence": [],
    }
    for hyp, refs in BLEU_SEGMENTS:
        s = sacrebleu.sentence_bleu(hyp, refs)
        out["sentence"].append(dict(bleu_fields(s), hypothesis=hyp, references=refs))
    return out


def rouge_refs():
    out = {"rouge_types": ROUGE_TYPES, "pairs": []}
    scorers = {stem: rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=stem) for stem in (False, True)}
    for pred, targets in ROUGE_PAIRS:
        entry = {"prediction": pred, "targets": targets}
        for stem, scorer in scorers.items():
            key = "stemmer" if stem else "no_stemmer"
            score = scorer.score(targets[0], pred)
            multi = scorer.score_multi(targets, pred)
            fmt = lambda d: {t: {"precision": r(d[t].precision), "recall": r(d[t].recall),
                                 "fmeasure": r(d[t].fmeasure)} for t in ROUGE_TYPES}
            entry[key] = {"first_target": fmt(score), "score_multi": fmt(multi)}
            entry[key]["tokens"] = {"prediction": scorer._tokenizer.tokenize(pred),
                                    "first_target": scorer._tokenizer.tokenize(targets[0])}
        out["pairs"].append(entry)
    return out


def prf(y_true, y_pred, average, **kw):
    p, rc, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0, **kw)
    if average is None:
        return {"precision": [r(x) for x in p], "recall": [r(x) for x in rc], "f1": [r(x) for x in f]}
    return {"precision": r(p), "recall": r(rc), "f1": r(f)}


def classification_refs():
    labels = sorted(set(CLS_TRUE) | set(CLS_PRED))
    multi = {
        "y_true": CLS_TRUE,
        "y_pred": CLS_PRED,
        "labels": labels,
        "accuracy": r(skm.accuracy_score(CLS_TRUE, CLS_PRED)),
        "macro": prf(CLS_TRUE, CLS_PRED, "macro"),
        "micro": prf(CLS_TRUE, CLS_PRED, "micro"),
        "weighted": prf(CLS_TRUE, CLS_PRED, "weighted"),
        "per_class": prf(CLS_TRUE, CLS_PRED, None),
        "support": [int(x) for x in skm.precision_recall_fscore_support(CLS_TRUE, CLS_PRED, zero_division=0)[3]],
        "confusion_matrix": skm.confusion_matrix(CLS_TRUE, CLS_PRED).tolist(),
        "note": "rows of confusion_matrix are true labels, columns predictions, both over `labels`; macro averages "
                "over all 5 labels (class 4 counts with recall 0, class 3 with precision 0); weighted uses true "
                "support (class 4 has weight 0); micro equals accuracy here",
    }
    binary = {
        "y_true": BIN_TRUE,
        "y_pred": BIN_PRED,
        "accuracy": r(skm.accuracy_score(BIN_TRUE, BIN_PRED)),
        "binary": prf(BIN_TRUE, BIN_PRED, "binary"),
        "macro": prf(BIN_TRUE, BIN_PRED, "macro"),
        "confusion_matrix": skm.confusion_matrix(BIN_TRUE, BIN_PRED).tolist(),
    }
    return {"multiclass": multi, "binary": binary, "zero_division": 0}


def seq_mode(kw):
    report = seq_report(SEQ_TRUE, SEQ_PRED, output_dict=True, zero_division=0, **kw)
    report = {k: {m: (int(v) if m == "support" else r(v)) for m, v in d.items()} for k, d in report.items()}
    if kw:
        ents = lambda seqs: [[[e.tag, e.start, e.end - 1] for e in
                              sorted(Entities([s], scheme=kw["scheme"]).entities[0], key=lambda e: (e.start, e.end))]
                             for s in seqs]
    else:
        ents = lambda seqs: [[[t, s, e] for t, s, e in get_entities(seq)] for seq in seqs]
    return {
        "accuracy": r(seq_accuracy(SEQ_TRUE, SEQ_PRED)),
        "precision": r(seq_precision(SEQ_TRUE, SEQ_PRED, zero_division=0, **kw)),
        "recall": r(seq_recall(SEQ_TRUE, SEQ_PRED, zero_division=0, **kw)),
        "f1": r(seq_f1(SEQ_TRUE, SEQ_PRED, zero_division=0, **kw)),
        "report": report,
        "entities_true": ents(SEQ_TRUE),
        "entities_pred": ents(SEQ_PRED),
    }


def seqeval_refs():
    return {
        "y_true": SEQ_TRUE,
        "y_pred": SEQ_PRED,
        "default": seq_mode({}),
        "strict": dict(seq_mode({"mode": "strict", "scheme": IOB2}), call='mode="strict", scheme=IOB2'),
        "note": "entities are [type, start, end] with end inclusive; precision/recall/f1 are micro over entities "
                "(exact type and span); accuracy is token-level and the same in both modes",
    }


def main():
    data = {
        "versions": {name: version(name) for name in ("sacrebleu", "rouge-score", "nltk", "scikit-learn", "seqeval",
                                                     "numpy")},
        "python": sys.version.split()[0],
        "bleu": bleu_refs(),
        "rouge": rouge_refs(),
        "classification": classification_refs(),
        "seqeval": seqeval_refs(),
    }
    assert data["versions"]["scikit-learn"] == sklearn.__version__
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
