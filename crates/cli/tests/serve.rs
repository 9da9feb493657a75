//! `ferro serve` on the packaged Qwen2.5-Coder-0.5B-Instruct, over loopback HTTP: greedy
//! answers equal `ferro run`'s, alone and while 15 other streams run; bad requests of every
//! kind are 4xx with OpenAI's error body and the server keeps serving. (The official
//! `openai` client's checks and the load test run from scripts/test_serve.sh.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferroformers::core::PackagedModel;
use serde_json::{json, Value};

const KEY: &str = "test-key";

struct Server {
    child: Child,
    port: u16,
    model_id: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn qwen() -> String {
    let p = PackagedModel::Qwen25Coder05BInstruct
        .require()
        .unwrap_or_else(|e| panic!("{e}"));
    p.to_str().unwrap().to_owned()
}

fn start() -> Server {
    start_with(&[])
}

fn start_with(extra: &[&str]) -> Server {
    let model = qwen();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_ferro"))
        .args([
            "serve",
            "--model",
            &model,
            "--port",
            &port.to_string(),
            "--api-key",
            KEY,
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        port,
        model_id: std::path::Path::new(&model)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into(),
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if let Ok((200, _)) = http(port, "GET", "/health", None, b"") {
            return server;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("ferro serve did not become healthy in 120 s");
}

/// One HTTP/1.1 request on a fresh connection; the status and the (de-chunked) body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(300)))?;
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    // A server may answer (413) before reading all of a large body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        status,
        if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        },
    ))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn chat_body(model: &str, prompt: &str, max_tokens: usize, stream: bool) -> Vec<u8> {
    json!({"model": model, "messages": [{"role": "user", "content": prompt}],
           "temperature": 0, "max_tokens": max_tokens, "stream": stream})
    .to_string()
    .into_bytes()
}

/// The content of a non-streamed answer, or the deltas of a streamed one joined.
fn answer_text(status: u16, body: &str) -> String {
    assert_eq!(status, 200, "{body}");
    if !body.starts_with("data: ") {
        let v: Value = serde_json::from_str(body).unwrap();
        return v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
    }
    let mut text = String::new();
    let mut done = false;
    for line in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v.get("error").is_none(), "{line}");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    assert!(done, "the stream did not end with [DONE]: {body}");
    text
}

