#!/usr/bin/env python3
"""Small synthetic tokenizer checkpoints whose side files exercise what `AutoTokenizer.from_pretrained`
reads beside tokenizer.json, with what transformers itself makes of each, for
crates/tokenizers/tests/tokenizer_config.rs.

    /work/venv-ref/bin/python scripts/make_tokenizer_config_refs.py

Needs only `tokenizers` and `transformers` (no model download, no torch). Three tiny tokenizers are
built with the `tokenizers` library from tests/fixtures/tokenizers/corpus.json (lines shuffled with a
fixed seed):
  byte-level BPE (GPT-2/Qwen style) and Metaspace BPE (SentencePiece/Llama style, <unk>), trained;
  WordPiece (BERT style, lowercasing, [CLS]/[SEP]), its vocabulary counted (the WordPiece trainer is
  not deterministic).
Each folder tests/fixtures/tokenizers/configured/<name>/ gets a tokenizer.json, side files
(tokenizer_config.json, special_tokens_map.json, generation_config.json, chat_template.jinja, ...)
and reference.json: what transformers returns for it (see `reference()` for the fields). The whole
folder is rewritten on every run; the output is byte-identical from run to run.
"""

import json
import os
import random
import re
import shutil
import sys
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import AutoTokenizer, GenerationConfig  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CORPUS = os.path.join(ROOT, "tests", "fixtures", "tokenizers", "corpus.json")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers", "configured")
SEED = 20240607
VOCAB_SIZE = 400

# Texts encoded in every folder; each folder adds texts around its own tokens.
TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "",
    "  leading and trailing spaces  ",
    "It's, we're; don't! Isn't it ?",
    "Zürich 東京 😀",
    "line one\nline two\ttabbed",
    "<s>Hello</s>",
    "a<pad>b <s> c </s>",
]

# Batch encoded with padding=True, truncation=True, max_length=5.
BATCH = ["Hi", "The quick brown fox jumps over the lazy dog.", "", "hello <s> world </s>"]
MAX_LENGTH = 5

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": "Sunny."},
    {"role": "user", "content": "And tomorrow?"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]

# Templates: each prints which one it is, so a wrong choice cannot go unnoticed.
T_DEFAULT = (
    "{{ bos_token }}[default]"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
T_TOOL_USE = (
    "{{ bos_token }}[tool_use]"
    "{% if tools %}TOOLS:{% for t in tools %}{{ t['function']['name'] }}={{ t | tojson }};{% endfor %}\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
T_CONFIG = "[from tokenizer_config.json]{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
T_JINJA = (
    "[from chat_template.jinja]{{ bos_token }}"
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
T_JSON = "[from chat_template.json]{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
T_DIR_TOOL_USE = (
    "[from additional_chat_templates/tool_use.jinja]"
    "{% if tools %}{% for t in tools %}{{ t['function']['name'] }};{% endfor %}{% endif %}"
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
)
# Shows which special tokens the template sees.
T_TOKENS = (
    "bos={{ bos_token }} eos={{ eos_token }} pad={{ pad_token }} unk={{ unk_token }} "
    "cls={{ cls_token }} sep={{ sep_token }} mask={{ mask_token }}\n"
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
)
# transformers 5 passes only the named special tokens to templates, not the additional ones.
T_ADDITIONAL = (
    "additional={% if additional_special_tokens is defined %}{{ additional_special_tokens | join(',') }}"
    "{% else %}undefined{% endif %}"
)


def added(content, special=True, lstrip=False, rstrip=False, normalized=None, single_word=False):
    """An AddedToken as tokenizer_config.json stores it."""
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": lstrip,
        "normalized": (not special) if normalized is None else normalized,
        "rstrip": rstrip,
        "single_word": single_word,
        "special": special,
    }


def decoder_entry(content, special=True, **kw):
    """An entry of added_tokens_decoder (no `__type`)."""
    t = added(content, special, **kw)
    del t["__type"]
    return t


def corpus():
    with open(CORPUS, encoding="utf-8") as f:
        lines = [line for line in json.load(f) if line.strip()]
    random.Random(SEED).shuffle(lines)
    return lines


def restrict_alphabet(lines, size):
    """The lines with only their `size` most frequent characters (ties by code point), so that the
    trainer never chooses among tied characters itself (its `limit_alphabet` does so in hash order,
    which changes from run to run). The other characters become unknown to the model."""
    counts = Counter(c for line in lines for c in line if not c.isspace())
    keep = {c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]}
    return ["".join(c for c in line if c in keep or c.isspace()) for line in lines]


def byte_level_bpe(lines):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    return tok


def metaspace_bpe(lines):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(restrict_alphabet(lines, 90), trainer)
    return tok


def wordpiece(lines):
    # The vocabulary is counted here rather than trained: the WordPiece trainer orders its `##` alphabet in
    # hash order, which changes the whole vocabulary from run to run.
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words = Counter(w for line in lines for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(line)))
    chars = Counter()
    for w, n in words.items():
        chars.update({c: n for c in w})
    alphabet = sorted(c for c, _ in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))[:70])
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + alphabet + ["##" + c for c in alphabet]
    vocab += ["##ed", "##ing", "##ly", "##er"]
    ranked = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))
    vocab += [w for w, _ in ranked if len(w) > 1 and all(c in alphabet for c in w)][: VOCAB_SIZE - len(vocab)]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.add_special_tokens(vocab[:5])
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok


