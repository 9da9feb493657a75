#!/usr/bin/env python3
"""Bounded load test and throughput benchmark for an OpenAI-compatible server.

Works against `ferro serve` and llama.cpp's `llama-server` alike (only standard request fields
are sent: ferro refuses unknown ones).

    scripts/setup_test_client.sh        # once: scripts/.venv-client with httpx
    scripts/.venv-client/bin/python bench/serve_load.py --base-url http://127.0.0.1:8080 \
        [--api-key KEY] [--clients 64] [--requests-per-client 4] [--cancel-fraction 0.1] \
        [--streams 1,16] [--max-tokens 128] [--json OUT] [--skip-load] [--skip-throughput]

(a) Load test: --clients concurrent clients each send --requests-per-client streamed greedy
    chat requests, one after another. Each request asks the model to repeat its own code word,
    so an answer delivered to the wrong request shows up; for a sample of the prompts the
    non-streamed greedy answer is fetched first, one at a time, and the streamed answer under
    load must equal it exactly. --cancel-fraction of the requests are closed after a few chunks.
    Every other request must get exactly one complete stream: one completion id across its
    chunks, unique among all requests, one finish_reason, a [DONE], nothing after it.
    429/503 ("server full") are retried with a backoff and counted. Afterwards, when the server
    exports ferro's metrics, /metrics is polled until no KV-cache block and no sequence is left.
(b) Throughput: for each N in --streams, N concurrent streams each run
    --throughput-requests requests of --max-tokens tokens (prompts that ask for long answers;
    completion tokens counted from the usage chunk); the sum of completion tokens over the wall
    time, and the ratio of each N to the first.

Exit status 1 when any load-test check fails. Everything is bounded: request counts are fixed
and --deadline caps the whole load test.
"""

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import time

import httpx

CODE_WORDS = ["ALPHA", "BRAVO", "CEDAR", "DELTA", "EMBER", "FALCON", "GARNET", "HARBOR",
              "INDIGO", "JASPER", "KESTREL", "LOTUS", "MAPLE", "NEBULA", "ORCHID", "PEBBLE"]
LONG_TOPICS = ["the history of the printing press", "how compilers optimize loops",
               "the water cycle", "why the sky is blue", "the rules of chess",
               "how a hash map works", "the life of honey bees", "the causes of tides",
               "how vaccines train the immune system", "the design of the Roman aqueducts",
               "how a CPU cache works", "the migration of monarch butterflies",
               "how TCP congestion control works", "the formation of volcanoes",
               "the history of the bicycle", "how garbage collectors work"]


class Server:
    """One OpenAI-compatible server: its URL, key and first model id."""

    def __init__(self, base_url, api_key=None, timeout=600.0):
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.model = None

    def client(self, connections):
        # One connection per request (no keep-alive): a server may close an idle kept-alive
        # connection just as a request is sent on it (HTTP allows that, and llama-server does),
        # and that must not be mistaken for a dropped request. trust_env=False: proxy variables
        # must not route loopback traffic.
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, trust_env=False,
            timeout=httpx.Timeout(self.timeout, connect=30.0),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=0),
        )

    async def discover_model(self, client):
        r = await client.get("/v1/models")
        r.raise_for_status()
        self.model = r.json()["data"][0]["id"]
        return self.model


class StreamResult:
    """What one streamed request received, and what was wrong with it."""

    def __init__(self, key):
        self.key = key
        self.status = None
        self.ids = set()
        self.text = []
        self.finish_reasons = []
        self.usage = None
        self.usage_chunks = 0
        self.chunks = 0
        self.done = False
        self.after_done = 0
        self.cancelled = False
        self.rejections = 0  # 429/503 answers before it got in
        self.errors = []
        self.t_start = self.t_first = self.t_end = None

    @property
    def content(self):
        return "".join(self.text)

    @property
    def completion_tokens(self):
        # Without a usage chunk (a server that ignores include_usage), count content chunks.
        return self.usage["completion_tokens"] if self.usage else len(self.text)


