#!/usr/bin/env python3
"""`ferro serve` against llama.cpp's `llama-server`: the same throughput benchmark, one run.

    scripts/setup_test_client.sh                 # once: scripts/.venv-client with httpx
    bench/build_llama_server.sh                  # once: ~/.cache/ferroformers/llama-server/bin
    cargo build --release -p ferro-cli
    scripts/.venv-client/bin/python bench/serve_compare.py [--model PATH.gguf] [--slots 16]
        [--threads 2] [--rounds 2] [--streams 1,16] [--max-tokens 128]
        [--throughput-requests 2] [--systems ferro,llama.cpp] [--json OUT]

Both servers get the same model, --slots parallel sequences (llama-server -np, ferro
--max-running) and --threads threads (llama-server -t; ferro gets --threads only if its `serve`
takes that flag, and otherwise uses one thread per core, which is 2 on these machines). Only one
server runs at a time, so an idle one cannot take a core from the one being measured. Each
round starts each server fresh, waits for /health, and runs bench/serve_load.py's throughput
part (--streams concurrent streams, --max-tokens each); the order of the systems alternates
between rounds, since these machines drift (shared/BENCHMARKING.md). Reported: median tok/s per
system and stream count, ferro / llama.cpp at each stream count, and each system's scaling
(tok/s at the last stream count / at the first).
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import serve_load  # noqa: E402  (the throughput code both systems are measured with)

DEFAULT_MODEL = os.path.join(
    os.environ.get("FERRO_MODELS_DIR", os.path.expanduser("~/.cache/ferroformers/models")),
    "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct.gguf")
DEFAULT_LLAMA = os.path.join(
    os.environ.get("LLAMA_SERVER_DIR", os.path.expanduser("~/.cache/ferroformers/llama-server")),
    "bin", "llama-server")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ferro_takes_threads(ferro):
    """Whether `ferro serve` has a --threads flag (read from its --help)."""
    try:
        help_text = subprocess.run([ferro, "serve", "--help"], capture_output=True, text=True,
                                   timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--threads" in help_text


def server_command(system, args, port):
    if system == "llama.cpp":
        return [args.llama_server, "-m", args.model, "-np", str(args.slots), "-c", str(args.ctx),
                "-t", str(args.threads), "-tb", str(args.threads),
                "--host", "127.0.0.1", "--port", str(port)]
    cmd = [args.ferro, "serve", "--model", args.model, "--max-running", str(args.slots),
           "--host", "127.0.0.1", "--port", str(port)]
    if args.ferro_threads_flag:
        cmd += ["--threads", str(args.threads)]
    return cmd


class Running:
    """A server process with its log, stopped on exit."""

    def __init__(self, system, cmd, log_path, port):
        self.system, self.port, self.log_path = system, port, log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.base_url = f"http://127.0.0.1:{port}"

    def wait_healthy(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.system} exited with {self.proc.returncode} before "
                                   f"it was ready; log: {self.log_path}\n{tail(self.log_path)}")
            try:
                if httpx.get(self.base_url + "/health", timeout=5, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.system} not healthy within {timeout}s; log: {self.log_path}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def median_or_none(xs):
    return round(statistics.median(xs), 3) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--ferro", default=os.path.join(ROOT, "target", "release", "ferro"))
    ap.add_argument("--llama-server", default=DEFAULT_LLAMA)
    ap.add_argument("--systems", default="ferro,llama.cpp")
    ap.add_argument("--slots", type=int, default=16, help="parallel sequences per server")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=32768, help="llama-server -c (split over slots)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--streams", default="1,16")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--throughput-requests", type=int, default=2)
    ap.add_argument("--health-timeout", type=float, default=300)
    ap.add_argument("--logs", default=None, help="folder for server logs (default: a temp dir)")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    streams = [int(s) for s in args.streams.split(",") if s.strip()]
    for s in systems:
        if s not in ("ferro", "llama.cpp"):
            sys.exit(f"unknown system {s!r} (ferro, llama.cpp)")
    if not os.path.isfile(args.model):
        sys.exit(f"no model at {args.model} (scripts/fetch_models.sh --only qwen)")
    if "ferro" in systems and not os.access(args.ferro, os.X_OK):
        sys.exit(f"no ferro binary at {args.ferro} (cargo build --release -p ferro-cli)")
    if "llama.cpp" in systems and not os.access(args.llama_server, os.X_OK):
        sys.exit(f"no llama-server at {args.llama_server} (bench/build_llama_server.sh)")
    args.ferro_threads_flag = "ferro" in systems and ferro_takes_threads(args.ferro)
    if "ferro" in systems and not args.ferro_threads_flag:
        print(f"note: `ferro serve` has no --threads; it uses one thread per core "
              f"({os.cpu_count()} here)")
    logs = args.logs or tempfile.mkdtemp(prefix="serve_compare-")
    os.makedirs(logs, exist_ok=True)

    runs = []  # one entry per (round, system)
    for rnd in range(args.rounds):
        order = systems if rnd % 2 == 0 else systems[::-1]
        for system in order:
            port = free_port()
            cmd = server_command(system, args, port)
            print(f"\nround {rnd + 1}/{args.rounds}: {system}: {' '.join(cmd)}", flush=True)
            log_path = os.path.join(logs, f"{system}-round{rnd + 1}.log")
            with Running(system, cmd, log_path, port) as srv:
                t0 = time.perf_counter()
                srv.wait_healthy(args.health_timeout)
                print(f"  healthy after {time.perf_counter() - t0:.1f}s", flush=True)
                server = serve_load.Server(srv.base_url)
                rows = asyncio.run(serve_load.throughput_series(
                    server, streams, args.throughput_requests, args.max_tokens))
            errors = [e for r in rows for e in r["errors"]]
            if errors:
                print(f"  {len(errors)} request errors, e.g. {errors[0]}")
            runs.append({"round": rnd + 1, "system": system, "command": cmd, "rows": rows})

    # Medians over the rounds.
    summary = {}
    for system in systems:
        summary[system] = {}
        for n in streams:
            tps = [row["tokens_per_s"] for run in runs if run["system"] == system
                   for row in run["rows"] if row["streams"] == n and not row["errors"]]
            per_stream = [row["per_stream_decode_tokens_per_s"] for run in runs
                          if run["system"] == system for row in run["rows"]
                          if row["streams"] == n and row["per_stream_decode_tokens_per_s"]]
            summary[system][str(n)] = {"tokens_per_s_median": median_or_none(tps),
                                       "tokens_per_s_all": tps,
                                       "per_stream_decode_median": median_or_none(per_stream)}
        first, last = summary[system][str(streams[0])], summary[system][str(streams[-1])]
        summary[system]["scaling"] = (
            round(last["tokens_per_s_median"] / first["tokens_per_s_median"], 3)
            if first["tokens_per_s_median"] and last["tokens_per_s_median"] else None)
    ratios = {}
    if "ferro" in systems and "llama.cpp" in systems:
        for n in streams:
            f = summary["ferro"][str(n)]["tokens_per_s_median"]
            l = summary["llama.cpp"][str(n)]["tokens_per_s_median"]
            ratios[str(n)] = round(f / l, 3) if f and l else None

    header = ["system"] + [f"{n} stream(s) tok/s" for n in streams] + [
        f"scaling {streams[-1]}/{streams[0]}"]
    table = [[s] + [summary[s][str(n)]["tokens_per_s_median"] for n in streams]
             + [summary[s]["scaling"]] for s in systems]
    if ratios:
        table.append(["ferro / llama.cpp"] + [ratios[str(n)] for n in streams] + [""])
    serve_load.print_table(
        f"throughput, medians of {args.rounds} round(s) (max_tokens {args.max_tokens}, greedy, "
        f"{args.slots} slots, {args.threads} threads)", header, table)

    out = {"model": args.model, "slots": args.slots, "threads": args.threads,
           "ferro_threads_flag": args.ferro_threads_flag, "streams": streams,
           "max_tokens": args.max_tokens, "throughput_requests": args.throughput_requests,
           "rounds": args.rounds, "summary": summary, "ferro_over_llama_cpp": ratios,
           "runs": runs, "logs": logs,
           "llama_server_version": tail_version(args.llama_server) if "llama.cpp" in systems else None}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"\nwrote {args.json}")
    if any(row["errors"] for run in runs for row in run["rows"]):
        sys.exit(1)


def tail_version(binary):
    try:
        p = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        return (p.stdout + p.stderr).strip().splitlines()[-2:]
    except (OSError, subprocess.TimeoutExpired):
        return None


if __name__ == "__main__":
    main()
