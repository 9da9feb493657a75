#!/usr/bin/env python3
"""A small chat dataset for supervised fine-tuning tests (LoRA SFT of Qwen2.5-Coder-0.5B-Instruct), written here
(no outside text, so no licence questions): each example is a user question about a tiny Python task and an
assistant answer in one fixed house style (a one-line summary, then the code in a ```python block, then "Done."),
so that a few dozen steps of training visibly lower the loss.

    python3 scripts/make_chat_sft_data.py

Writes tests/fixtures/training/chat/{train,test}.jsonl: lines {"messages": [{"role": "user", ...},
{"role": "assistant", ...}]}; 48 train and 8 test examples, deterministic (no randomness).
"""

import json
import os

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "training", "chat")

TASKS = [
    ("add {a} to a number", "def add_{a}(x):\n    return x + {a}"),
    ("multiply a number by {a}", "def times_{a}(x):\n    return x * {a}"),
    ("check whether a number is divisible by {a}", "def divisible_by_{a}(x):\n    return x % {a} == 0"),
    ("repeat a string {a} times", "def repeat_{a}(s):\n    return s * {a}"),
    ("return the first {a} items of a list", "def first_{a}(items):\n    return items[:{a}]"),
    ("return the last {a} characters of a string", "def last_{a}(s):\n    return s[-{a}:]"),
    ("subtract {a} from a number", "def minus_{a}(x):\n    return x - {a}"),
]
NUMBERS = [2, 3, 4, 5, 6, 7, 8, 9]


def example(task, code, a):
    question = f"Write a Python function to {task.format(a=a)}."
    answer = f"Here is a function that does it.\n```python\n{code.format(a=a)}\n```\nDone."
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def main():
    rows = [example(t, c, a) for a in NUMBERS for t, c in TASKS]
    test = rows[::7][:8]
    train = [r for r in rows if r not in test][:48]
    os.makedirs(OUT, exist_ok=True)
    for name, part in (("train", train), ("test", test)):
        with open(os.path.join(OUT, f"{name}.jsonl"), "w") as f:
            for r in part:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