def write_json(path, value):
    text = json.dumps(value, ensure_ascii=False, indent=1)
    # Lists of numbers on one line each, to keep the fixtures small and readable.
    numbers = re.compile(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]")
    text = numbers.sub(lambda m: "[" + ", ".join(n.strip() for n in m.group(1).split(",")) + "]", text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def write_text(path, text):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


# ---- the checkpoints -------------------------------------------------------------------------------------------
# Each: (name, what it checks, base tokenizer, files {relative path: JSON value or str}, extra texts, chats).
# A chat case: (name, {apply_chat_template kwargs other than messages}).


def checkpoints(base):
    bl, ms, wp = base["bl"], base["ms"], base["wp"]

    # tokenizer.json post-processors used below.
    ms_none = Tokenizer.from_str(ms.to_str())
    ms_none.post_processor = None
    ms_bos = Tokenizer.from_str(ms.to_str())
    ms_bos.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", ms.token_to_id("<s>"))]
    )
    bl_sep = Tokenizer.from_str(bl.to_str())
    bl_sep.add_tokens([tokenizers.AddedToken("<|sep|>", special=False, normalized=False)])
    bl_padding = Tokenizer.from_str(bl.to_str())
    bl_padding.enable_padding(direction="left", pad_id=bl.token_to_id("<pad>"), pad_token="<pad>")
    bl_padding.enable_truncation(max_length=7, direction="left")

    # A token of the trained vocabulary (a merge, not an added token), for added_tokens_decoder; as an
    # added token it splits "after" and "where" differently (checked in main()).
    merged = "er"
    assert merged in bl.get_vocab()

    tool_chats = [
        ("no_tools", {}),
        ("tools", {"tools": TOOLS}),
        ("tools_generation_prompt", {"tools": TOOLS, "add_generation_prompt": True}),
        ("by_name_tool_use", {"chat_template": "tool_use"}),
        ("by_name_default_with_tools", {"chat_template": "default", "tools": TOOLS}),
    ]

    return [
        (
            "bos_eos",
            "add_bos_token/add_eos_token in tokenizer_config.json, bos as an AddedToken dict, and a tokenizer.json "
            "without post-processor (Metaspace BPE)",
            ms_none,
            {
                "tokenizer_config.json": {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "add_bos_token": True,
                    "add_eos_token": True,
                    "bos_token": added("<s>"),
                    "eos_token": added("</s>"),
                    "unk_token": added("<unk>"),
                    "pad_token": None,
                    "model_max_length": 4096,
                    "clean_up_tokenization_spaces": False,
                    "legacy": False,
                },
            },
            ["<s> already there </s>", "<unk> literally"],
            [],
        ),
        (
            "bos_eos_json_wins",
            "add_bos_token: false, add_eos_token: true in tokenizer_config.json against a tokenizer.json whose "
            "TemplateProcessing adds <s>",
            ms_bos,
            {
                "tokenizer_config.json": {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "add_bos_token": False,
                    "add_eos_token": True,
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "unk_token": "<unk>",
                    "pad_token": "</s>",
                },
            },
            [],
            [],
        ),
        (
            "named_templates",
            "chat_template as a list of named templates (default, tool_use)",
            bl,
            {
                "tokenizer_config.json": {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "pad_token": "<pad>",
                    "model_max_length": 1e30,
                    "chat_template": [
                        {"name": "default", "template": T_DEFAULT},
                        {"name": "tool_use", "template": T_TOOL_USE},
                    ],
                },
            },
            [],
            tool_chats + [("generation_prompt", {"add_generation_prompt": True})],
        ),
        (
            "template_file",
            "chat_template.jinja beside a chat_template string in tokenizer_config.json",
            bl,
            {
                "tokenizer_config.json": {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "chat_template": T_CONFIG,
                },
                "chat_template.jinja": T_JINJA,
            },
            [],
            [("plain", {}), ("generation_prompt", {"add_generation_prompt": True}), ("tools", {"tools": TOOLS})],
        ),
        (
            "template_file_over_named",
            "chat_template.jinja beside named templates (default, tool_use) in tokenizer_config.json",
            bl,
            {
                "tokenizer_config.json": {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "chat_template": [
                        {"name": "default", "template": T_DEFAULT},
                        {"name": "tool_use", "template": T_TOOL_USE},
                    ],
                },
                "chat_template.jinja": T_JINJA,
            },
            [],
            [("no_tools", {}), ("tools", {"tools": TOOLS})],
        ),
        (
            "template_dir",
            "chat_template.jinja plus additional_chat_templates/tool_use.jinja, beside named templates in "
            "tokenizer_config.json",
            bl,
            {
                "tokenizer_config.json": {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "chat_template": [
                        {"name": "default", "template": T_DEFAULT},
                        {"name": "tool_use", "template": T_TOOL_USE},
                    ],
                },
                "chat_template.jinja": T_JINJA,
                "additional_chat_templates/tool_use.jinja": T_DIR_TOOL_USE,
            },
            [],
            [("no_tools", {}), ("tools", {"tools": TOOLS}), ("by_name_tool_use", {"chat_template": "tool_use"})],
        ),
        (
            "template_json",
            "chat_template.json (the processor's legacy file) beside a chat_template string in tokenizer_config.json",
            bl,
            {
                "tokenizer_config.json": {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "chat_template": T_CONFIG,
                },
                "chat_template.json": {"chat_template": T_JSON},
            },
            [],
            [("plain", {})],
        ),
        (
            "special_map",
            "special tokens only in special_tokens_map.json (WordPiece, no added_tokens_decoder in the config), "
            "additional_special_tokens, and a map token missing from the vocabulary",
            wp,
            {
                "tokenizer_config.json": {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "do_lower_case": True,
                    "clean_up_tokenization_spaces": True,
                    "model_max_length": 512,
                    "chat_template": T_TOKENS,
                },
                "special_tokens_map.json": {
                    "cls_token": "[CLS]",
                    "sep_token": "[SEP]",
                    "pad_token": "[PAD]",
                    "unk_token": "[UNK]",
                    "mask_token": {"content": "[MASK]", "lstrip": False, "normalized": False, "rstrip": False,
                                   "single_word": False},
                    "bos_token": "[BOS]",
                    "additional_special_tokens": ["[EXTRA1]", "[EXTRA2]"],
                },
            },
            ["[BOS] hello [SEP] world [EXTRA1] and [extra2] or [EXTRA2]", "[MASK] is masked", "don 't , i 'm here ."],
            [("tokens", {}), ("additional_special_tokens", {"chat_template": T_ADDITIONAL})],
        ),
        (
            "special_map_override",
            "special_tokens_map.json and tokenizer_config.json disagree on eos/pad (no added_tokens_decoder)",
            bl,
            {
                "tokenizer_config.json": {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "pad_token": "</s>",
                    "chat_template": T_TOKENS,
                },
                "special_tokens_map.json": {
                    "bos_token": "<s>",
                    "eos_token": "<|end|>",
                    "pad_token": "<pad>",
                },
            },
            ["done<|end|>", "<|end|></s><pad>"],
            [("tokens", {})],
        ),
        (
            "special_map_ignored",
            "special_tokens_map.json sets pad/unk and additional tokens, but tokenizer_config.json has "
            "added_tokens_decoder",
            bl,
            {
                "tokenizer_config.json": {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "added_tokens_decoder": {
                        str(bl.token_to_id("<s>")): decoder_entry("<s>"),
                        str(bl.token_to_id("</s>")): decoder_entry("</s>"),
                        str(bl.token_to_id("<pad>")): decoder_entry("<pad>"),
                    },
                    "chat_template": T_TOKENS,
                },
                "special_tokens_map.json": {
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "pad_token": "<pad>",
                    "unk_token": "<|unk|>",
                    "additional_special_tokens": ["<|extra|>"],
                },
            },
            ["a <|unk|> b <|extra|> c"],
            [("tokens", {})],
        ),
        (
            "added_decoder",
            "added_tokens_decoder entries missing from tokenizer.json's added_tokens (special and not, at "
            "non-contiguous ids beyond the vocabulary)",
            bl,
            {
                "tokenizer_config.json": {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "pad_token": "<pad>",
                    "added_tokens_decoder": {
                        str(bl.token_to_id("<s>")): decoder_entry("<s>"),
                        str(bl.token_to_id("</s>")): decoder_entry("</s>"),
                        str(bl.token_to_id("<pad>")): decoder_entry("<pad>"),
                        "501": decoder_entry("<|im_end|>"),
                        "500": decoder_entry("<|im_start|>"),
                        "502": decoder_entry("<tool>", special=False),
                        "510": decoder_entry("<|eot|>"),
                    },
                },
            },
            [
                "<|im_start|>user\nhi<|im_end|>",
                "call <tool> now</tool>",
                "<|eot|><|eot|>end",
                "<tool><|im_end|> <s>",
            ],
            [],
        ),
        (
            "added_decoder_flags",
            "added_tokens_decoder entries whose flags matter: lstrip/rstrip, a token of the trained vocabulary "
            "(not an added token in tokenizer.json), a `special` flag that disagrees with tokenizer.json, and "
            "<pad> marked non-special although it is the pad token",
            bl_sep,
            {
                "tokenizer_config.json": {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "pad_token": "<pad>",
                    "added_tokens_decoder": {
                        str(bl.token_to_id("<s>")): decoder_entry("<s>"),
                        str(bl.token_to_id("</s>")): decoder_entry("</s>"),
                        str(bl.token_to_id("<pad>")): decoder_entry("<pad>", special=False),
                        str(bl.token_to_id(merged)): decoder_entry(merged, special=False),
                        str(bl_sep.token_to_id("<|sep|>")): decoder_entry("<|sep|>", special=True),
                        "420": decoder_entry("<mask>", lstrip=True, rstrip=True),
                    },
                },
            },
            [
                "a <mask> b",
                "a<mask>b",
                f"after where x{merged}y {merged} z",
                "<pad><pad>end",
                "x<|sep|>y",
            ],
            [],
        ),
        (
            "generation",
            "generation_config.json with eos_token_id as a list and pad_token_id; model_max_length, padding_side "
            "and truncation_side left in tokenizer_config.json",
            bl,
            {
                "tokenizer_config.json": {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "pad_token": "<pad>",
                    "model_max_length": 2048,
                    "padding_side": "left",
                    "truncation_side": "left",
                },
                "generation_config.json": {
                    "bos_token_id": bl.token_to_id("<s>"),
                    "eos_token_id": [bl.token_to_id("</s>"), bl.token_to_id("<pad>")],
                    "pad_token_id": bl.token_to_id("<pad>"),
                    "do_sample": True,
                    "temperature": 0.7,
                },
            },
            [],
            [],
        ),
        (
            "json_padding",
            "padding and truncation sections in tokenizer.json (pad token and sides come from there), and no "
            "tokenizer_config.json at all",
            bl_padding,
            {},
            [],
            [],
        ),
    ]


