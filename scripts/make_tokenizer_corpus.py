#!/usr/bin/env python3
"""Write tests/fixtures/tokenizers/corpus.json: the strings every tokenizer reference is built from.

    python3 scripts/make_tokenizer_corpus.py      # stdlib only, deterministic

The list is a JSON array of strings. It is deterministic (no randomness, no clock), so re-running
the script reproduces the committed file byte for byte. Exactly one entry is >= 20000 UTF-8 bytes:
the last one, a mixed text assembled from the others.
"""

import json
import os
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tokenizers", "corpus.json")

BASICS = [
    "",
    " ",
    "a",
    "A",
    "é",
    "中",
    "😀",
    "\n",
    "\t",
    "\r",
    "\r\n",
    "0",
    ".",
    "'",
    '"',
    "\\",
    "Hello world",
    "Hello, world!",
    "hello world",
    "HELLO WORLD",
    "The quick brown fox jumps over the lazy dog.",
    "It's, we're, they've, I'm, you'll, he'd, don't, CAN'T, WON'T, Y'ALL'D'VE",
    "I'M SHOUTING. it's lowercase. It'S mIxEd.",
    "Mr. O'Neil's \"quoted\" text — with an em dash – and an en dash… and ellipsis.",
    "unaffable unbelievable antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "Supercalifragilisticexpialidocious!!! ??? ... --- ***",
    "tokenization_utils_base.py::PreTrainedTokenizerBase.__call__",
    "camelCaseIdentifier snake_case_identifier SCREAMING_SNAKE kebab-case-id PascalCase",
]

MULTILINGUAL = [
    "你好，世界！今天天气很好。",
    "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。",
    "我爱北京天安门",
    "繁體中文測試：這是一個句子。",
    "日本語のテキストです。ひらがな、カタカナ、漢字が混ざっています。",
    "東京は日本の首都です。ｶﾀｶﾅ半角もあります。",
    "안녕하세요, 세계! 한국어 문장입니다.",
    "대한민국의 수도는 서울입니다.",
    "مرحبا بالعالم! هذا نص عربي.",
    "اللُّغَةُ العَرَبِيَّةُ مع التشكيل",
    "שלום עולם! זהו טקסט בעברית.",
    "Mixed RTL: English עברית English العربية English",
    "Привет, мир! Это русский текст.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Українська мова: ґ, є, і, ї.",
    "नमस्ते दुनिया! यह हिंदी पाठ है।",
    "क्षत्रिय ज्ञान श्रृंगार",
    "สวัสดีชาวโลก ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "Γειά σου Κόσμε! Ελληνικά κείμενο.",
    "Tiếng Việt có dấu: Xin chào thế giới, người Việt Nam.",
    "Ti\u1ebfng Vi\u1ec7t precomposed vs Tie\u0302\u0301ng Vie\u0323\u0302t decomposed",
    "Français : « L'été où j'ai vu la mer » — déjà vu, naïve, cœur, Œuvre.",
    "Deutsch: Größe, Straße, Äpfel, Öl, Übermut, ß ẞ.",
    "Español: ¿Dónde está la estación? ¡Mañana!",
    "Português: ação, coração, você, pão.",
    "Türkçe: İstanbul, ışık, Iğdır, şeker, çiçek, öğün, ülke.",
    "Polski: zażółć gęślą jaźń.",
    "Čeština: Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Íslenska: Þórður og Ægir.",
    "Հայերեն: Բարեւ աշխարհ",
    "ქართული: გამარჯობა მსოფლიო",
    "አማርኛ: ሰላም ዓለም",
    "தமிழ்: வணக்கம் உலகம்",
    "বাংলা: হ্যালো বিশ্ব",
    "ᚠᚢᚦᚨᚱᚲ ᚷᚹᚺᚾᛁᛃ runes",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝒶𝓁𝓅𝒽𝒶𝒷𝑒𝓉 ∀x∈ℝ: x²≥0, ∑ᵢ aᵢ ≤ ∞",
    "Ｆｕｌｌｗｉｄｔｈ　ＡＢＣ　１２３！",
    "ﬁ ﬂ ﬀ ligatures, ① ② ③ circled, ㎏ ㎡ squared, Ⅻ roman",
    "½ ¼ ¾ ⅓ fractions, x² y³ superscripts, H₂O subscripts",
]

