#!/usr/bin/env python3
"""A binary sentiment dataset (English movie-review sentences, human-rated) for fine-tuning all-MiniLM-L6-v2,
taken from a package on PyPI, since the fixtures must not depend on the Hugging Face Hub.

    nice -n 10 /work/venv-ref/bin/python scripts/make_sentiment_dataset.py

Needs only the standard library and `python3 -m pip` (the package is downloaded with `pip download --no-deps
--no-binary :all:`, never installed or imported). Reruns give byte-identical files.

Source: the sdist of vaderSentiment 3.3.2 on PyPI (C.J. Hutto; sha256 checked below). The wheel has only the lexicon;
the sdist also ships additional_resources/hutto_ICWSM_2014.tar.gz, the data set of Hutto & Gilbert, "VADER: A
Parsimonious Rule-based Model for Sentiment Analysis of Social Media Text", ICWSM 2014. Licence: MIT (LICENSE.txt
"Copyright (c) 2016 C.J. Hutto", PKG-INFO "License: MIT License" and the classifier "License :: OSI Approved :: MIT
License"; the script checks all three and copies LICENSE.txt next to the data, as MIT asks). We use
hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt: 10,605 sentence-level snippets of rottentomatoes.com reviews
(from Pang & Lee 2004's movie reviews), each with the mean of at least 20 human sentiment ratings on -4..+4.
Tab-separated: id, mean rating, text; UTF-8, CRLF.

Writes tests/fixtures/training/sentiment/:
  train.jsonl, test.jsonl   one {"text": ..., "label": 0|1} per line (0 negative, 1 positive), UTF-8 (not
                            \\u-escaped), keys in that order, json.dumps(ensure_ascii=False), "\\n" line ends
  dataset_info.json         id2label / label2id, the source (package, version, sdist sha256, file, licence),
                            every choice below, counts per split and label, sha256 of train.jsonl and test.jsonl
  LICENSE                   the package's LICENSE.txt, verbatim (MIT: the notice must travel with the data)

Choices:
  * text: whitespace runs (625 snippets have double spaces) collapsed to one space and the ends stripped; nothing
    else changed (case, the ''double single quotes'' of the source, accents and en dashes kept).
  * label: mean rating >= +1.5 -> 1 (positive), <= -1.5 -> 0 (negative); the 3,526 snippets in between are dropped
    as neutral or mixed (1.5 on the -4..+4 scale is "clearly" rather than "slightly"; it keeps 7,079 snippets, nearly
    balanced: 3,628 / 3,451).
  * dedup: by text after the whitespace fix, compared case-insensitively (str.casefold); a text seen with both labels
    would be dropped entirely (none is), one seen twice with one label is kept once (first occurrence in file order;
    2 such), leaving 7,077: 3,450 negative, 3,627 positive.
  * size: a sample of PER_CLASS = 2,000 snippets of each label (random.Random(SEED).sample over each label's
    snippets in file order), 4,000 in all, ~0.55 MB: enough for a held-out accuracy worth reading, small enough to
    commit and to fine-tune MiniLM for an epoch on a 2-core CPU.
  * split: per label, a random.Random(SEED + 1) shuffle, the first 80% to train and the rest to test (stratified:
    1,600 + 1,600 train, 400 + 400 test); each split then shuffled with random.Random(SEED + 2) so that the labels
    are interleaved (training without a sampler still sees both classes in every batch).
"""

import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "training", "sentiment")

PACKAGE = "vaderSentiment"
VERSION = "3.3.2"
SDIST = f"{PACKAGE}-{VERSION}.tar.gz"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_TAR = f"{PACKAGE}-{VERSION}/additional_resources/hutto_ICWSM_2014.tar.gz"
DATA_FILE = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
EXPECTED_ROWS = 10605

THRESHOLD = 1.5
PER_CLASS = 2000
TRAIN_FRACTION = 0.8
SEED = 20240801
ID2LABEL = {0: "negative", 1: "positive"}


def download_sdist(tmp):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
         "-d", tmp, f"{PACKAGE}=={VERSION}"],
        check=True, stdout=subprocess.DEVNULL,
    )
    path = os.path.join(tmp, SDIST)
    with open(path, "rb") as f:
        blob = f.read()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SDIST_SHA256:
        sys.exit(f"{SDIST}: sha256 {digest}, expected {SDIST_SHA256}")
    return blob


def read_member(tar, name):
    member = tar.extractfile(name)
    if member is None:
        sys.exit(f"{name} missing from the archive")
    return member.read()