# ---- references ------------------------------------------------------------------------------------------------


def call(fn):
    try:
        return {"value": fn()}
    except Exception as e:  # noqa: BLE001 - recorded as the reference
        return {"error": f"{type(e).__name__}: {e}"}


def reference(path, description, texts, chats):
    tok = AutoTokenizer.from_pretrained(path)
    mml = tok.model_max_length
    ref = {
        "description": description,
        "class": type(tok).__name__,
        "len": len(tok),
        "vocab_size_without_added": tok.vocab_size,
        "model_max_length": None if mml >= 1e18 else int(mml),
        "padding_side": tok.padding_side,
        "truncation_side": tok.truncation_side,
        "clean_up_tokenization_spaces": tok.clean_up_tokenization_spaces,
        "special_tokens": {
            name: {"token": getattr(tok, f"{name}_token"), "id": getattr(tok, f"{name}_token_id")}
            for name in ["bos", "eos", "unk", "pad", "cls", "sep", "mask"]
        },
        "extra_special_tokens": tok.extra_special_tokens,
        "all_special_ids": sorted(set(tok.all_special_ids)),
        "added_tokens": [
            {"id": i, "content": t.content, "special": t.special}
            for i, t in sorted(tok.added_tokens_decoder.items())
        ],
        "encodings": [],
    }
    for text in TEXTS + texts:
        ids = tok(text)["input_ids"]
        ref["encodings"].append(
            {
                "text": text,
                "ids": ids,
                "ids_no_special": tok(text, add_special_tokens=False)["input_ids"],
                "decoded": tok.decode(ids),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            }
        )
    batch = call(lambda: dict(tok(BATCH, padding=True, truncation=True, max_length=MAX_LENGTH)))
    if "value" in batch:
        batch = {k: batch["value"][k] for k in ["input_ids", "attention_mask"]}
    ref["batch"] = {"texts": BATCH, "max_length": MAX_LENGTH, **batch}
    ref["chats"] = []
    for name, kwargs in chats:
        case = {"name": name, "messages": MESSAGES, **kwargs}
        case.update(call(lambda: tok.apply_chat_template(MESSAGES, tokenize=False, **kwargs)))
        if "value" in case:
            case["rendered"] = case.pop("value")
        ref["chats"].append(case)
    if os.path.exists(os.path.join(path, "generation_config.json")):
        gen = GenerationConfig.from_pretrained(path)
        eos = gen.eos_token_id
        ref["generation"] = {
            "eos_token_ids": eos if isinstance(eos, list) else ([] if eos is None else [eos]),
            "pad_token_id": gen.pad_token_id,
            "bos_token_id": gen.bos_token_id,
        }
    return ref