EMOJI = [
    "😀😃😄😁😆😅😂🤣",
    "I love 🍕 and 🍣!",
    "👍 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿",
    "👨‍👩‍👧‍👦 family (ZWJ)",
    "👩‍💻👨‍🔬🧑‍🚀🏳️‍🌈🏴‍☠️",
    "🇺🇸🇬🇧🇯🇵🇨🇳🇫🇷🇩🇪🇧🇷",
    "🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland tag sequence",
    "❤️ ❤ ♥️ ☺️ ✌🏽 keycaps: 1️⃣ #️⃣ *️⃣",
    "🫠🫡🫶🏾 newer emoji",
    "😀a😀b😀c",
    "emoji without spaces:🎉🎊🥳party",
]

COMBINING = [
    "e\u0301",
    "cafe\u0301 vs caf\u00e9",
    "Ame\u0301lie and A\u0308ngstro\u0308m",
    "n\u0303 a\u0300 o\u0302 u\u0308 c\u0327 a\u030a",
    "Vie\u0323\u0302t Nam (decomposed Vietnamese)",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034da\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354l\u0350\u0307\u0357\u0350\u0308\u0301\u0351\u0360g\u0358\u0316\u033b\u0354o\u0365\u0303\u0344!",
    "H\u0336\u0315e\u0337\u0322l\u0338\u031bl\u0334\u0321o\u0335\u0328 z\u0336alg\u0337o",
    "\u0301 leading combining mark",
    "\u0301\u0302\u0303",
    "x\u20d7 arrow above, q\u0307 dot",
    "한국어 자모 분리: \u1100\u1161\u11a8",
    "\u00c5 (U+00C5) vs \u212b (U+212B angstrom) vs A\u030a, \u2126 ohm vs \u03a9 omega",
    "ﾊﾟﾝ half-width katakana with voiced mark",
]

CODE = [
    'def greet(name: str) -> str:\n    """Say hello."""\n    return f"Hello, {name}!"\n',
    "import numpy as np\n\nx = np.arange(10)\nprint(x[::2], x.sum())\n",
    "class Foo(Bar):\n\tdef __init__(self):\n\t\tsuper().__init__()\n\t\tself.x = {'a': 1, \"b\": [2, 3]}\n",
    'fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!("{:?}", v);\n}\n',
    "impl<'a, T: Clone + Send> Iterator for Foo<'a, T> where T: 'static {\n    type Item = &'a T;\n}\n",
    "const add = (a, b) => a + b;\nconsole.log(`sum: ${add(1, 2)}`);\n",
    "function fetchData(url) {\n  return fetch(url).then((r) => r.json()).catch(console.error);\n}",
    '#include <stdio.h>\n\nint main(void) {\n    printf("Hello, %s!\\n", "world");\n    return 0;\n}\n',
    "for (int i = 0; i < n; ++i) { a[i] += b[i] * c; }",
    'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hello")\n}\n',
    "SELECT u.id, COUNT(*) AS n FROM users u JOIN orders o ON o.user_id = u.id WHERE u.created_at >= '2024-01-01' GROUP BY u.id HAVING n > 5;",
    '#!/usr/bin/env bash\nset -euo pipefail\nfor f in *.txt; do echo "$f" | tr a-z A-Z; done\n',
    "ls -la | grep '^d' && cd ~/src || exit 1",
    "<html><body><div class=\"x\">Hi &amp; bye</div></body></html>",
    '{"key": "value", "list": [1, 2.5, -3e10, true, null], "nested": {"a": {}}}',
    "---\nname: ci\non: [push]\njobs:\n  build:\n    runs-on: ubuntu-latest\n",
    "public static void main(String[] args) { System.out.println(\"hi\"); }",
    "x = [i**2 for i in range(100) if i % 3 == 0]  # comment",
    "    indented with four spaces\n        and eight\n\t\tand two tabs",
    "a->b; c=>d; e::f; g!=h; i<=j; k>=l; m&&n; o||p; q<<=r; s>>>t; u...v",
    "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-old\n+new\n",
    "$ echo $HOME && export PATH=\"$PATH:/usr/local/bin\"",
    "regex: ^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)@\\w+\\.(com|org)$",
    "\\begin{equation} E = mc^2 \\end{equation}",
]

