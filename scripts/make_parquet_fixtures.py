#!/usr/bin/env python3
"""Small Parquet files for the Rust Parquet dataset reader (crates/train/src/parquet.rs), written by pyarrow the way
Hugging Face datasets write theirs (`refs/convert/parquet` shards: pyarrow's defaults, snappy, dictionary-encoded
strings, ClassLabel columns as int64), each with the rows pyarrow reads back from it (`Table.to_pylist()`) as JSONL,
so the Rust test compares row for row against pyarrow.

    /work/venv-ref/bin/pip install pyarrow==26.0.1
    /work/venv-ref/bin/python scripts/make_parquet_fixtures.py

Writes tests/fixtures/training/parquet/:
  sentiment-{snappy,zstd,gzip}.parquet  the first 40 rows of sentiment/train.jsonl ({text: string, label: int64}) in
                                        row groups of 16 (3 groups); zstd also with version-2 data pages
  ner.parquet                           9 sentences in conll2003's columns (id, tokens list<string>, pos_tags,
                                        chunk_tags, ner_tags list<int64>), tags in the order of the tiny
                                        bert-token-cls model (O B-PER I-PER B-LOC I-LOC B-ORG I-ORG), 2 row groups
  chat.parquet                          chat/test.jsonl (messages: list<struct<role, content>>), 2 row groups
  types.parquet                         every column type the reader maps: int8..int64, uint8..uint64, float16/32/64,
                                        bool, null, string, large_string, dictionary<int32, string>, list, large_list,
                                        list<list>, struct, list<struct>, with nulls, empty lists and null items
  <name>.jsonl                          beside each of those: pyarrow's rows, one JSON object a line
  unsupported.parquet                   a text column and an HF Image column (struct<bytes: binary, path: string>)
  timestamp.parquet                     a text column and a timestamp[us] column
  sentiment-brotli.parquet              5 sentiment rows with brotli pages (a codec the reader is built without)
  empty.parquet                         the sentiment columns and no rows

Every table is checked to read back equal to the rows it was made from. Deterministic: no randomness, and pyarrow's
writer records its version in the footer (`created_by`), so reruns with this pyarrow give identical bytes.
"""

import json
import os
import struct

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
TRAINING = os.path.join(ROOT, "tests", "fixtures", "training")
OUT = os.path.join(TRAINING, "parquet")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write(name, table, rows=None, **options):
    """Writes `name`.parquet and, when `rows` (what it must read back as) is given, `name`.jsonl with pyarrow's rows."""
    path = os.path.join(OUT, f"{name}.parquet")
    pq.write_table(table, path, **options)
    back = pq.read_table(path)
    read = back.to_pylist()
    if rows is None:
        return
    assert read == rows, f"{name}: pyarrow reads back other rows than were written"
    with open(os.path.join(OUT, f"{name}.jsonl"), "w", encoding="utf-8") as f:
        for row in read:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    groups = pq.ParquetFile(path).metadata.num_row_groups
    print(f"{name}.parquet: {len(read)} rows, {groups} row groups, {os.path.getsize(path)} bytes")


SENTIMENT_SCHEMA = pa.schema([("text", pa.string()), ("label", pa.int64())])

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
# (words, entity tags); pos and chunk tags are conll2003-style ids, only there so the columns look like its.
NER = [
    ("John Smith lives in New York .", "B-PER I-PER O O B-LOC I-LOC O"),
    ("Mary works for Google in London .", "B-PER O O B-ORG O B-LOC O"),
    ("Paris is a city .", "B-LOC O O O O"),
    ("The European Union met in Brussels .", "O B-ORG I-ORG O O B-LOC O"),
    ("Angela Merkel visited Tokyo .", "B-PER I-PER O B-LOC O"),
    ("Apple opened a store .", "B-ORG O O O O"),
    ("Ünal spoke to Reuters .", "B-PER O O B-ORG O"),
    ("Rain .", "O O"),
    ("Berlin and Rome", "B-LOC O B-LOC"),
]


def ner_rows():
    rows = []
    for i, (words, tags) in enumerate(NER):
        words, tags = words.split(), tags.split()
        assert len(words) == len(tags)
        rows.append({
            "id": str(i),
            "tokens": words,
            "pos_tags": [(3 * j + i) % 47 for j in range(len(words))],
            "chunk_tags": [(j + i) % 23 for j in range(len(words))],
            "ner_tags": [NER_LABELS.index(t) for t in tags],
        })
    return rows