def main():
    print(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}", file=sys.stderr)
    lines = corpus()
    base = {"bl": byte_level_bpe(lines), "ms": metaspace_bpe(lines), "wp": wordpiece(lines)}
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    for name, description, tok, files, texts, chats in checkpoints(base):
        path = os.path.join(OUT, name)
        os.makedirs(path)
        tok.save(os.path.join(path, "tokenizer.json"), pretty=False)
        for rel, value in files.items():
            os.makedirs(os.path.dirname(os.path.join(path, rel)), exist_ok=True)
            if isinstance(value, str):
                write_text(os.path.join(path, rel), value)
            else:
                write_json(os.path.join(path, rel), value)
        ref = reference(path, description, texts, chats)
        ref = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__, **ref}
        write_json(os.path.join(path, "reference.json"), ref)
        # Which texts the side files change, against tokenizer.json alone.
        raw = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        raw.no_padding()
        raw.no_truncation()
        changed = [e["text"] for e in ref["encodings"] if raw.encode(e["text"]).ids != e["ids"]]
        if name == "added_decoder_flags":
            assert any(t.startswith("after where") for t in changed), "the vocabulary token changes nothing"
        print(
            f"{name}: len {ref['len']}, {len(ref['encodings'])} texts ({len(changed)} changed by the side files), "
            f"{len(ref['chats'])} chats",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