WHITESPACE = [
    "  leading two spaces",
    "trailing two spaces  ",
    "   both sides   ",
    "a  b   c    d     e",
    " " * 16,
    " " * 33,
    "\t\t\t",
    "tab\tseparated\tvalues\t",
    "line1\nline2\nline3",
    "line1\r\nline2\r\nline3\r\n",
    "lone\rcarriage\rreturn",
    "mixed\r\n\n\r\r\nendings",
    "\n\n\n\n\n\n\n\n",
    "para one\n\n\npara two\n\n\n\n\npara three",
    "\n leading newline and space",
    "trailing newline\n",
    "trailing newlines and spaces \n \n  ",
    " \t \n \r\n mixed whitespace only \t\n",
    "word\u00a0nbsp\u00a0separated",
    "ideographic\u3000space",
    "zero\u200bwidth\u200bspace and\u200cZWNJ\u200dZWJ",
    "\ufeffBOM at start",
    "line\u2028separator and para\u2029separator",
    "next line\u0085NEL",
    "en\u2002em\u2003thin\u2009hair\u200a spaces",
    "vertical\x0btab and form\x0cfeed",
]

NUMBERS = [
    "1234567890",
    "12345678901234567890123456789012345678901234567890",
    "3.14159265358979323846",
    "0.5 .5 5. -0.0 +1e-10 6.022e23",
    "1,000,000 and 1.000.000 and 1 000 000",
    "$1,234.56 €99,99 ¥1000 £5",
    "2024-05-17T13:45:30Z",
    "Call 555-123-4567 or +1 (800) 555-0199",
    "version 1.2.3-rc.4+build.5",
    "0xDEADBEEF 0b1010 0o777 1_000_000",
    "IPv4 192.168.0.1 and IPv6 2001:db8::ff00:42:8329",
    "١٢٣٤٥ Arabic-Indic digits, ०१२३ Devanagari digits, 一二三 CJK numerals",
    "100% of 50 = 50; 3/4 = 0.75; 2^10 = 1024",
]

URLS = [
    "https://huggingface.co/docs/transformers/index",
    "Visit http://example.com/path?query=1&other=two#frag now!",
    "ftp://user:pass@ftp.example.org:21/files/archive.tar.gz",
    "email me at john.doe+tag@example.co.uk or jane_doe@sub.example.com",
    "git@github.com:org/repo.git",
    "C:\\Users\\Name\\Documents\\file.txt",
    "/usr/local/lib/python3.11/site-packages/",
    "@mention #hashtag $TICKER",
]

ODD = [
    "\ufffd",
    "replacement \ufffd\ufffd chars",
    "\ue000\uf8ff private use",
    "\U000f0000\U0010fffd supplementary private use",
    "\x00 NUL inside",
    "escape \x1b[31mred\x1b[0m",
    "DEL\x7f char",
    "noncharacters \ufffe \uffff",
    "𓀀𓁐𓂀 hieroglyphs",
    "\U0001f9ff\U0001fa75 high plane emoji",
    "a" * 300,
    "ab" * 200,
    "🙂" * 50,
    "=" * 80,
    "-" * 64 + "\n" + "#" * 64,
    "!!!!!!!!!!!!??????????",
    "....................",
    "\u202eRTL override text\u202c",
    "soft\u00adhyphen",
    "𝟘𝟙𝟚 math digits",
]