async def stream_chat(client, server, messages, max_tokens, key, cancel_after=None,
                      retries=30):
    """One streamed greedy chat request, parsed strictly; retried while the server is full."""
    res = StreamResult(key)
    body = {"model": server.model, "messages": messages, "temperature": 0,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    res.t_start = time.perf_counter()
    for attempt in range(retries + 1):
        try:
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                res.status = r.status_code
                if r.status_code in (429, 503) and attempt < retries:
                    res.rejections += 1
                    await r.aread()
                    # Back off with jitter so the retries don't arrive together.
                    await asyncio.sleep(min(4.0, 0.25 * 2 ** min(attempt, 4)) * random.random() + 0.1)
                    continue
                if r.status_code != 200:
                    res.errors.append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                    break
                await read_events(r, res, cancel_after)
        except httpx.HTTPError as e:
            res.errors.append(f"{type(e).__name__}: {e}")
        break
    res.t_end = time.perf_counter()
    return res


async def read_events(response, res, cancel_after):
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments, other SSE fields
        data = line[5:].strip()
        if res.done:
            res.after_done += 1
            continue
        if data == "[DONE]":
            res.done = True
            continue
        chunk = json.loads(data)
        if "error" in chunk:
            res.errors.append(f"error event: {chunk['error']}")
            continue
        res.chunks += 1
        res.ids.add(chunk.get("id"))
        if chunk.get("usage"):
            res.usage_chunks += 1
            res.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                res.errors.append(f"choice index {choice.get('index')}")
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                if res.t_first is None:
                    res.t_first = time.perf_counter()
                res.text.append(piece)
            if choice.get("finish_reason") is not None:
                res.finish_reasons.append(choice["finish_reason"])
        if cancel_after is not None and res.chunks >= cancel_after and not res.finish_reasons:
            # Leaving the `async with` closes the connection mid-stream: the server sees the
            # client go away, as when a user stops a generation.
            res.cancelled = True
            return


async def chat_once(client, server, messages, max_tokens):
    """The non-streamed greedy answer: the reference a streamed answer must equal."""
    r = await client.post("/v1/chat/completions", json={
        "model": server.model, "messages": messages, "temperature": 0, "max_tokens": max_tokens})
    r.raise_for_status()
    choice = r.json()["choices"][0]
    return choice["message"]["content"] or "", choice["finish_reason"]


# --- (a) load test ------------------------------------------------------------------------

def code_prompts(n, seed):
    """n distinct code words (word + 5-digit number) and the chat asking to repeat each."""
    rng = random.Random(seed)
    numbers = rng.sample(range(10000, 100000), n)
    codes = [f"{CODE_WORDS[i % len(CODE_WORDS)]}-{numbers[i]}" for i in range(n)]
    prompts = [[
        {"role": "system", "content": "You repeat code words exactly."},
        {"role": "user", "content": f"Repeat this code word exactly once and say nothing "
                                    f"else: {code}"},
    ] for code in codes]
    return codes, prompts


def story_prompt(code):
    return [{"role": "user", "content": f"Write a long story about a spy whose secret code "
                                        f"word is {code}."}]


async def load_test(server, args):
    total = args.clients * args.requests_per_client
    codes, prompts = code_prompts(total, args.seed)
    rng = random.Random(args.seed + 1)
    cancel = set(rng.sample(range(total), round(total * args.cancel_fraction)))
    sample = sorted(rng.sample(sorted(set(range(total)) - cancel),
                               min(args.check_sample, total - len(cancel))))
    failures = []

    async with server.client(args.clients + 4) as client:
        await server.discover_model(client)
        # References first, one at a time, on an otherwise idle server.
        t0 = time.perf_counter()
        reference = {}
        for i in sample:
            reference[i] = await chat_once(client, server, prompts[i], args.load_max_tokens)
        ref_s = time.perf_counter() - t0
        print(f"load: {len(sample)} greedy references fetched one at a time in {ref_s:.1f}s",
              flush=True)

        async def one_client(c):
            out = []
            for k in range(args.requests_per_client):
                i = c * args.requests_per_client + k
                if i in cancel:
                    # A long answer, so that the close lands while the server is generating.
                    out.append(await stream_chat(
                        client, server, story_prompt(codes[i]), 8 * args.load_max_tokens, i,
                        cancel_after=args.cancel_after))
                else:
                    out.append(await stream_chat(client, server, prompts[i],
                                                 args.load_max_tokens, i))
            return out

        before = await read_metrics(client)
        t0 = time.perf_counter()
        try:
            per_client = await asyncio.wait_for(
                asyncio.gather(*(one_client(c) for c in range(args.clients))), args.deadline)
        except asyncio.TimeoutError:
            print(f"FAIL  load: not finished within --deadline {args.deadline:.0f}s")
            return {"ok": False, "failures": [f"deadline {args.deadline}s exceeded"]}
        wall = time.perf_counter() - t0

    results = [r for rs in per_client for r in rs]
    by_key = {r.key: r for r in results}
    if sorted(by_key) != list(range(total)) or len(results) != total:
        failures.append(f"{total} requests sent, {len(by_key)} distinct results came back")

    seen_ids = {}
    completed, cancelled, own_code, wrong_code, matched = 0, 0, 0, [], 0
    for r in results:
        tag = f"request {r.key} ({codes[r.key]})"
        if r.errors:
            failures.append(f"{tag}: {'; '.join(r.errors)}")
            continue
        if len(r.ids) != 1:
            failures.append(f"{tag}: {len(r.ids)} different chunk ids: {sorted(map(str, r.ids))[:4]}")
        for cid in r.ids:
            if cid in seen_ids:
                failures.append(f"{tag}: completion id {cid} also used by request {seen_ids[cid]}")
            seen_ids[cid] = r.key
        if r.cancelled:
            cancelled += 1
            continue
        completed += 1
        if len(r.finish_reasons) != 1:
            failures.append(f"{tag}: finish_reasons {r.finish_reasons}, expected exactly one")
        if not r.done:
            failures.append(f"{tag}: stream ended without [DONE]")
        if r.after_done:
            failures.append(f"{tag}: {r.after_done} events after [DONE]")
        if r.usage_chunks > 1:
            failures.append(f"{tag}: {r.usage_chunks} usage chunks")
        # A code word of another request in this answer means streams were crossed.
        text = r.content
        if codes[r.key] in text:
            own_code += 1
        foreign = [c for c in re.findall(r"[A-Z]+-\d{5}", text) if c != codes[r.key]]
        if any(c in codes for c in foreign):
            wrong_code.append(r.key)
            failures.append(f"{tag}: answer holds another request's code word: {text!r}")
        if r.key in reference:
            want_text, want_finish = reference[r.key]
            if (text, r.finish_reasons[:1]) == (want_text, [want_finish]):
                matched += 1
            else:
                failures.append(f"{tag}: streamed under load {text!r} ({r.finish_reasons}) "
                                f"!= greedy reference {want_text!r} ({want_finish})")

    expected_cancelled = len(cancel)
    finished_early = expected_cancelled - cancelled  # finished before the cancel point
    rejections = sum(r.rejections for r in results)
    tokens = sum(r.completion_tokens for r in results if not r.cancelled and not r.errors)
    ttfts = [r.t_first - r.t_start for r in results if r.t_first and not r.errors]
    summary = {
        "requests": total, "completed": completed, "cancelled": cancelled,
        "cancel_planned": expected_cancelled, "finished_before_cancel": finished_early,
        "rejected_then_retried": rejections, "reference_sample": len(sample),
        "reference_matched": matched, "own_code_word_present": own_code,
        "crossed_answers": len(wrong_code), "wall_s": round(wall, 2),
        "completion_tokens": tokens, "tokens_per_s": round(tokens / wall, 2),
        "ttft_median_s": round(statistics.median(ttfts), 3) if ttfts else None,
        "ttft_max_s": round(max(ttfts), 3) if ttfts else None,
    }
    if completed + cancelled != total - sum(1 for r in results if r.errors):
        failures.append("completed + cancelled does not add up")
    if own_code < 0.5 * completed:
        # Not a server fault by itself (a small model may paraphrase), but worth a look.
        print(f"NOTE  load: only {own_code}/{completed} answers repeat their code word")

    metrics = await check_metrics_drained(server, args.metrics_timeout)
    summary["metrics"] = metrics
    if metrics.get("ok") is False:
        failures.append(metrics["message"])
    if metrics.get("checked") and before:
        # ferro's counters must have seen at least what the clients saw (cancelled requests
        # add tokens the clients never read, so only a lower bound holds).
        async with server.client(2) as client:
            after = await read_metrics(client)
        gen = counter_sum(after, "ferro_generation_tokens_total") - counter_sum(
            before, "ferro_generation_tokens_total")
        ok200 = counter_sum(after, "ferro_requests_total", 'status="200"') - counter_sum(
            before, "ferro_requests_total", 'status="200"')
        metrics["generation_tokens_delta"], metrics["requests_200_delta"] = gen, ok200
        if gen < tokens:
            failures.append(f"ferro_generation_tokens_total grew by {gen:.0f}, but the clients "
                            f"received {tokens} completion tokens")
        if ok200 < completed:
            failures.append(f"ferro_requests_total{{status=\"200\"}} grew by {ok200:.0f} for "
                            f"{completed} completed requests")
    summary["failures"] = failures
    summary["ok"] = not failures
    return summary


def parse_metrics(text):
    """Prometheus text → {name{labels}: value} (comments skipped)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            pass
    return out


async def read_metrics(client):
    """/metrics parsed, or {} when the server has none."""
    try:
        r = await client.get("/metrics")
    except httpx.HTTPError:
        return {}
    return parse_metrics(r.text) if r.status_code == 200 else {}


def counter_sum(values, name, label=""):
    """The sum of a metric's series whose labels contain `label`."""
    return sum(v for k, v in values.items()
               if (k == name or k.startswith(name + "{")) and label in k)


async def check_metrics_drained(server, timeout):
    """After the load, ferro must free every KV-cache block and sequence (cancelled included)."""
    # Blocks kept for prefix reuse are counted apart (ferro_kv_cache_blocks_cached), not here.
    gauges = ("ferro_kv_cache_blocks_in_use", "ferro_running_sequences", "ferro_queued_requests")
    async with server.client(2) as client:
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = await client.get("/metrics")
            except httpx.HTTPError as e:
                return {"checked": False, "message": f"/metrics unreachable: {e}"}
            values = parse_metrics(r.text) if r.status_code == 200 else {}
            if not all(g in values for g in gauges):
                msg = (f"/metrics is HTTP {r.status_code} without ferro's gauges "
                       f"({', '.join(gauges)}): drain check skipped")
                print(f"NOTE  {msg}", flush=True)
                return {"checked": False, "message": msg}
            now = {g: values[g] for g in gauges}
            if all(v == 0 for v in now.values()):
                return {"checked": True, "ok": True, **now}
            if time.monotonic() > deadline:
                return {"checked": True, "ok": False, **now,
                        "message": f"after {timeout:.0f}s still {now} (leaked blocks or sequences)"}
            await asyncio.sleep(0.5)


# --- (b) throughput -------------------------------------------------------------------------

def long_prompt(i):
    topic = LONG_TOPICS[i % len(LONG_TOPICS)]
    return [{"role": "user", "content": f"Write a long, detailed essay about {topic}, with "
                                        "many sections. Be thorough."}]


async def throughput(server, streams, requests_per_stream, max_tokens):
    """N concurrent streams, each running its requests back to back; tokens over wall time."""
    async with server.client(streams + 2) as client:
        if server.model is None:
            await server.discover_model(client)

        async def worker(s):
            out = []
            for k in range(requests_per_stream):
                i = s * requests_per_stream + k
                out.append(await stream_chat(client, server, long_prompt(i), max_tokens, i))
            return out

        t0 = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(worker(s) for s in range(streams)))
                   for r in rs]
        wall = time.perf_counter() - t0
    bad = [f"request {r.key}: {'; '.join(r.errors)}" for r in results if r.errors]
    tokens = sum(r.completion_tokens for r in results if not r.errors)
    ttfts = [r.t_first - r.t_start for r in results if r.t_first]
    # Per-stream decode speed: tokens after the first over the time after the first.
    decode = [(r.completion_tokens - 1) / (r.t_end - r.t_first) for r in results
              if r.t_first and r.t_end > r.t_first and r.completion_tokens > 1]
    return {
        "streams": streams, "requests": len(results), "errors": bad,
        "completion_tokens": tokens, "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 3),
        "length_finishes": sum(r.finish_reasons == ["length"] for r in results),
        "usage_reported": all(r.usage for r in results if not r.errors),
        "ttft_median_s": round(statistics.median(ttfts), 3) if ttfts else None,
        "per_stream_decode_tokens_per_s": round(statistics.median(decode), 3) if decode else None,
    }