fn ferro_run(prompt: &str, max_new: usize) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferro"))
        .args([
            "run",
            "--model",
            &qwen(),
            "--max-new-tokens",
            &max_new.to_string(),
            prompt,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end_matches('\n')
        .to_string()
}

#[test]
fn greedy_answers_equal_ferro_run_alone_and_among_15_streams() {
    let server = start();
    let (port, model) = (server.port, server.model_id.clone());
    let prompt = "Write a Python function that checks whether a number is prime.";
    let want = ferro_run(prompt, 48);
    let (status, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        &chat_body(&model, prompt, 48, false),
    )
    .unwrap();
    assert_eq!(
        answer_text(status, &body),
        want,
        "non-streamed answer alone"
    );
    // 15 other streams, started first, still running when ours is answered.
    let others: Vec<_> = (0..15)
        .map(|i| {
            let model = model.clone();
            std::thread::spawn(move || {
                let p = format!("Count from {i} to {} in words, one per line.", i + 40);
                let (status, body) = http(
                    port,
                    "POST",
                    "/v1/chat/completions",
                    Some(KEY),
                    &chat_body(&model, &p, 96, true),
                )
                .unwrap();
                (p, answer_text(status, &body))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        &chat_body(&model, prompt, 48, true),
    )
    .unwrap();
    assert_eq!(
        answer_text(status, &body),
        want,
        "streamed answer among 15 other streams"
    );
    // Each of the others got its own answer: the one it gets alone.
    let answers: Vec<(String, String)> = others.into_iter().map(|t| t.join().unwrap()).collect();
    for (p, text) in answers.iter().take(3) {
        let (status, body) = http(
            port,
            "POST",
            "/v1/chat/completions",
            Some(KEY),
            &chat_body(&model, p, 96, false),
        )
        .unwrap();
        assert_eq!(&answer_text(status, &body), text, "{p}");
    }
}

/// A valid body with a few bytes changed, cut short, or given wrong types.
fn mutated(base: &[u8], rng: &mut u64) -> Vec<u8> {
    let mut next = |n: usize| {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        (*rng % n.max(1) as u64) as usize
    };
    let mut b = base.to_vec();
    match next(5) {
        0 => b.truncate(next(b.len())),
        1 => {
            for _ in 0..1 + next(4) {
                let i = next(b.len());
                b[i] = next(256) as u8;
            }
        }
        2 => {
            let i = next(b.len());
            b.splice(i..i, [0xff, 0xfe, 0xc3]);
        }
        3 => {
            let mut v: Value = serde_json::from_slice(base).unwrap();
            let keys = [
                "model",
                "messages",
                "max_tokens",
                "temperature",
                "stream",
                "top_p",
                "n",
                "stop",
                "logprobs",
                "tools",
            ];
            let values = [
                json!(null),
                json!(-1),
                json!(1e300),
                json!("x"),
                json!([]),
                json!({}),
                json!([1, 2]),
                json!(true),
            ];
            v[keys[next(keys.len())]] = values[next(values.len())].clone();
            b = v.to_string().into_bytes();
        }
        _ => {
            let junk: Vec<u8> = (0..next(64)).map(|_| next(256) as u8).collect();
            b = junk;
        }
    }
    b
}

#[test]
fn bad_requests_are_4xx_with_openai_errors_and_the_server_keeps_serving() {
    let server = start();
    let (port, model) = (server.port, server.model_id.clone());
    let post = |body: &[u8], key: Option<&str>| {
        http(port, "POST", "/v1/chat/completions", key, body).unwrap()
    };
    let error = |status: u16, body: &str, want: u16| {
        assert_eq!(status, want, "{body}");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        v
    };
    let normal = chat_body(&model, "Say hi.", 2, false);
    let (s, b) = post(b"{\"model\": ", Some(KEY));
    error(s, &b, 400);
    let (s, b) = post(&normal, Some("wrong"));
    error(s, &b, 401);
    let (s, b) = post(&normal, None);
    error(s, &b, 401);
    let (s, b) = post(&chat_body("no-such-model", "hi", 2, false), Some(KEY));
    assert_eq!(error(s, &b, 404)["error"]["param"], "model");
    let empty = json!({"model": model, "messages": []}).to_string();
    assert_eq!(
        error(
            post(empty.as_bytes(), Some(KEY)).0,
            &post(empty.as_bytes(), Some(KEY)).1,
            400
        )["error"]["param"],
        "messages"
    );
    let (s, b) = post(&chat_body(&model, "hi", 10_000_000, false), Some(KEY));
    assert_eq!(error(s, &b, 400)["error"]["param"], "max_tokens");
    let (s, b) = post(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}).to_string().into_bytes(), Some(KEY));
    assert_eq!(error(s, &b, 400)["error"]["param"], "temperature");
    let mut utf8 = normal.clone();
    utf8.splice(20..20, [0xff, 0xfe]);
    let (s, b) = post(&utf8, Some(KEY));
    error(s, &b, 400);
    let big = vec![b' '; 5 << 20];
    let (s, b) = post(&big, Some(KEY));
    error(s, &b, 413);
    // 1,000 random and mutated bodies: never a 5xx, never a dropped connection.
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        let body = mutated(&normal, &mut rng);
        let (s, b) = post(&body, Some(KEY));
        assert!(
            (200..500).contains(&s),
            "{s} for {:?}: {b}",
            String::from_utf8_lossy(&body)
        );
        if s != 200 {
            error(s, &b, s);
        }
        *counts.entry(s).or_insert(0) += 1;
    }
    eprintln!("statuses of 1,000 mutated bodies: {counts:?}");
    let (s, b) = post(&normal, Some(KEY));
    assert_eq!(s, 200, "{b}");
    // The answer is sent as the sequence finishes; its cache blocks are freed just after,
    // so the cache is checked until it is empty (a few seconds at most).
    let mut b = String::new();
    for _ in 0..100 {
        let (s, text) = http(port, "GET", "/metrics", None, b"").unwrap();
        assert_eq!(s, 200);
        b = text;
        if b.contains("ferro_kv_cache_blocks_in_use 0") && b.contains("ferro_running_sequences 0") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        b.contains("ferro_requests_total{route=\"/v1/chat/completions\",status=\"400\"}"),
        "{b}"
    );
    assert!(b.contains("ferro_kv_cache_blocks_in_use 0"), "{b}");
    assert!(b.contains("ferro_running_sequences 0"), "{b}");
}

#[test]
fn a_full_queue_is_a_429_and_sigterm_drains_the_requests_in_flight() {
    let mut server = start_with(&["--max-running", "1", "--max-queued", "1"]);
    let (port, model) = (server.port, server.model_id.clone());
    let long = |i: usize| {
        let model = model.clone();
        std::thread::spawn(move || {
            let p = format!("Write a long story about the number {i}.");
            http(
                port,
                "POST",
                "/v1/chat/completions",
                Some(KEY),
                &chat_body(&model, &p, 160, true),
            )
            .unwrap()
        })
    };
    // One runs, one waits; while both are in, a third is refused.
    let gauge = |name: &str| -> u64 {
        let (_, m) = http(port, "GET", "/metrics", None, b"").unwrap();
        let line = m
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_default();
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let until = |what: &str, done: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(30), "never {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let running = long(0);
    until("running", &|| gauge("ferro_running_sequences") == 1);
    let waiting = long(1);
    until("queued", &|| gauge("ferro_queued_requests") == 1);
    let (s, b) = http(
        port,
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        &chat_body(&model, "hi", 4, false),
    )
    .unwrap();
    assert_eq!(s, 429, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error", "{b}");
    // SIGTERM: no new connections, but both admitted requests finish whole.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    for t in [running, waiting] {
        let (s, body) = t.join().unwrap();
        assert!(!answer_text(s, &body).is_empty(), "{body}");
        // Finished whole: a finish reason, then [DONE] (checked by answer_text).
        assert!(
            body.contains("\"finish_reason\":\"length\"")
                || body.contains("\"finish_reason\":\"stop\""),
            "{body}"
        );
    }
    let start = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "ferro serve exited with {status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "ferro serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