TYPES_SCHEMA = pa.schema([
    ("i8", pa.int8()), ("i16", pa.int16()), ("i32", pa.int32()), ("i64", pa.int64()),
    ("u8", pa.uint8()), ("u16", pa.uint16()), ("u32", pa.uint32()), ("u64", pa.uint64()),
    ("f16", pa.float16()), ("f32", pa.float32()), ("f64", pa.float64()),
    ("flag", pa.bool_()), ("nothing", pa.null()),
    ("s", pa.string()), ("ls", pa.large_string()), ("dict", pa.dictionary(pa.int32(), pa.string())),
    ("ints", pa.list_(pa.int64())), ("words", pa.large_list(pa.string())), ("grid", pa.list_(pa.list_(pa.int32()))),
    ("point", pa.struct([("x", pa.float64()), ("name", pa.string())])),
    ("turns", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
])

# 0.1 as float32 reads back as the double nearest that float (0.10000000149011612); the reader must widen it alike.
F32_TENTH = struct.unpack("<f", struct.pack("<f", 0.1))[0]

TYPES = [
    {"i8": -128, "i16": -32768, "i32": -2147483648, "i64": -9223372036854775808,
     "u8": 255, "u16": 65535, "u32": 4294967295, "u64": 18446744073709551615,
     "f16": 0.5, "f32": F32_TENTH, "f64": 0.1, "flag": True, "nothing": None,
     "s": "plain", "ls": "large", "dict": "red",
     "ints": [1, 2, 3], "words": ["a", "b"], "grid": [[1, 2], [], [3]],
     "point": {"x": 1.5, "name": "p"}, "turns": [{"role": "user", "content": "hi"}]},
    {"i8": 127, "i16": 32767, "i32": 2147483647, "i64": 9223372036854775807,
     "u8": 0, "u16": 0, "u32": 0, "u64": 0,
     "f16": -2.25, "f32": 3.4028234663852886e38, "f64": -1e-300, "flag": False, "nothing": None,
     "s": "ünïcödé ✓ 漢字", "ls": "", "dict": "blue",
     "ints": [], "words": [], "grid": [],
     "point": {"x": -0.0, "name": None}, "turns": []},
    {"i8": None, "i16": None, "i32": None, "i64": None,
     "u8": None, "u16": None, "u32": None, "u64": None,
     "f16": None, "f32": None, "f64": None, "flag": None, "nothing": None,
     "s": None, "ls": None, "dict": None,
     "ints": None, "words": None, "grid": None,
     "point": None, "turns": None},
    {"i8": 0, "i16": 1, "i32": 2, "i64": 3, "u8": 4, "u16": 5, "u32": 6, "u64": 7,
     "f16": 65504.0, "f32": 2.0, "f64": 12345.678, "flag": True, "nothing": None,
     "s": "line\nbreak \"quoted\"", "ls": "x" * 40, "dict": "red",
     "ints": [None, 7], "words": ["only", None], "grid": [None, [4]],
     "point": {"x": None, "name": "q"}, "turns": [{"role": "system", "content": None},
                                                   {"role": "assistant", "content": "ok"}]},
]


def main():
    os.makedirs(OUT, exist_ok=True)
    sentiment = read_jsonl(os.path.join(TRAINING, "sentiment", "train.jsonl"))[:40]
    table = pa.Table.from_pylist(sentiment, schema=SENTIMENT_SCHEMA)
    write("sentiment-snappy", table, sentiment, row_group_size=16, compression="snappy")
    write("sentiment-zstd", table, sentiment, row_group_size=16, compression="zstd", data_page_version="2.0")
    write("sentiment-gzip", table, sentiment, row_group_size=16, compression="gzip")
    write("sentiment-brotli", table.slice(0, 5), compression="brotli")
    write("empty", table.slice(0, 0))

    ner = ner_rows()
    ner_schema = pa.schema([("id", pa.string()), ("tokens", pa.list_(pa.string())),
                            ("pos_tags", pa.list_(pa.int64())), ("chunk_tags", pa.list_(pa.int64())),
                            ("ner_tags", pa.list_(pa.int64()))])
    write("ner", pa.Table.from_pylist(ner, schema=ner_schema), ner, row_group_size=5)

    chat = read_jsonl(os.path.join(TRAINING, "chat", "test.jsonl"))
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    chat_schema = pa.schema([("messages", pa.list_(message))])
    write("chat", pa.Table.from_pylist(chat, schema=chat_schema), chat, row_group_size=4)

    write("types", pa.Table.from_pylist(TYPES, schema=TYPES_SCHEMA), TYPES, row_group_size=2)

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    unsupported = [{"text": "a picture", "image": {"bytes": b"\x89PNG\r\n", "path": "a.png"}}]
    write("unsupported", pa.Table.from_pylist(unsupported, schema=pa.schema([("text", pa.string()), ("image", image)])))
    dated = pa.table({"text": ["a dated line"], "created": pa.array([0], pa.timestamp("us"))})
    write("timestamp", dated)


if __name__ == "__main__":
    main()
