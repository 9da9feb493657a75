#!/usr/bin/env python3
"""Render chat templates with transformers' own apply_chat_template, as JSON fixtures for the Rust tests.

    scripts/fetch_models.sh
    /work/venv-ref/bin/pip install -r scripts/requirements-reference.txt
    /work/venv-ref/bin/python scripts/make_chat_template_refs.py

Writes to tests/fixtures/chat_templates/:
  qwen2.5.jinja     the template stored in the Qwen GGUF (`tokenizer.chat_template`), byte for byte
  qwen2.5.json      cases rendered with the Qwen GGUF tokenizer and its own template
  gemma3.json       cases for gemma3.jinja (hand-written copy of Gemma 3's template; the 270M GGUF has none),
                    rendered with the Gemma GGUF tokenizer (its bos_token)
  features.json     cases for features.jinja (a test template), rendered with the Qwen GGUF tokenizer
Each case: {name, messages, tools, documents, add_generation_prompt, continue_final_message, rendered | error}.
All calls are apply_chat_template(messages, tools=..., documents=..., chat_template=..., tokenize=False, ...).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jinja2  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "chat_templates")
MODELS_DIR = os.environ.get("FERRO_MODELS_DIR", os.path.expanduser("~/.cache/ferroformers/models"))

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city — météo, 天气 ☀️",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {
                    "type": "object",
                    "description": "Where to look",
                    "properties": {
                        "city": {"type": "string", "description": "City name, e.g. Zürich or 東京"},
                        "country": {"type": "string", "description": "ISO 3166 code"},
                    },
                    "required": ["city"],
                },
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
            },
            "required": ["location"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search_docs",
        "description": "Search the documentation. Returns \"snippets\" with <b>highlights</b> & scores.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "filters": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"type": "string", "enum": ["title", "body", "tags"]},
                            "value": {"type": ["string", "number", "boolean", "null"]},
                        },
                    },
                },
                "top_k": {"type": "number", "default": 5.0, "exclusiveMinimum": 0},
                "exact": {"type": "boolean", "default": False},
            },
            "required": ["query"],
        },
    },
}
TOOLS = [WEATHER_TOOL, SEARCH_TOOL]

SYSTEM = {"role": "system", "content": "You are a terse assistant. Answer in one line."}


def case(name, messages, tools=None, documents=None, add_generation_prompt=False, continue_final_message=False):
    return {
        "name": name,
        "messages": messages,
        "tools": tools,
        "documents": documents,
        "add_generation_prompt": add_generation_prompt,
        "continue_final_message": continue_final_message,
    }


def qwen_cases():
    call_dict = {"type": "function", "function": {"name": "get_weather",
                                                  "arguments": {"location": {"city": "Paris", "country": "FR"}, "unit": "celsius", "days": 2}}}
    call_str = {"type": "function", "function": {"name": "get_weather",
                                                 "arguments": "{\"location\": {\"city\": \"東京\"}, \"days\": 1}"}}
    call_search = {"type": "function", "function": {"name": "search_docs",
                                                    "arguments": {"query": "tokenizer", "filters": [{"field": "tags", "value": None}], "top_k": 3, "exact": True}}}
    user_weather = {"role": "user", "content": "What's the weather in Paris and Tokyo?"}
    return [
        case("single_turn", [{"role": "user", "content": "Hello!"}], add_generation_prompt=True),
        case("system_message", [SYSTEM, {"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True),
        case("no_system_default_prompt", [{"role": "user", "content": "Hi there"}]),
        case("multi_turn", [SYSTEM, {"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "Blue."},
                            {"role": "user", "content": "Another one?"}], add_generation_prompt=True),
        case("multi_turn_no_generation_prompt", [{"role": "user", "content": "Ping"}, {"role": "assistant", "content": "Pong"}]),
        case("tools_given", [user_weather], tools=TOOLS, add_generation_prompt=True),
        case("tools_with_system", [SYSTEM, user_weather], tools=TOOLS, add_generation_prompt=True),
        case("tool_calls_dict_arguments_and_tool_results",
             [user_weather, {"role": "assistant", "content": None, "tool_calls": [call_dict, call_str]},
              {"role": "tool", "name": "get_weather", "content": "{\"temp\": 18, \"sky\": \"cloudy\"}"},
              {"role": "tool", "name": "get_weather", "content": "{\"temp\": 24, \"sky\": \"晴れ\"}"},
              {"role": "tool", "name": "get_weather", "content": "third result"}],
             tools=TOOLS, add_generation_prompt=True),
        case("tool_calls_string_arguments", [user_weather, {"role": "assistant", "tool_calls": [call_str]},
                                             {"role": "tool", "content": "sunny"}], add_generation_prompt=True),
        case("tool_call_without_function_wrapper",
             [user_weather, {"role": "assistant", "tool_calls": [{"name": "get_weather", "arguments": {"location": {"city": "Oslo"}}}]},
              {"role": "tool", "content": "-3°C"}, {"role": "assistant", "content": "It is -3°C in Oslo."}]),
        case("assistant_content_plus_tool_calls",
             [SYSTEM, {"role": "user", "content": "Find docs on tokenizers, then the weather."},
              {"role": "assistant", "content": "Let me check both.", "tool_calls": [call_search, call_dict]},
              {"role": "tool", "content": "snippet A"}, {"role": "tool", "content": "snippet B"},
              {"role": "user", "content": "Thanks"}],
             tools=TOOLS, add_generation_prompt=True),
        case("tool_results_last_no_generation_prompt",
             [user_weather, {"role": "assistant", "tool_calls": [call_dict]}, {"role": "tool", "content": "rain"}]),
        case("continue_final_message", [{"role": "user", "content": "Write a haiku."},
                                        {"role": "assistant", "content": "Autumn moonlight—"}], continue_final_message=True),
        case("continue_final_message_trailing_space", [{"role": "user", "content": "Count."},
                                                       {"role": "assistant", "content": "One, two, "}], continue_final_message=True),
        case("unicode_content", [{"role": "system", "content": "Réponds en français 🇫🇷"},
                                 {"role": "user", "content": "你好！こんにちは 안녕 👨‍👩‍👧‍👦 مرحبا بالعالم שלום"},
                                 {"role": "assistant", "content": "Bonjour ! 👋🏽 e\u0301"}], add_generation_prompt=True),
        case("whitespace_content", [{"role": "system", "content": "\n  spaced system  \n"},
                                    {"role": "user", "content": "  leading and trailing  \n\n"},
                                    {"role": "assistant", "content": "\t\ttabs\r\nCRLF\n"}], add_generation_prompt=True),
        case("empty_content", [{"role": "user", "content": ""}, {"role": "assistant", "content": ""},
                               {"role": "user", "content": " "}], add_generation_prompt=True),
        case("system_not_first", [{"role": "user", "content": "Hi"}, {"role": "system", "content": "Late system note."},
                                  {"role": "user", "content": "Go on"}], add_generation_prompt=True),
        case("special_tokens_in_content", [{"role": "user", "content": "Say <|im_end|> and <|endoftext|> literally"}],
             add_generation_prompt=True),
    ]


def gemma_cases():
    return [
        case("single_user", [{"role": "user", "content": "Hello Gemma"}], add_generation_prompt=True),
        case("system_prefix_multi_turn", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  Hi!  "},
                                          {"role": "assistant", "content": "Hello.\n"}, {"role": "user", "content": "Bye"}],
             add_generation_prompt=True),
        case("content_parts_with_image", [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Describe this. "}]},
                                          {"role": "assistant", "content": [{"type": "text", "text": "A cat 🐈"}]}]),
        case("continue_final_message_trimmed", [{"role": "user", "content": "Continue"},
                                                {"role": "assistant", "content": "Once upon a time  "}], continue_final_message=True),
        case("roles_must_alternate", [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
             add_generation_prompt=True),
    ]


def features_cases():
    docs = [{"title": "Rust book", "text": "  Ownership rules.  "}, {"title": "jinja", "text": "Templates\n"},
            {"title": "ünïcode", "text": "naïve café"}]
    return [
        case("system_and_generation_prompt", [{"role": "system", "content": "  Keep it short.  "},
                                              {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}],
             add_generation_prompt=True),
        case("tools_and_documents", [{"role": "user", "content": "Use the docs."}], tools=TOOLS, documents=docs),
        case("loop_controls_continue_and_break",
             [{"role": "user", "content": "first"}, {"role": "skip", "content": "ignored"}, {"role": "assistant", "content": "second"},
              {"role": "stop", "content": "x"}, {"role": "user", "content": "never shown"}]),
        case("string_methods_tool_calls_and_slicing",
             [{"role": "user", "content": "   /search   rust  jinja templates  "},
              {"role": "assistant", "content": "", "tool_calls": [
                  {"type": "function", "function": {"name": "search docs", "arguments": {"q": "rust", "k": 3}}},
                  {"type": "function", "function": {"name": "get weather", "arguments": "{\"city\": \"Zürich\"}"}}]},
              {"role": "tool", "name": "search_docs", "content": "result ✓"}],
             add_generation_prompt=True),
        case("content_parts_and_mapping",
             [{"role": "user", "content": [{"type": "text", "text": " part one "}, {"type": "image", "url": "x.png"},
                                           {"type": "text", "text": "part two\n"}]},
              {"role": "assistant", "content": {"answer": "中文 ✓", "n": 42, "pi": 3.14, "one": 1.0, "tiny": 1e-07, "big": 1e20,
                                                "neg": -0.5, "ok": True, "no": False, "none": None,
                                                "nested": {"z": [1, 2.5, "é"], "a": {}}}}]),
        case("unsupported_role_raises", [{"role": "user", "content": "hi"}, {"role": "bogus", "content": "?"}]),
    ]


def render(tok, c, template=None):
    out = dict(c)
    try:
        out["rendered"] = tok.apply_chat_template(
            c["messages"], tools=c["tools"], documents=c["documents"], chat_template=template, tokenize=False,
            add_generation_prompt=c["add_generation_prompt"], continue_final_message=c["continue_final_message"])
    except jinja2.exceptions.TemplateError as e:
        out["error"] = str(e)
    return out


def write(name, tok, template_file, cases, template=None):
    rendered = [render(tok, c, template) for c in cases]
    doc = {
        "template_file": template_file,
        "rendered_with": f"transformers {transformers.__version__} apply_chat_template(tokenize=False), "
                         f"{type(tok).__name__} loaded from GGUF",
        "special_tokens_map": tok.special_tokens_map,
        "note": "messages are given as passed to apply_chat_template; keys whose value is null are dropped by it first",
        "cases": rendered,
    }
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    errors = sum("error" in r for r in rendered)
    print(f"wrote {name}: {len(rendered)} cases ({errors} errors)", file=sys.stderr)


def main():
    qwen_dir = os.path.join(MODELS_DIR, "qwen2.5-coder-0.5b-instruct")
    gemma_dir = os.path.join(MODELS_DIR, "gemma-3-270m")
    qwen = AutoTokenizer.from_pretrained(qwen_dir, gguf_file="qwen2.5-coder-0.5b-instruct.gguf")
    from gguf import GGUFReader

    stored = GGUFReader(os.path.join(qwen_dir, "qwen2.5-coder-0.5b-instruct.gguf")).fields["tokenizer.chat_template"]
    assert qwen.chat_template == stored.contents(), "tokenizer.chat_template differs from what transformers loaded"
    with open(os.path.join(OUT, "qwen2.5.jinja"), "w", encoding="utf-8", newline="") as f:
        f.write(qwen.chat_template)
    write("qwen2.5.json", qwen, "qwen2.5.jinja", qwen_cases())
    with open(os.path.join(OUT, "features.jinja"), encoding="utf-8") as f:
        write("features.json", qwen, "features.jinja", features_cases(), f.read())
    gemma = AutoTokenizer.from_pretrained(gemma_dir, gguf_file="gemma-3-270m-q4_k_m.gguf")
    with open(os.path.join(OUT, "gemma3.jinja"), encoding="utf-8") as f:
        write("gemma3.json", gemma, "gemma3.jinja", gemma_cases(), f.read())


if __name__ == "__main__":
    main()
