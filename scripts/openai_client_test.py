#!/usr/bin/env python3
"""Drive a live `ferro serve` with the official `openai` Python client, check by check.

    scripts/setup_test_client.sh        # once: scripts/.venv-client with openai + httpx
    target/release/ferro serve --model QWEN.gguf --api-key KEY --port 8080 &
    scripts/.venv-client/bin/python scripts/openai_client_test.py http://127.0.0.1:8080 KEY

Prints one line per check (PASS/FAIL/NOTE) and exits 1 if any check failed, 2 if the server
could not be reached at all. The checks assume a small instruct model (the tests use
Qwen2.5-Coder-0.5B-Instruct) and a server started with --api-key, so that a wrong key is a 401.
Greedy decoding (temperature 0) must be deterministic: several checks compare two answers to
the same request, streamed and not.
"""

import argparse
import json
import sys
import time
import traceback

import httpx
import openai

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}
FORCE_WEATHER = {"type": "function", "function": {"name": "get_weather"}}
WHO = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Who are you?"},
]


class CheckFailed(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise CheckFailed(message)


class Suite:
    def __init__(self, base_url, api_key, timeout):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        # max_retries=0: the client would otherwise retry 429s and 5xxs and hide them.
        self.client = openai.OpenAI(
            base_url=self.base_url + "/v1", api_key=api_key, max_retries=0, timeout=timeout,
            http_client=direct_openai_http(),
        )
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False)
        self.model = None
        self.greedy_who = None  # the non-streamed greedy answer to WHO, for later comparisons
        self.failures = []

    def run(self, name, fn):
        try:
            detail = fn()
            print(f"PASS  {name}" + (f": {detail}" if detail else ""), flush=True)
        except CheckFailed as e:
            self.failures.append(name)
            print(f"FAIL  {name}: {e}", flush=True)
        except openai.APIStatusError as e:
            self.failures.append(name)
            print(f"FAIL  {name}: HTTP {e.status_code}: {e.message}", flush=True)
        except Exception as e:  # a crash in a check is a failure of that check, not the run
            self.failures.append(name)
            print(f"FAIL  {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(limit=3, file=sys.stderr)

    def auth_headers(self):
        return {"Authorization": f"Bearer {self.api_key}"}

    # --- the checks, in the order they run -------------------------------------------------

    def models(self):
        listing = self.client.models.list()
        expect(len(listing.data) >= 1, "the model list is empty")
        self.model = listing.data[0].id
        expect(isinstance(self.model, str) and self.model, "the first model has no id")
        return f"{len(listing.data)} model(s), using {self.model!r}"

    def embeddings(self):
        # The server lists its embedding model second (ferro serve --embedding-model).
        ids = [m.id for m in self.client.models.list().data]
        expect(len(ids) >= 2, f"no embedding model listed: {ids}")
        name = ids[1]
        texts = ["A man is eating food.", "A man is eating a piece of bread.", "The sky is blue."]
        # The client asks for base64 by default and decodes it; ask for floats too.
        r = self.client.embeddings.create(model=name, input=texts)
        f = self.client.embeddings.create(model=name, input=texts, encoding_format="float")
        expect([d.index for d in r.data] == [0, 1, 2], "indices out of order")
        for a, b in zip(r.data, f.data):
            expect(len(a.embedding) == len(b.embedding) > 0, "base64 and float lengths differ")
            expect(max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-6,
                   "base64 and float embeddings differ")
        v = [d.embedding for d in f.data]
        cos = lambda a, b: sum(x * y for x, y in zip(a, b))  # unit vectors
        expect(abs(cos(v[0], v[0]) - 1) < 1e-4, "embeddings are not normalized")
        expect(cos(v[0], v[1]) > cos(v[0], v[2]), "similar sentences are not closer")
        expect(r.usage.prompt_tokens > 0, "no token count in usage")
        try:
            self.client.embeddings.create(model="no-such-model", input="x")
            raise CheckFailed("an unknown embedding model was accepted")
        except openai.NotFoundError:
            pass
        return (f"{name}: {len(v[0])} dims, cos(similar) {cos(v[0], v[1]):.3f} > "
                f"cos(other) {cos(v[0], v[2]):.3f}, base64 == float")

    def chat(self):
        r = self.client.chat.completions.create(
            model=self.model, messages=WHO, temperature=0, max_tokens=24
        )
        expect(r.object == "chat.completion", f"object is {r.object!r}")
        expect(r.id, "no id")
        expect(len(r.choices) == 1, f"{len(r.choices)} choices, expected 1")
        c = r.choices[0]
        expect(c.index == 0, f"choice index {c.index}")
        expect(c.message.role == "assistant", f"role {c.message.role!r}")
        expect(isinstance(c.message.content, str) and c.message.content.strip(), "empty content")
        expect(c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}")
        check_usage(r.usage, max_completion=24)
        if c.finish_reason == "length":
            expect(r.usage.completion_tokens == 24,
                   f"finish_reason length after {r.usage.completion_tokens} of 24 tokens")
        self.greedy_who = (c.message.content, c.finish_reason, r.usage)
        return f"{c.finish_reason}, {r.usage.completion_tokens} tokens: {short(c.message.content)}"

    def chat_stream(self):
        expect(self.greedy_who, "needs the non-streamed chat answer (that check failed)")
        want_text, want_finish, want_usage = self.greedy_who
        stream = self.client.chat.completions.create(
            model=self.model, messages=WHO, temperature=0, max_tokens=24, stream=True,
            stream_options={"include_usage": True},
        )
        text, ids, finishes, usage_chunks, content_chunks, n = [], set(), [], [], 0, 0
        for chunk in stream:
            n += 1
            expect(chunk.object == "chat.completion.chunk", f"chunk object {chunk.object!r}")
            ids.add(chunk.id)
            if chunk.usage is not None:
                expect(chunk.choices == [],
                       f"chunk {n} has usage and {len(chunk.choices)} choice(s); "
                       "the usage chunk must have choices == []")
                usage_chunks.append(chunk.usage)
                continue
            expect(len(chunk.choices) == 1, f"chunk {n} has {len(chunk.choices)} choices")
            expect(not usage_chunks, f"chunk {n} with choices came after the usage chunk")
            ch = chunk.choices[0]
            expect(ch.index == 0, f"chunk {n} choice index {ch.index}")
            if ch.delta.content:
                text.append(ch.delta.content)
                content_chunks += 1
            if ch.finish_reason is not None:
                finishes.append(ch.finish_reason)
        text = "".join(text)
        expect(len(ids) == 1, f"chunks carry {len(ids)} different ids")
        expect(len(usage_chunks) == 1, f"{len(usage_chunks)} usage chunks, expected exactly 1")
        expect(finishes == [want_finish],
               f"finish_reasons {finishes}, expected one {want_finish!r}")
        expect(text == want_text,
               f"streamed text differs from the greedy non-streamed one:\n"
               f"    streamed: {text!r}\n    plain:    {want_text!r}")
        u = usage_chunks[0]
        check_usage(u, max_completion=24)
        expect((u.prompt_tokens, u.completion_tokens)
               == (want_usage.prompt_tokens, want_usage.completion_tokens),
               f"stream usage {u.prompt_tokens}+{u.completion_tokens}, non-streamed "
               f"{want_usage.prompt_tokens}+{want_usage.completion_tokens}")
        # Each token is at most one content chunk (a token can hold back part of a UTF-8
        # character or of a possible stop string, so there may be fewer chunks).
        expect(content_chunks <= u.completion_tokens,
               f"{content_chunks} content chunks for {u.completion_tokens} tokens")
        return f"{n} chunks ({content_chunks} with content), same text and usage as non-streamed"

    def completions(self):
        prompt = "def fibonacci(n):"
        r = self.client.completions.create(
            model=self.model, prompt=prompt, temperature=0, max_tokens=24
        )
        expect(r.object == "text_completion", f"object is {r.object!r}")
        expect(len(r.choices) == 1, f"{len(r.choices)} choices")
        c = r.choices[0]
        expect(isinstance(c.text, str) and c.text.strip(), "empty text")
        expect(c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}")
        check_usage(r.usage, max_completion=24)

        stream = self.client.completions.create(
            model=self.model, prompt=prompt, temperature=0, max_tokens=24, stream=True
        )
        parts, finishes, ids = [], [], set()
        for chunk in stream:
            ids.add(chunk.id)
            for ch in chunk.choices:
                expect(ch.index == 0, f"stream choice index {ch.index}")
                parts.append(ch.text or "")
                if ch.finish_reason is not None:
                    finishes.append(ch.finish_reason)
        expect(len(ids) == 1, f"stream chunks carry {len(ids)} different ids")
        expect("".join(parts) == c.text,
               f"streamed text differs:\n    streamed: {''.join(parts)!r}\n    plain:    {c.text!r}")
        expect(finishes == [c.finish_reason], f"stream finish_reasons {finishes}")
        return f"{c.finish_reason}, {r.usage.completion_tokens} tokens, stream identical: {short(c.text)}"

    def tools(self):
        question = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
        mode = "forced"
        try:
            r = self.client.chat.completions.create(
                model=self.model, messages=question, tools=[WEATHER_TOOL],
                tool_choice=FORCE_WEATHER, temperature=0, max_tokens=64,
            )
        except openai.BadRequestError as e:
            # A server may refuse to force a function: try "auto" with a blunt prompt.
            print(f"NOTE  tools: forced tool_choice refused ({e.message}); trying \"auto\"")
            mode = "auto"
            question = [
                {"role": "system", "content": "You must answer by calling the get_weather "
                 "tool. Never answer in text."},
                {"role": "user", "content": "Call get_weather for the city Paris."},
            ]
            r = self.client.chat.completions.create(
                model=self.model, messages=question, tools=[WEATHER_TOOL],
                tool_choice="auto", temperature=0, max_tokens=64,
            )
        c = r.choices[0]
        expect(c.finish_reason == "tool_calls",
               f"[{mode}] finish_reason {c.finish_reason!r}, content {short(c.message.content)}")
        calls = c.message.tool_calls or []
        expect(len(calls) >= 1, f"[{mode}] finish_reason tool_calls but no tool_calls")
        call = calls[0]
        expect(call.type == "function", f"call type {call.type!r}")
        expect(call.id, "the tool call has no id")
        expect(call.function.name == "get_weather", f"called {call.function.name!r}")
        try:
            args = json.loads(call.function.arguments)
        except json.JSONDecodeError as e:
            raise CheckFailed(f"arguments are not JSON ({e}): {call.function.arguments!r}")
        expect(isinstance(args, dict) and isinstance(args.get("city"), str) and args["city"],
               f"arguments have no city: {call.function.arguments!r}")

        # Second turn: the assistant's call and the tool's answer go back; expect prose.
        # The assistant message is written out by hand: only the fields OpenAI's API takes.
        followup = question + [
            {"role": "assistant", "content": c.message.content, "tool_calls": [{
                "id": call.id, "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }]},
            {"role": "tool", "tool_call_id": call.id,
             "content": json.dumps({"city": args["city"], "temperature_c": 18,
                                    "condition": "sunny"})},
        ]
        r2 = self.client.chat.completions.create(
            model=self.model, messages=followup, tools=[WEATHER_TOOL], tool_choice="none",
            temperature=0, max_tokens=48,
        )
        c2 = r2.choices[0]
        expect(c2.finish_reason in ("stop", "length"),
               f"answer after the tool result: finish_reason {c2.finish_reason!r}")
        expect(not c2.message.tool_calls, "answer after the tool result is another tool call")
        expect(c2.message.content and c2.message.content.strip(),
               "empty answer after the tool result")
        return (f"[{mode}] get_weather({call.function.arguments}) then "
                f"{short(c2.message.content)}")

    def n_choices(self):
        req = dict(model=self.model, temperature=0.8, seed=1234, n=2, max_tokens=16,
                   messages=[{"role": "user", "content": "Write a short poem about the sea."}])
        r = self.client.chat.completions.create(**req)
        expect(len(r.choices) == 2, f"{len(r.choices)} choices, expected 2")
        expect(sorted(c.index for c in r.choices) == [0, 1],
               f"indices {[c.index for c in r.choices]}")
        for c in r.choices:
            expect(c.message.content and c.message.content.strip(), f"choice {c.index} empty")
            expect(c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}")
        # usage counts the tokens of both choices.
        check_usage(r.usage, max_completion=32)
        expect(r.usage.completion_tokens >= 2, f"completion_tokens {r.usage.completion_tokens}")
        # The same seed gives the same samples.
        again = self.client.chat.completions.create(**req)
        texts = [c.message.content for c in sorted(r.choices, key=lambda c: c.index)]
        texts2 = [c.message.content for c in sorted(again.choices, key=lambda c: c.index)]
        expect(texts == texts2, f"same seed, different samples: {texts} vs {texts2}")
        same = " (the two choices are identical)" if texts[0] == texts[1] else ""
        return f"2 choices, {r.usage.completion_tokens} tokens, reproducible with seed{same}"

    def logprobs(self):
        r = self.client.chat.completions.create(
            model=self.model, messages=WHO, temperature=0, max_tokens=12,
            logprobs=True, top_logprobs=3,
        )
        c = r.choices[0]
        expect(c.logprobs is not None and c.logprobs.content, "no logprobs.content")
        entries = c.logprobs.content
        expect(len(entries) == r.usage.completion_tokens,
               f"{len(entries)} logprob entries for {r.usage.completion_tokens} tokens")
        for i, e in enumerate(entries):
            expect(e.logprob <= 0, f"token {i} {e.token!r}: logprob {e.logprob} > 0")
            expect(len(e.top_logprobs) == 3, f"token {i}: {len(e.top_logprobs)} top entries")
            tops = [t.logprob for t in e.top_logprobs]
            expect(all(t <= 0 for t in tops), f"token {i}: a top logprob > 0: {tops}")
            expect(tops == sorted(tops, reverse=True), f"token {i}: top not sorted: {tops}")
            # Greedy picks the most likely token (ties aside, hence the tolerance).
            expect(tops[0] >= e.logprob - 1e-4,
                   f"token {i} {e.token!r}: chosen {e.logprob} below the top {tops[0]}")
        joined = b"".join(bytes(e.bytes) for e in entries if e.bytes is not None)
        expect(joined.decode("utf-8", "replace") == c.message.content,
               f"token bytes join to {joined!r}, content is {c.message.content!r}")
        return f"{len(entries)} tokens, each with 3 alternatives, greedy = top choice"

    def bad_parameters(self):
        seen = []
        for param, value in (("temperature", 5), ("top_p", 2)):
            try:
                self.client.chat.completions.create(
                    model=self.model, messages=WHO, max_tokens=4, **{param: value}
                )
            except openai.BadRequestError as e:
                named = param in str(e.message) or (isinstance(e.body, dict)
                                                    and e.body.get("param") == param)
                expect(named, f"{param}={value}: the 400 does not name {param}: {e.message!r}")
                seen.append(f"{param}={value}")
                continue
            raise CheckFailed(f"{param}={value} was accepted, expected a 400")
        return "400 naming the parameter for " + ", ".join(seen)

    def unknown_model(self):
        try:
            self.client.chat.completions.create(model="no-such-model", messages=WHO, max_tokens=4)
        except openai.NotFoundError as e:
            return f"404: {short(e.message)}"
        raise CheckFailed("model 'no-such-model' was accepted, expected a 404")

    def wrong_key(self):
        bad = openai.OpenAI(base_url=self.base_url + "/v1", api_key=self.api_key + "-wrong",
                            max_retries=0, http_client=direct_openai_http())
        for what, call in (
            ("GET /v1/models", lambda: bad.models.list()),
            ("POST /v1/chat/completions",
             lambda: bad.chat.completions.create(model=self.model, messages=WHO, max_tokens=4)),
        ):
            try:
                call()
            except openai.AuthenticationError:
                continue
            raise CheckFailed(f"{what} with a wrong key was accepted, expected a 401 "
                              "(is the server started with --api-key?)")
        # And with no Authorization header at all.
        r = self.http.post("/v1/chat/completions",
                           json={"model": self.model, "messages": WHO, "max_tokens": 4})
        expect(r.status_code == 401, f"no key: HTTP {r.status_code}, expected 401")
        check_error_body(r)
        return "401 for a wrong key (models, chat) and for no key"

    def raw_invalid_json(self):
        r = self.http.post("/v1/chat/completions", content=b'{"model": "x", "messages": [',
                           headers={**self.auth_headers(), "Content-Type": "application/json"})
        expect(r.status_code == 400, f"HTTP {r.status_code}, expected 400: {r.text[:200]}")
        err = check_error_body(r)
        return f"400: {short(err['message'])}"

    def raw_max_tokens_too_big(self):
        r = self.http.post("/v1/chat/completions", headers=self.auth_headers(),
                           json={"model": self.model, "messages": WHO, "max_tokens": 10**7})
        expect(r.status_code == 400, f"HTTP {r.status_code}, expected 400: {r.text[:200]}")
        err = check_error_body(r)
        expect("max_tokens" in (err.get("param") or "") + err["message"],
               f"the error does not name max_tokens: {err}")
        return f"400: {short(err['message'])}"

    def still_serving(self):
        expect(self.greedy_who, "needs the non-streamed chat answer (that check failed)")
        r = self.client.chat.completions.create(
            model=self.model, messages=WHO, temperature=0, max_tokens=24
        )
        expect(r.choices[0].message.content == self.greedy_who[0],
               f"after the errors the greedy answer changed: {r.choices[0].message.content!r}")
        health = self.http.get("/health")
        expect(health.status_code == 200, f"/health is {health.status_code}")
        return "same greedy answer as at the start, /health 200"


def direct_openai_http():
    """The openai client's HTTP client, ignoring proxy variables: the server is on loopback."""
    return openai.DefaultHttpx2Client(trust_env=False)


def check_usage(u, max_completion):
    expect(u is not None, "no usage")
    expect(u.prompt_tokens > 0, f"prompt_tokens {u.prompt_tokens}")
    expect(0 < u.completion_tokens <= max_completion,
           f"completion_tokens {u.completion_tokens}, expected 1..{max_completion}")
    expect(u.total_tokens == u.prompt_tokens + u.completion_tokens,
           f"total_tokens {u.total_tokens} != {u.prompt_tokens} + {u.completion_tokens}")


def check_error_body(response):
    """OpenAI's error JSON: {"error": {"message", "type", "param", "code"}}."""
    try:
        err = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        raise CheckFailed(f"the body is not OpenAI error JSON: {response.text[:200]!r}")
    for key in ("message", "type", "param", "code"):
        expect(key in err, f"the error has no {key!r}: {err}")
    expect(isinstance(err["message"], str) and err["message"], f"empty error message: {err}")
    return err


def short(text, n=60):
    text = (text or "").replace("\n", " ")
    return repr(text if len(text) <= n else text[: n - 1] + "…")


def wait_healthy(base_url, seconds):
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(base_url.rstrip("/") + "/health", timeout=5,
                         trust_env=False).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base_url", help="e.g. http://127.0.0.1:8080 (without /v1)")
    ap.add_argument("api_key", help="the key the server was started with (--api-key)")
    ap.add_argument("--wait", type=float, default=60, help="seconds to wait for /health")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per request")
    args = ap.parse_args()

    if not wait_healthy(args.base_url, args.wait):
        print(f"FAIL  health: {args.base_url}/health not 200 within {args.wait:.0f}s")
        sys.exit(2)
    s = Suite(args.base_url, args.api_key, args.timeout)
    s.run("models", s.models)
    if s.model is None:
        print("FAIL  no model id to test with; stopping")
        sys.exit(1)
    checks = [
        ("chat", s.chat),
        ("chat stream + include_usage", s.chat_stream),
        ("completions (plain + stream)", s.completions),
        ("tool call round trip", s.tools),
        ("n=2 with seed", s.n_choices),
        ("logprobs top_logprobs=3", s.logprobs),
        ("400 bad parameter", s.bad_parameters),
        ("404 unknown model", s.unknown_model),
        ("401 wrong key", s.wrong_key),
        ("400 invalid JSON (raw)", s.raw_invalid_json),
        ("400 max_tokens beyond context (raw)", s.raw_max_tokens_too_big),
        ("embeddings (base64 and float)", s.embeddings),
        ("still serving after errors", s.still_serving),
    ]
    for name, fn in checks:
        s.run(name, fn)
    total = len(checks) + 1  # and the model list
    if s.failures:
        print(f"{total - len(s.failures)} passed, {len(s.failures)} failed")
        sys.exit(1)
    print(f"{total} passed, 0 failed")


if __name__ == "__main__":
    main()