async def throughput_series(server, streams_list, requests_per_stream, max_tokens, warmup=True):
    if warmup:  # the first request pays for cold caches and page faults
        async with server.client(2) as client:
            if server.model is None:
                await server.discover_model(client)
            await stream_chat(client, server, long_prompt(0), 8, -1)
    rows = []
    for n in streams_list:
        row = await throughput(server, n, requests_per_stream, max_tokens)
        print(f"throughput: {n:>3} stream(s): {row['completion_tokens']} tokens in "
              f"{row['wall_s']:.1f}s = {row['tokens_per_s']:.1f} tok/s", flush=True)
        rows.append(row)
    base = rows[0]["tokens_per_s"] if rows and rows[0]["tokens_per_s"] else None
    for row in rows:
        row["ratio_to_first"] = round(row["tokens_per_s"] / base, 3) if base else None
    return rows


# --- report ---------------------------------------------------------------------------------

def print_table(title, header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8080", help="without /v1")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests-per-client", type=int, default=4)
    ap.add_argument("--cancel-fraction", type=float, default=0.1)
    ap.add_argument("--cancel-after", type=int, default=3, help="chunks read before closing")
    ap.add_argument("--check-sample", type=int, default=16,
                    help="prompts whose streamed answer must equal the sequential greedy one")
    ap.add_argument("--load-max-tokens", type=int, default=16)
    ap.add_argument("--deadline", type=float, default=1200, help="seconds for the load test")
    ap.add_argument("--metrics-timeout", type=float, default=30)
    ap.add_argument("--streams", default="1,16", help="comma-separated concurrency levels")
    ap.add_argument("--max-tokens", type=int, default=128, help="per throughput request")
    ap.add_argument("--throughput-requests", type=int, default=2,
                    help="requests each throughput stream runs back to back")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=600, help="seconds per request")
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON here")
    args = ap.parse_args()

    server = Server(args.base_url, args.api_key, args.timeout)
    out = {"base_url": server.base_url, "args": vars(args)}
    ok = True
    if not args.skip_load:
        load = asyncio.run(load_test(server, args))
        out["load"] = load
        ok = load["ok"]
        for f in load["failures"][:20]:
            print(f"FAIL  {f}")
        if len(load["failures"]) > 20:
            print(f"FAIL  ... and {len(load['failures']) - 20} more")
        m = load.get("metrics", {})
        print_table("load test", ["what", "value"], [
            ["requests", load.get("requests")],
            ["completed", load.get("completed")],
            ["cancelled mid-stream", f"{load.get('cancelled')} of {load.get('cancel_planned')} "
                                     f"planned ({load.get('finished_before_cancel')} finished first)"],
            ["429/503 then retried", load.get("rejected_then_retried")],
            ["greedy references matched", f"{load.get('reference_matched')}/{load.get('reference_sample')}"],
            ["answers with own code word", load.get("own_code_word_present")],
            ["crossed answers", load.get("crossed_answers")],
            ["wall s", load.get("wall_s")],
            ["tok/s (completed)", load.get("tokens_per_s")],
            ["TTFT median / max s", f"{load.get('ttft_median_s')} / {load.get('ttft_max_s')}"],
            ["metrics drained", m.get("ok") if m.get("checked") else "not checked"],
            ["metrics: generated tokens / 200s (delta)",
             f"{m.get('generation_tokens_delta', '-')} / {m.get('requests_200_delta', '-')}"],
            ["result", "PASS" if load["ok"] else f"FAIL ({len(load['failures'])})"],
        ])
    if not args.skip_throughput:
        streams = [int(s) for s in args.streams.split(",") if s.strip()]
        rows = asyncio.run(throughput_series(server, streams, args.throughput_requests,
                                             args.max_tokens))
        out["throughput"] = rows
        print_table(f"throughput (max_tokens {args.max_tokens}, greedy)",
                    ["streams", "requests", "tokens", "wall s", "tok/s", "ratio",
                     "per-stream tok/s", "TTFT s", "errors"],
                    [[r["streams"], r["requests"], r["completion_tokens"], r["wall_s"],
                      r["tokens_per_s"], r["ratio_to_first"], r["per_stream_decode_tokens_per_s"],
                      r["ttft_median_s"], len(r["errors"])] for r in rows])
        if any(r["errors"] for r in rows):
            ok = False
            for r in rows:
                for e in r["errors"][:5]:
                    print(f"FAIL  throughput {r['streams']} streams: {e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"\nwrote {args.json}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