def check_licence(outer):
    licence = read_member(outer, f"{PACKAGE}-{VERSION}/LICENSE.txt").decode("utf-8")
    pkg_info = read_member(outer, f"{PACKAGE}-{VERSION}/PKG-INFO").decode("utf-8").replace("\r\n", "\n")
    assert licence.startswith("The MIT License (MIT)") and "Copyright (c) 2016 C.J. Hutto" in licence, licence[:200]
    assert "\nLicense: MIT License\n" in pkg_info
    assert "Classifier: License :: OSI Approved :: MIT License" in pkg_info
    return licence


def parse(raw):
    rows = []
    for line in raw.decode("utf-8").splitlines():
        if not line.strip():
            continue
        ident, rating, text = line.split("\t")
        rows.append((ident, float(rating), re.sub(r"\s+", " ", text).strip()))
    assert len(rows) == EXPECTED_ROWS, len(rows)
    return rows


def main():
    with tempfile.TemporaryDirectory() as tmp:
        blob = download_sdist(tmp)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as outer:
        licence = check_licence(outer)
        inner_blob = read_member(outer, INNER_TAR)
    with tarfile.open(fileobj=io.BytesIO(inner_blob), mode="r:gz") as inner:
        rows = parse(read_member(inner, DATA_FILE))

    labelled = [(text, 1 if r >= THRESHOLD else 0) for _, r, text in rows if abs(r) >= THRESHOLD and text]
    labels_of = {}
    for text, label in labelled:
        labels_of.setdefault(text.casefold(), set()).add(label)
    seen, kept, conflicting = set(), [], 0
    for text, label in labelled:
        key = text.casefold()
        if len(labels_of[key]) > 1:
            conflicting += 1
            continue
        if key in seen:
            continue
        seen.add(key)
        kept.append((text, label))

    train, test = [], []
    per_label_available = {}
    for label in (0, 1):
        pool = [ex for ex in kept if ex[1] == label]
        per_label_available[label] = len(pool)
        sample = random.Random(SEED).sample(pool, PER_CLASS)
        random.Random(SEED + 1).shuffle(sample)
        cut = int(round(PER_CLASS * TRAIN_FRACTION))
        train += sample[:cut]
        test += sample[cut:]
    random.Random(SEED + 2).shuffle(train)
    random.Random(SEED + 2).shuffle(test)

    os.makedirs(OUT_DIR, exist_ok=True)
    digests = {}
    for name, split in (("train.jsonl", train), ("test.jsonl", test)):
        data = "".join(json.dumps({"text": t, "label": l}, ensure_ascii=False) + "\n" for t, l in split).encode()
        with open(os.path.join(OUT_DIR, name), "wb") as f:
            f.write(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    with open(os.path.join(OUT_DIR, "LICENSE"), "w", encoding="utf-8", newline="") as f:
        f.write(licence)

    info = {
        "id2label": {str(k): v for k, v in ID2LABEL.items()},
        "label2id": {v: k for k, v in ID2LABEL.items()},
        "source": {
            "package": PACKAGE,
            "version": VERSION,
            "registry": "PyPI (sdist; the wheel lacks the data)",
            "sdist": SDIST,
            "sdist_sha256": SDIST_SHA256,
            "file": f"{INNER_TAR} -> {DATA_FILE}",
            "licence": "MIT (LICENSE.txt: Copyright (c) 2016 C.J. Hutto)",
            "citation": "Hutto, C.J. & Gilbert, E.E. (2014). VADER: A Parsimonious Rule-based Model for Sentiment "
                        "Analysis of Social Media Text. ICWSM-14.",
            "origin": "sentence-level snippets of rottentomatoes.com movie reviews (Pang & Lee 2004), each rated "
                      "-4..+4 by at least 20 people; the file gives the mean",
        },
        "choices": {
            "text": "whitespace runs collapsed to one space, ends stripped",
            "label_rule": f"mean rating >= {THRESHOLD} -> 1, <= -{THRESHOLD} -> 0, others dropped",
            "dedup": "case-insensitive (casefold) on the cleaned text; first occurrence kept; texts seen with both "
                     "labels dropped",
            "per_class": PER_CLASS,
            "train_fraction": TRAIN_FRACTION,
            "seed": SEED,
        },
        "counts": {
            "source_rows": len(rows),
            "past_threshold": len(labelled),
            "dropped_conflicting_label": conflicting,
            "after_dedup": len(kept),
            "after_dedup_per_label": {ID2LABEL[k]: v for k, v in per_label_available.items()},
            "train": {ID2LABEL[l]: sum(1 for _, x in train if x == l) for l in (0, 1)},
            "test": {ID2LABEL[l]: sum(1 for _, x in test if x == l) for l in (0, 1)},
        },
        "sha256": digests,
    }
    with open(os.path.join(OUT_DIR, "dataset_info.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(json.dumps(info["counts"]))


if __name__ == "__main__":
    main()