# Special tokens (real ones and look-alikes) of Qwen2.5, Gemma 3 and BERT (MiniLM).
REAL_SPECIALS = [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|vision_start|>", "<tool_call>", "</tool_call>",
    "<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
    "[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]",
]
LOOKALIKES = [
    "<|im_start", "<|im_end|x", "|im_end|>", "< |im_start| >", "<|IM_START|>", "<|im_start|>>", "<<|im_end|>",
    "[CLS ]", "[ CLS]", "[cls]", "[CLS", "CLS]", "<bo s>", "<BOS>", "<bos", "bos>", "</bos>", "<start_of_turn",
    "<end-of-turn>", "<|endoftext|", "&lt;bos&gt;",
]


def special_entries():
    out = []
    for tok in REAL_SPECIALS:
        out.append(tok)
        out.append(f"before {tok} after")
        out.append(f"glued{tok}glued")
        out.append(f"{tok}{tok}")
        out.append(f" {tok} ")
    for tok in LOOKALIKES:
        out.append(f"look-alike: {tok} here")
    out += [
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\n你好<|im_end|><|endoftext|>",
        "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n<eos>",
        "<start_of_turn>model\nSure!<end_of_turn>",
        "[CLS] the first sentence [SEP] the second [MASK] sentence [SEP] [PAD] [PAD]",
        "[UNK] unknown [unused0] [unused1]",
        "<think>\nreasoning\n</think>\nanswer",
        "<|fim_prefix|>def f():\n<|fim_suffix|>\n    return 1<|fim_middle|>",
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        "<|im_start|><|im_end|><|endoftext|><bos><eos>[CLS][SEP]",
        "<s> </s> <unk> <pad> <mask> (generic look-alikes)",
    ]
    return out


def combos():
    """Short systematic combinations: words x separators, and prefix/suffix whitespace variants."""
    out = []
    words = ["hello", "Hello", "HELLO", "héllo", "你好", "123", "hello123", "don't", "🙂"]
    seps = [" ", "  ", "\t", "\n", "\r\n", ""]
    for w in words:
        for s in seps:
            out.append(f"{w}{s}{w}")
    for core in ["x", "word", "Ünïcödé", "<|im_end|>", "[SEP]", "<eos>"]:
        out += [f" {core}", f"{core} ", f"  {core}  ", f"\n{core}\n", f"\t{core}"]
    return out


def long_mixed(pool):
    """The one big entry: every pool string in a fixed interleaved order until >= 20000 bytes."""
    parts, size, i = [], 0, 0
    ordered = [s for s in pool if s and len(s.encode()) < 2000]
    step = 7  # co-prime with len(ordered) is not required; duplicates are fine
    while size < 20000:
        s = ordered[(i * step) % len(ordered)]
        sep = ["\n", " ", "\n\n", "\t", " | "][i % 5]
        parts.append(s + sep)
        size += len((s + sep).encode())
        i += 1
    return "".join(parts)


def main():
    pool = BASICS + MULTILINGUAL + EMOJI + COMBINING + CODE + WHITESPACE + NUMBERS + URLS + ODD
    pool += special_entries() + combos()
    seen, corpus = set(), []
    for s in pool:
        if s not in seen:
            seen.add(s)
            corpus.append(s)
    corpus.append(long_mixed(corpus))
    big = [s for s in corpus if len(s.encode()) >= 20000]
    assert len(big) == 1 and len(corpus) >= 320, (len(big), len(corpus))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(corpus, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(corpus)} strings ({len(big[0].encode())}-byte long entry) to {os.path.normpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
