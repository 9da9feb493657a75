//! End-to-end tests of the `ferro` binary: `tokenize`, `detokenize` and `template` on the
//! packaged models (fetched by `scripts/fetch_models.sh`; a missing one fails the test with
//! the fetch hint), and the error messages bad input must give.
//!
//! Every run has its stdin given (null or piped), HF_HUB_OFFLINE=1 and a Hugging Face cache
//! in a temporary folder, so nothing can hang or reach the network.

// clippy.toml allows unwrap/expect in #[test] functions; the helpers below are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ferroformers::core::gguf::writer::metadata_only;
use ferroformers::core::{GgufValue, PackagedModel};
use serde_json::Value;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------

/// Variables that would change how the binary resolves models or what it prints.
const CLEARED_ENV: [&str; 9] = [
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_ENDPOINT",
    "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_OFFLINE",
    "XDG_CACHE_HOME",
    "FERRO_LOG",
    "RUST_LOG",
];

/// One invocation of `ferro`, with its own empty Hugging Face cache.
struct Ferro {
    args: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    hf_home: TempDir,
    hub_cache: Option<PathBuf>,
    use_hf_home_only: bool,
}

fn ferro<I, S>(args: I) -> Ferro
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Ferro {
        args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
        stdin: None,
        hf_home: tempfile::tempdir().expect("temp HF_HOME"),
        hub_cache: None,
        use_hf_home_only: false,
    }
}

impl Ferro {
    /// Pipes `bytes` to stdin (without it, stdin is null).
    fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Points HF_HUB_CACHE at `dir` instead of the empty temporary cache.
    fn hub_cache(mut self, dir: &Path) -> Self {
        self.hub_cache = Some(dir.to_path_buf());
        self
    }

    /// Sets only HF_HOME (to `dir`), leaving HF_HUB_CACHE unset so `HF_HOME/hub` is used.
    fn hf_home_only(mut self, dir: &Path) -> Self {
        self.hub_cache = Some(dir.to_path_buf());
        self.use_hf_home_only = true;
        self
    }

    fn run(self) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferro"));
        cmd.args(&self.args);
        for k in CLEARED_ENV {
            cmd.env_remove(k);
        }
        cmd.env("HF_HUB_OFFLINE", "1");
        if self.use_hf_home_only {
            let home = self.hub_cache.as_deref().expect("hf_home_only sets it");
            cmd.env("HF_HOME", home).env_remove("HF_HUB_CACHE");
        } else {
            let home = self.hf_home.path();
            cmd.env("HF_HOME", home).env(
                "HF_HUB_CACHE",
                self.hub_cache.clone().unwrap_or_else(|| home.join("hub")),
            );
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().expect("spawn ferro");
        // Write stdin from a thread so a large input cannot deadlock against a full pipe.
        let writer = match (self.stdin, child.stdin.take()) {
            (Some(bytes), Some(mut pipe)) => Some(std::thread::spawn(move || {
                // The binary may exit (on an error) before reading everything.
                let _ = pipe.write_all(&bytes);
            })),
            _ => None,
        };
        let out = child.wait_with_output().expect("wait for ferro");
        if let Some(w) = writer {
            w.join().expect("stdin writer thread");
        }
        Output {
            args: self
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            code: out.status.code(),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

struct Output {
    args: Vec<String>,
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Output {
    fn what(&self) -> String {
        format!(
            "ferro {:?}\n  exit: {:?}\n  stdout: {:?}\n  stderr: {}",
            self.args,
            self.code,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }

    /// Asserts success with nothing on stderr, and returns stdout.
    fn ok(&self) -> &[u8] {
        assert_eq!(self.code, Some(0), "expected success: {}", self.what());
        assert!(self.stderr.is_empty(), "unexpected stderr: {}", self.what());
        &self.stdout
    }

    /// Asserts success and returns stdout as text.
    fn text(&self) -> String {
        String::from_utf8(self.ok().to_vec()).expect("stdout is UTF-8")
    }

    /// Asserts success and parses stdout as one JSON id array followed by one newline.
    fn ids(&self) -> Vec<u32> {
        let text = self.text();
        let line = text
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("ids must end with a newline: {}", self.what()));
        assert!(!line.contains('\n'), "one line expected: {}", self.what());
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {}", self.what()))
    }

    /// Asserts a clean failure: exit status 1 (not a panic's 101 or clap's 2), stderr that
    /// starts with `error:`, names everything in `needles` and never mentions a panic.
    fn fails(&self, needles: &[&str]) {
        assert_eq!(
            self.code,
            Some(1),
            "expected exit status 1: {}",
            self.what()
        );
        assert!(
            self.stderr.starts_with("error: "),
            "stderr must start with `error: `: {}",
            self.what()
        );
        assert!(!self.stderr.contains("panicked"), "panic: {}", self.what());
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr should mention {n:?}: {}",
                self.what()
            );
        }
    }

    /// Like `fails`, and nothing at all was printed on stdout.
    fn fails_silently(&self, needles: &[&str]) {
        self.fails(needles);
        assert!(self.stdout.is_empty(), "stdout not empty: {}", self.what());
    }
}

// ---------------------------------------------------------------------------------------
// Models and fixtures
// ---------------------------------------------------------------------------------------

/// The path of a packaged model; a missing one fails with the fetch hint.
fn model(m: PackagedModel) -> String {
    let p = m.require().unwrap_or_else(|e| panic!("{e}"));
    p.to_str().expect("UTF-8 model path").to_owned()
}

fn qwen() -> String {
    model(PackagedModel::Qwen25Coder05BInstruct)
}

fn gemma() -> String {
    model(PackagedModel::Gemma3_270M)
}

fn minilm() -> String {
    model(PackagedModel::AllMiniLmL6V2)
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/chat_templates")
}

fn fixture_path(name: &str) -> String {
    fixtures()
        .join(name)
        .to_str()
        .expect("UTF-8 path")
        .to_owned()
}

fn fixture_cases(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture file");
    let v: Value = serde_json::from_str(&text).expect("fixture JSON");
    v["cases"].as_array().expect("fixture cases").clone()
}

fn fixture_case(file: &str, name: &str) -> Value {
    fixture_cases(file)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{file} has no case {name}"))
}

/// Writes `contents` to `dir/name` and returns the path as a string.
fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> String {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write temp file");
    p.to_str().expect("UTF-8 temp path").to_owned()
}

fn write_json(dir: &Path, name: &str, v: &Value) -> String {
    write(dir, name, serde_json::to_vec(v).expect("JSON"))
}

fn tmp() -> TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Ids of `text` (given on stdin, byte for byte) on the default model or `--model`.
fn tokenize(model: Option<&str>, text: &[u8], extra: &[&str]) -> Vec<u32> {
    let mut args = vec!["tokenize"];
    if let Some(m) = model {
        args.extend(["--model", m]);
    }
    args.extend(extra);
    ferro(args).stdin(text).run().ids()
}

fn ids_json(ids: &[u32]) -> String {
    serde_json::to_string(ids).expect("ids JSON")
}

/// Ids of each of `texts` in one `tokenize --jsonl` run.
fn jsonl(model: &str, texts: &[&str], extra: &[&str]) -> Vec<Vec<u32>> {
    let stdin: String = texts
        .iter()
        .map(|t| serde_json::to_string(t).expect("JSON string") + "\n")
        .collect();
    let mut args = vec!["tokenize", "--model", model, "--jsonl"];
    args.extend(extra);
    let out = ferro(&args).stdin(stdin).run();
    let rows: Vec<Vec<u32>> = out
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {}", out.what())))
        .collect();
    assert_eq!(rows.len(), texts.len(), "{}", out.what());
    rows
}

// ---------------------------------------------------------------------------------------
// tokenize
// ---------------------------------------------------------------------------------------

#[test]
fn tokenize_default_model_prints_one_json_line() {
    let out = ferro(["tokenize", "Hello world"]).run();
    assert_eq!(out.ok(), b"[9707,1879]\n", "{}", out.what());
}

#[test]
fn tokenize_reads_stdin_byte_for_byte() {
    // (stdin, ids on the default Qwen model): nothing stripped, CR LF kept as it is.
    let cases: [(&[u8], &[u32]); 5] = [
        (b"a", &[64]),
        (b"a\n", &[64, 198]),
        (b"a\r\n", &[64, 319]),
        (b"Hello world", &[9707, 1879]),
        (b"", &[]),
    ];
    for (input, want) in cases {
        let got = tokenize(None, input, &[]);
        assert_eq!(got, want, "stdin {:?}", String::from_utf8_lossy(input));
        // The same text given as an argument gives the same ids.
        let text = std::str::from_utf8(input).expect("UTF-8 case");
        assert_eq!(
            ferro(["tokenize", text]).run().ids(),
            want,
            "argument {text:?}"
        );
    }
    let empty = ferro(["tokenize"]).stdin("").run();
    assert_eq!(empty.ok(), b"[]\n");
    // Null stdin reads as empty, without waiting.
    assert_eq!(ferro(["tokenize"]).run().ok(), b"[]\n");
}

#[test]
fn tokenize_special_tokens_per_model() {
    let (qwen, gemma, minilm) = (qwen(), gemma(), minilm());
    // (model, text, ids with special tokens, ids without)
    let cases: [(&str, &str, &[u32], &[u32]); 4] = [
        // Qwen adds nothing.
        (&qwen, "Hello world", &[9707, 1879], &[9707, 1879]),
        // Gemma adds <bos> = 2.
        (&gemma, "Hello", &[2, 9259], &[9259]),
        // MiniLM (BERT) adds [CLS] = 101 and [SEP] = 102 and lowercases.
        (&minilm, "Hello", &[101, 7592, 102], &[7592]),
        (
            &minilm,
            "HELLO world",
            &[101, 7592, 2088, 102],
            &[7592, 2088],
        ),
    ];
    for (m, text, with, without) in cases {
        let got = ferro(["tokenize", "--model", m, text]).run().ids();
        assert_eq!(got, with, "{m} {text:?}");
        let got = ferro(["tokenize", "--model", m, "--no-special", text])
            .run()
            .ids();
        assert_eq!(got, without, "{m} {text:?} --no-special");
    }
    // Gemma: --no-special is exactly the ids without the leading bos, for any text (one
    // --jsonl batch each way: loading the Gemma vocabulary takes a while).
    let texts = ["Hello", "Hello world", "  spaced\n", "emoji 😀", ""];
    let with = jsonl(&gemma, &texts, &[]);
    let without = jsonl(&gemma, &texts, &["--no-special"]);
    // The same as one text at a time.
    assert_eq!(
        (&with[0][..], &without[0][..]),
        (&[2, 9259][..], &[9259][..])
    );
    for ((text, with), without) in texts.iter().zip(with).zip(without) {
        assert_eq!(with.first(), Some(&2), "{text:?}");
        assert_eq!(&with[1..], &without[..], "{text:?}");
    }
}

#[test]
fn tokenize_jsonl_gives_one_line_per_input_line() {
    let texts = [
        "Hello world",
        "line one\nline two\r\n",
        "emoji 😀 👨‍👩‍👧 🇫🇷 end",
    ];
    let stdin: String = texts
        .iter()
        .map(|t| serde_json::to_string(t).expect("JSON string") + "\n")
        .collect();
    assert!(stdin.contains("\\n"), "the newline is escaped in the line");
    assert_eq!(stdin.lines().count(), 3);
    // (Gemma's --jsonl is checked against single texts in tokenize_special_tokens_per_model.)
    let (qwen, minilm) = (qwen(), minilm());
    let runs: [(&str, &[&str]); 4] = [
        (&qwen, &[]),
        (&qwen, &["--no-special"]),
        (&minilm, &[]),
        (&minilm, &["--no-special"]),
    ];
    for (m, extra) in runs {
        let mut args = vec!["tokenize", "--model", m, "--jsonl"];
        args.extend(extra);
        let out = ferro(&args).stdin(stdin.clone()).run();
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{}", out.what());
        assert!(text.ends_with('\n'));
        for (line, t) in lines.iter().zip(texts) {
            let single = tokenize(Some(m), t.as_bytes(), extra);
            assert_eq!(*line, ids_json(&single), "{m} {extra:?} {t:?}");
        }
    }
    // No final newline, CR LF line ends, and an empty batch.
    let out = ferro(["tokenize", "--jsonl"]).stdin("\"a\"\r\n\"b\"").run();
    assert_eq!(out.text(), "[64]\n[65]\n", "{}", out.what());
    assert_eq!(ferro(["tokenize", "--jsonl"]).stdin("").run().ok(), b"");
}

#[test]
fn tokenize_jsonl_bad_line_names_the_line() {
    // (stdin, the line at fault)
    let cases = [
        ("\"ok\"\n5\n\"never\"\n", "line 2"),
        ("\"ok\"\n\"ok\"\nnot json\n", "line 3"),
        ("{\"text\": \"a\"}\n", "line 1"),
        ("[\"a\"]\n", "line 1"),
        ("\"unterminated\n", "line 1"),
        ("\"ok\"\n\n", "line 2"),
    ];
    for (stdin, line) in cases {
        let out = ferro(["tokenize", "--jsonl"]).stdin(stdin).run();
        out.fails(&["stdin", line, "JSON string"]);
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("never"),
            "{}",
            out.what()
        );
    }
}

#[test]
fn tokenize_invalid_utf8_on_stdin_is_an_error() {
    let cases: [(&[u8], &str); 3] = [
        (b"\xff\xfe", "offset 0"),
        (b"ab\xc3(", "offset 2"),
        (b"ok \xe2\x82", "offset 3"),
    ];
    for (input, at) in cases {
        ferro(["tokenize"])
            .stdin(input)
            .run()
            .fails_silently(&["stdin", "UTF-8", at]);
    }
    ferro(["tokenize", "--jsonl"])
        .stdin(&b"\"a\"\n\"\xff\"\n"[..])
        .run()
        .fails(&["stdin line 2", "UTF-8"]);
}

// ---------------------------------------------------------------------------------------
// detokenize
// ---------------------------------------------------------------------------------------

const TRICKY: [&str; 10] = [
    "  leading and trailing  ",
    "\ttabs\r\nCRLF\r\n",
    "emoji 👨‍👩‍👧‍👦 🇫🇷 ☀️",
    "你好！こんにちは 안녕 مرحبا שלום",
    "\n\nstarts with newlines",
    "",
    "a\n",
    "Hello world",
    "multiple   inner    spaces",
    "code: fn main() { println!(\"{x:?}\"); }",
];

#[test]
fn tokenize_then_detokenize_is_byte_exact() {
    let (qwen, gemma) = (qwen(), gemma());
    // Stdin (byte for byte) and --jsonl agree.
    for text in ["a\n", "\ttabs\r\nCRLF\r\n", ""] {
        assert_eq!(
            tokenize(Some(&qwen), text.as_bytes(), &["--no-special"]),
            jsonl(&qwen, &[text], &["--no-special"])[0],
            "{text:?}"
        );
    }
    // (model, how many of TRICKY: Gemma loads slowly, so it gets the first ones)
    for (m, n) in [(&qwen, TRICKY.len()), (&gemma, 5)] {
        let texts = &TRICKY[..n];
        let plain = jsonl(m, texts, &["--no-special"]);
        let special = jsonl(m, texts, &[]);
        for (i, text) in texts.iter().enumerate() {
            // Without special tokens the text comes back as it was, no newline added.
            let out = ferro(["detokenize", "--model", m, &ids_json(&plain[i])]).run();
            assert_eq!(out.ok(), text.as_bytes(), "{m} {text:?}: {}", out.what());
            // With them, --skip-special drops what tokenize added.
            if i % 3 == 0 {
                let ids = ids_json(&special[i]);
                let out = ferro(["detokenize", "--model", m, "--skip-special", &ids]).run();
                assert_eq!(out.ok(), text.as_bytes(), "{m} {text:?}: {}", out.what());
            }
        }
    }
}

#[test]
fn detokenize_skip_special() {
    let gemma = gemma();
    // (model, ids, text, text with --skip-special)
    let cases: [(Option<&str>, &str, &str, &str); 4] = [
        (None, "[151644, 9707]", "<|im_start|>Hello", "Hello"),
        (
            None,
            "[151644,872,198,9707,151645]",
            "<|im_start|>user\nHello<|im_end|>",
            "user\nHello",
        ),
        (None, "[]", "", ""),
        (Some(&gemma), "[2, 9259]", "<bos>Hello", "Hello"),
    ];
    for (m, ids, text, skipped) in cases {
        let mut args = vec!["detokenize"];
        if let Some(m) = m {
            args.extend(["--model", m]);
        }
        args.push(ids);
        let out = ferro(&args).run();
        assert_eq!(out.ok(), text.as_bytes(), "{}", out.what());
        args.insert(1, "--skip-special");
        let out = ferro(&args).run();
        assert_eq!(out.ok(), skipped.as_bytes(), "{}", out.what());
    }
}

#[test]
fn detokenize_bad_ids_json() {
    // (IDS_JSON, what the message must say)
    let cases: [(&str, &[&str]); 8] = [
        ("[1,", &["IDS_JSON", "invalid JSON"]),
        ("", &["IDS_JSON", "invalid JSON"]),
        ("[-1]", &["IDS_JSON", "non-negative", "-1"]),
        ("{}", &["IDS_JSON", "array"]),
        ("9707", &["IDS_JSON", "array"]),
        ("\"[9707]\"", &["IDS_JSON", "array"]),
        ("[1.5]", &["IDS_JSON", "1.5"]),
        ("[4294967296]", &["IDS_JSON", "4294967296"]),
    ];
    for (ids, needles) in cases {
        ferro(["detokenize", ids]).run().fails_silently(needles);
    }
}

#[test]
fn detokenize_id_out_of_vocabulary() {
    let (qwen, gemma, minilm) = (qwen(), gemma(), minilm());
    // (model, vocabulary size)
    for (m, size) in [(&qwen, 151_936u32), (&gemma, 262_144), (&minilm, 30_522)] {
        // The first bad id is named.
        for (ids, bad) in [
            (format!("[{size}]"), size),
            (format!("[1, 999999999, {}, 2]", u32::MAX), 999_999_999),
        ] {
            ferro(["detokenize", "--model", m, &ids])
                .run()
                .fails_silently(&[
                    &format!("token id {bad} "),
                    "out of the vocabulary",
                    &format!("size {size}"),
                ]);
        }
        // The last id of the vocabulary is fine.
        let last = format!("[{}]", size - 1);
        ferro(["detokenize", "--model", m, &last]).run().ok();
    }
}

// ---------------------------------------------------------------------------------------
// template
// ---------------------------------------------------------------------------------------

/// The `ferro template` arguments that reproduce a fixture case; its files go in `dir`.
fn case_args(case: &Value, dir: &Path, model: &str, template: Option<&str>) -> Vec<String> {
    let name = case["name"].as_str().expect("case name");
    let mut args: Vec<String> = vec!["template".into(), "--model".into(), model.into()];
    args.push("--messages".into());
    args.push(write_json(
        dir,
        &format!("{name}.messages.json"),
        &case["messages"],
    ));
    for field in ["tools", "documents"] {
        if !case[field].is_null() {
            args.push(format!("--{field}"));
            args.push(write_json(
                dir,
                &format!("{name}.{field}.json"),
                &case[field],
            ));
        }
    }
    if case["continue_final_message"] == true {
        args.push("--continue-final-message".into());
    } else if case["add_generation_prompt"] == false {
        args.push("--no-generation-prompt".into());
    }
    if let Some(t) = template {
        args.push("--chat-template".into());
        args.push(fixture_path(t));
    }
    args
}

/// Runs every case of a fixture through the CLI: the rendered text byte for byte, or the
/// error the template raises.
fn check_fixture(file: &str, model: &str, template: Option<&str>) -> usize {
    let dir = tmp();
    let cases = fixture_cases(file);
    let outputs: Vec<(Value, Output)> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|case| {
                let args = case_args(case, dir.path(), model, template);
                s.spawn(move || (case.clone(), ferro(args).run()))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("fixture thread"))
            .collect()
    });
    for (case, out) in &outputs {
        let name = &case["name"];
        match (case["rendered"].as_str(), case["error"].as_str()) {
            (Some(rendered), _) => {
                let got = String::from_utf8_lossy(out.ok()).into_owned();
                assert_eq!(got, rendered, "{file} case {name}: {}", out.what());
            }
            (None, Some(error)) => out.fails_silently(&["chat template", "line", error]),
            (None, None) => panic!("{file} case {name} has neither rendered nor error"),
        }
    }
    outputs.len()
}

#[test]
fn template_qwen_fixture_with_the_models_own_template() {
    let n = check_fixture("qwen2.5.json", &qwen(), None);
    assert!(n >= 15, "{n} cases");
}

#[test]
fn template_gemma_fixture_with_chat_template_file() {
    check_fixture("gemma3.json", &gemma(), Some("gemma3.jinja"));
}

#[test]
fn template_features_fixture() {
    check_fixture("features.json", &qwen(), Some("features.jinja"));
}

#[test]
fn template_default_model_and_flags() {
    let dir = tmp();
    // The first case, with no --model: the packaged Qwen is the default.
    let case = fixture_case("qwen2.5.json", "single_turn");
    let messages = write_json(dir.path(), "m.json", &case["messages"]);
    let out = ferro(["template", "--messages", &messages]).run();
    assert_eq!(out.text(), case["rendered"].as_str().expect("rendered"));

    // A tools case, with --tools.
    let case = fixture_case("qwen2.5.json", "tools_given");
    let messages = write_json(dir.path(), "tm.json", &case["messages"]);
    let tools = write_json(dir.path(), "tools.json", &case["tools"]);
    let out = ferro(["template", "--messages", &messages, "--tools", &tools]).run();
    assert_eq!(out.text(), case["rendered"].as_str().expect("rendered"));
    assert!(out.text().contains("# Tools"));

    // --no-generation-prompt.
    let case = fixture_case("qwen2.5.json", "multi_turn_no_generation_prompt");
    let messages = write_json(dir.path(), "nm.json", &case["messages"]);
    let out = ferro([
        "template",
        "--messages",
        &messages,
        "--no-generation-prompt",
    ])
    .run();
    assert_eq!(out.text(), case["rendered"].as_str().expect("rendered"));
    assert!(!out.text().ends_with("<|im_start|>assistant\n"));

    // --continue-final-message (which implies --no-generation-prompt).
    let case = fixture_case("qwen2.5.json", "continue_final_message");
    let messages = write_json(dir.path(), "cm.json", &case["messages"]);
    let want = case["rendered"].as_str().expect("rendered");
    for extra in [&[][..], &["--no-generation-prompt"][..]] {
        let mut args = vec![
            "template",
            "--messages",
            &messages,
            "--continue-final-message",
        ];
        args.extend(extra);
        let out = ferro(&args).run();
        assert_eq!(out.text(), want);
        assert!(out.text().ends_with("Autumn moonlight—"));
    }
}

#[test]
fn template_messages_as_object() {
    let dir = tmp();
    let case = fixture_case("qwen2.5.json", "system_message");
    let obj = serde_json::json!({ "messages": case["messages"], "other": 1 });
    let messages = write_json(dir.path(), "obj.json", &obj);
    let out = ferro(["template", "--messages", &messages]).run();
    assert_eq!(out.text(), case["rendered"].as_str().expect("rendered"));
}

#[test]
fn template_tokenize_equals_tokenize_of_the_rendered_text() {
    let dir = tmp();
    let (qwen, gemma) = (qwen(), gemma());
    // (fixture, case, model, template file)
    let cases = [
        ("qwen2.5.json", "single_turn", &qwen, None),
        ("qwen2.5.json", "special_tokens_in_content", &qwen, None),
        ("qwen2.5.json", "tools_given", &qwen, None),
        ("qwen2.5.json", "whitespace_content", &qwen, None),
        (
            "gemma3.json",
            "system_prefix_multi_turn",
            &gemma,
            Some("gemma3.jinja"),
        ),
    ];
    for (file, name, m, template) in cases {
        let case = fixture_case(file, name);
        // The rendered text itself is checked by the fixture tests.
        let rendered = case["rendered"].as_str().expect("rendered");
        let mut args = case_args(&case, dir.path(), m, template);
        args.push("--tokenize".into());
        let ids = ferro(&args).run().ids();
        assert_eq!(
            ids,
            tokenize(Some(m), rendered.as_bytes(), &["--no-special"]),
            "{file} {name}"
        );
        // The template writes the special tokens: Gemma's <bos> is there once, as id 2.
        if m == &gemma {
            assert_eq!(ids.first(), Some(&2));
            assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1);
        }
        // And the ids decode back to the rendered text.
        let out = ferro(["detokenize", "--model", m, &ids_json(&ids)]).run();
        assert_eq!(out.ok(), rendered.as_bytes(), "{file} {name}");
    }
}

// ---------------------------------------------------------------------------------------
// Bad input: each a clean error naming the file, field or cause
// ---------------------------------------------------------------------------------------

/// Copies MiniLM's tokenizer.json into a fresh folder, with `side` files written next to it.
fn minilm_with(side: &[(&str, &str)]) -> TempDir {
    let dir = tmp();
    std::fs::copy(
        Path::new(&minilm()).join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .expect("copy tokenizer.json");
    for (name, contents) in side {
        write(dir.path(), name, contents);
    }
    dir
}

fn dir_str(dir: &TempDir) -> &str {
    dir.path().to_str().expect("UTF-8 temp path")
}

#[test]
fn error_folder_without_tokenizer_files() {
    let dir = tmp();
    write(dir.path(), "config.json", "{\"model_type\": \"llama\"}");
    write(dir.path(), "vocab.txt", "[PAD]\n");
    for cmd in [
        vec!["tokenize", "--model", dir_str(&dir), "hi"],
        vec!["detokenize", "--model", dir_str(&dir), "[1]"],
    ] {
        ferro(cmd).run().fails_silently(&[
            dir_str(&dir),
            "no tokenizer found",
            "tokenizer.json",
            "no .gguf",
        ]);
    }
}

#[test]
fn error_corrupt_tokenizer_json() {
    let garbage: Vec<u8> = (0u8..=255).rev().cycle().take(1000).collect();
    // (tokenizer.json contents, what the message must say besides the file)
    let cases: [(&[u8], &str); 6] = [
        (&garbage, "not a valid tokenizer.json"),
        (b"", "not a valid tokenizer.json"),
        (b"{\"model\": ", "not a valid tokenizer.json"),
        (b"{}", "not a valid tokenizer.json"),
        (b"[1, 2]", "not a valid tokenizer.json"),
        (b"{\"model\": 5}", "not a valid tokenizer.json"),
    ];
    for (contents, cause) in cases {
        let dir = tmp();
        let file = write(dir.path(), "tokenizer.json", contents);
        ferro(["tokenize", "--model", dir_str(&dir), "hi"])
            .run()
            .fails_silently(&[&file, cause]);
    }
}

#[test]
fn error_corrupt_side_files_next_to_a_valid_tokenizer_json() {
    // (file, contents, what the message must say besides the file)
    let cases = [
        (
            "tokenizer_config.json",
            "{\"add_bos_token\": ",
            "invalid JSON",
        ),
        ("tokenizer_config.json", "not json", "invalid JSON"),
        ("tokenizer_config.json", "\u{0}\u{1}garbage", ""),
        ("tokenizer_config.json", "[1]", ""),
        ("tokenizer_config.json", "{\"bos_token\": 5}", ""),
        ("tokenizer_config.json", "{\"add_bos_token\": \"yes\"}", ""),
        ("tokenizer_config.json", "{\"chat_template\": 5}", ""),
        (
            "tokenizer_config.json",
            "{\"model_max_length\": \"big\"}",
            "",
        ),
        ("special_tokens_map.json", "nope", "invalid JSON"),
        ("special_tokens_map.json", "{\"eos_token\": [1]}", ""),
        ("generation_config.json", "{\"eos_token_id\": \"x\"}", ""),
        ("generation_config.json", "{", "invalid JSON"),
    ];
    for (file, contents, cause) in cases {
        let dir = minilm_with(&[(file, contents)]);
        let path = dir.path().join(file);
        ferro(["tokenize", "--model", dir_str(&dir), "hi"])
            .run()
            .fails_silently(&[path.to_str().expect("UTF-8"), cause]);
    }
    // A bad value of a known field names the field.
    let dir = minilm_with(&[("tokenizer_config.json", "{\"padding_side\": \"middle\"}")]);
    ferro(["tokenize", "--model", dir_str(&dir), "hi"])
        .run()
        .fails_silently(&["padding_side", "middle", "left", "right"]);
    // A valid config next to the copied tokenizer.json still works.
    let dir = minilm_with(&[("tokenizer_config.json", "{\"do_lower_case\": true}")]);
    let out = ferro([
        "tokenize",
        "--model",
        dir_str(&dir),
        "--no-special",
        "Hello",
    ])
    .run();
    assert_eq!(out.ids(), [7592]);
}

/// Writes a GGUF with `metadata` and no tensors.
fn gguf(dir: &Path, name: &str, metadata: &[(&str, GgufValue)]) -> String {
    write(dir, name, metadata_only(metadata))
}

fn arch() -> (&'static str, GgufValue) {
    ("general.architecture", GgufValue::String("llama".into()))
}

#[test]
fn error_gguf_without_tokenizer_metadata() {
    let dir = tmp();
    let file = gguf(dir.path(), "bare.gguf", &[arch()]);
    for cmd in [
        vec!["tokenize", "--model", &file, "hi"],
        vec!["detokenize", "--model", &file, "[1]"],
    ] {
        ferro(cmd).run().fails_silently(&[&file, "tokenizer"]);
    }
    // The same file as the only .gguf of a folder.
    ferro(["tokenize", "--model", dir_str(&dir), "hi"])
        .run()
        .fails_silently(&["bare.gguf", "tokenizer"]);
}

#[test]
fn error_corrupt_gguf_files() {
    let dir = tmp();
    let mut head = Vec::new();
    std::fs::File::open(gemma())
        .expect("open gemma")
        .take(65_536)
        .read_to_end(&mut head)
        .expect("read gemma head");
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let mut huge_array = metadata_only(&[
        arch(),
        (
            "tokenizer.ggml.tokens",
            GgufValue::Array(vec![GgufValue::String("a".into())]),
        ),
    ]);
    // After the key: its value type (4 bytes), the element type (4), then the count (8).
    let key = b"tokenizer.ggml.tokens";
    let at = huge_array
        .windows(key.len())
        .position(|w| w == key)
        .expect("key in file")
        + key.len()
        + 8;
    huge_array[at..at + 8].copy_from_slice(&(u64::MAX / 4).to_le_bytes());
    let mut huge_string = metadata_only(&[arch()]);
    // The length of the first key, right after the 24-byte header.
    huge_string[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());

    // (file name, contents, what the message must say besides the file)
    let cases: [(&str, &[u8], &str); 7] = [
        ("empty.gguf", b"", "file ends"),
        ("garbage.gguf", &garbage, "not a GGUF file"),
        ("magic-only.gguf", b"GGUF", "version"),
        ("truncated.gguf", &head, "tokenizer.ggml.tokens"),
        (
            "huge-array.gguf",
            &huge_array,
            "length of `tokenizer.ggml.tokens`",
        ),
        ("huge-string.gguf", &huge_string, "metadata key #0"),
        ("v9.gguf", b"GGUF\x09\0\0\0", "unsupported GGUF version 9"),
    ];
    for (name, contents, cause) in cases {
        let file = write(dir.path(), name, contents);
        ferro(["tokenize", "--model", &file, "hi"])
            .run()
            .fails_silently(&[&file, cause]);
    }
    // A file that is not a .gguf and not a folder.
    let file = write(dir.path(), "model.bin", b"GGUF");
    ferro(["tokenize", "--model", &file, "hi"])
        .run()
        .fails_silently(&[&file, "not a .gguf"]);
}

#[test]
fn error_template_raises() {
    let dir = tmp();
    let two_users = serde_json::json!([
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"}
    ]);
    let messages = write_json(dir.path(), "two.json", &two_users);
    let template = fixture_path("gemma3.jinja");
    ferro([
        "template",
        "--model",
        &gemma(),
        "--chat-template",
        &template,
        "--messages",
        &messages,
    ])
    .run()
    .fails_silently(&[
        "Conversation roles must alternate",
        "line 19",
        &format!("chat template `{template}`"),
    ]);

    // A template that does not compile names the line.
    let bad = write(dir.path(), "bad.jinja", "ok\n{% if %}\n");
    ferro(["template", "--chat-template", &bad, "--messages", &messages])
        .run()
        .fails_silently(&[&format!("chat template `{bad}`"), "line 2", "syntax error"]);
    // raise_exception from a template.
    let raises = write(
        dir.path(),
        "raises.jinja",
        "{{ raise_exception('custom failure: ' ~ messages[0].role) }}",
    );
    ferro([
        "template",
        "--chat-template",
        &raises,
        "--messages",
        &messages,
    ])
    .run()
    .fails_silently(&["custom failure: user", "line 1", &raises]);
}

#[test]
fn error_invalid_messages() {
    let dir = tmp();
    let d = dir.path();
    // (messages file contents, what the message must say)
    let cases: [(&str, &[&str]); 8] = [
        ("[{\"role\": \"user\",", &["messages file", "invalid JSON"]),
        ("", &["messages file", "invalid JSON"]),
        ("[{\"content\": \"hi\"}]", &["messages[0]", "role"]),
        (
            "[{\"role\": \"user\", \"content\": \"a\"}, {\"content\": \"b\"}]",
            &["messages[1]", "role"],
        ),
        (
            "[{\"role\": 5, \"content\": \"hi\"}]",
            &["messages[0].role", "string"],
        ),
        ("[\"hello\"]", &["messages[0]", "not an object"]),
        ("[]", &["empty"]),
        ("{\"msgs\": []}", &["messages file", "`messages`"]),
    ];
    for (i, (contents, needles)) in cases.iter().enumerate() {
        let file = write(d, &format!("m{i}.json"), contents);
        let out = ferro(["template", "--messages", &file]).run();
        out.fails_silently(needles);
        if needles.contains(&"messages file") {
            out.fails(&[&file]);
        }
    }
    // Missing files: messages, tools, documents, template.
    let ok = write_json(
        d,
        "ok.json",
        &serde_json::json!([{"role": "user", "content": "hi"}]),
    );
    let missing = d.join("missing.json");
    let missing = missing.to_str().expect("UTF-8");
    for flag in ["--messages", "--tools", "--documents", "--chat-template"] {
        let mut args = vec!["template", "--messages", &ok];
        if flag == "--messages" {
            args[2] = missing;
        } else {
            args.extend([flag, missing]);
        }
        ferro(args).run().fails_silently(&[missing, "No such file"]);
    }
    // Tools and documents must be arrays.
    let obj = write(d, "obj.json", "{\"type\": \"function\"}");
    for flag in ["--tools", "--documents"] {
        ferro(["template", "--messages", &ok, flag, &obj])
            .run()
            .fails_silently(&[&obj, "expected a JSON array"]);
    }
}

#[test]
fn error_gguf_without_chat_template() {
    let dir = tmp();
    let messages = write_json(
        dir.path(),
        "m.json",
        &serde_json::json!([{"role": "user", "content": "hi"}]),
    );
    let gemma = gemma();
    ferro(["template", "--model", &gemma, "--messages", &messages])
        .run()
        .fails_silently(&[&gemma, "has no chat template", "--chat-template"]);
    // MiniLM (a folder) has none either.
    ferro(["template", "--model", &minilm(), "--messages", &messages])
        .run()
        .fails_silently(&["has no chat template", "--chat-template"]);
}

#[test]
fn error_model_not_found() {
    let dir = tmp();
    let nowhere = dir.path().join("no-such-model");
    let nowhere = nowhere.to_str().expect("UTF-8");
    let gguf = dir.path().join("nope.gguf");
    let gguf = gguf.to_str().expect("UTF-8");
    for spec in [nowhere, gguf, "./relative/no/such/dir", "not a model"] {
        ferro(["tokenize", "--model", spec, "hi"])
            .run()
            .fails_silently(&[spec, "not found", "no such file or folder"]);
    }
    for spec in ["org/name@", "org/name@a@b"] {
        ferro(["tokenize", "--model", spec, "hi"])
            .run()
            .fails_silently(&[spec, "revision"]);
    }
}

#[test]
fn error_hub_id_offline_not_cached() {
    let out = ferro(["tokenize", "--model", "Qwen/Qwen2.5-7B-Instruct", "hi"]).run();
    out.fails_silently(&[
        "Qwen/Qwen2.5-7B-Instruct",
        "not in the Hugging Face cache",
        "HF_HUB_OFFLINE",
        "models--Qwen--Qwen2.5-7B-Instruct",
    ]);
    // The revision is named, from `@` or from --revision.
    for args in [
        vec!["detokenize", "--model", "acme/tiny@v2", "[1]"],
        vec![
            "detokenize",
            "--model",
            "acme/tiny",
            "--revision",
            "v2",
            "[1]",
        ],
    ] {
        ferro(args)
            .run()
            .fails_silently(&["acme/tiny", "`v2`", "not in the Hugging Face cache"]);
    }
}

/// A Hugging Face cache holding MiniLM's tokenizer files as `org/name` at `commit`, with
/// `refs/main` pointing at it.
fn fake_hub_cache(hub: &Path, repo_id: &str, commit: &str) {
    let repo = hub.join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).expect("snapshot dir");
    std::fs::create_dir_all(repo.join("refs")).expect("refs dir");
    std::fs::write(repo.join("refs/main"), commit).expect("refs/main");
    let src = PathBuf::from(minilm());
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "config.json",
    ] {
        std::fs::copy(src.join(f), snapshot.join(f)).expect("copy into snapshot");
    }
}

#[test]
fn hub_id_resolves_from_the_offline_cache() {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo_id = "sentence-transformers/all-MiniLM-L6-v2";
    let want = ferro(["tokenize", "--model", &minilm(), "Hello world"])
        .run()
        .ids();
    assert_eq!(want, [101, 7592, 2088, 102]);

    // HF_HUB_CACHE pointing at the cache.
    let hub = tmp();
    fake_hub_cache(hub.path(), repo_id, commit);
    let with_commit = format!("{repo_id}@{commit}");
    for spec in [repo_id, &with_commit] {
        let out = ferro(["tokenize", "--model", spec, "Hello world"])
            .hub_cache(hub.path())
            .run();
        assert_eq!(out.ids(), want, "{spec}");
    }
    // HF_HOME/hub, with HF_HUB_CACHE unset.
    let home = tmp();
    fake_hub_cache(&home.path().join("hub"), repo_id, commit);
    let out = ferro(["tokenize", "--model", repo_id, "Hello world"])
        .hf_home_only(home.path())
        .run();
    assert_eq!(out.ids(), want);

    // A revision the cache does not have is named in the error.
    ferro(["tokenize", "--model", repo_id, "--revision", "v9", "hi"])
        .hub_cache(hub.path())
        .run()
        .fails_silently(&[repo_id, "`v9`", "not in the Hugging Face cache"]);
}

/// Output closed before `ferro` writes (as `ferro ... | head -c0` does): a clean exit,
/// never a panic. Today `tokenize` and `template --tokenize` print with `println!`, which
/// panics ("failed printing to stdout: Broken pipe", exit status 101).
#[test]

fn closed_stdout_is_not_a_panic() {
    let dir = tmp();
    let messages = write_json(
        dir.path(),
        "m.json",
        &serde_json::json!([{"role": "user", "content": "hi"}]),
    );
    let cases: [&[&str]; 5] = [
        &["tokenize", "hi"],
        &["tokenize", "--jsonl"],
        &["detokenize", "[9707]"],
        &["template", "--messages", &messages],
        &["template", "--tokenize", "--messages", &messages],
    ];
    for args in cases {
        let hf_home = tmp();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferro"))
            .args(args)
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HOME", hf_home.path())
            .env("HF_HUB_CACHE", hf_home.path().join("hub"))
            .env_remove("FERRO_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferro");
        // Close the read end of stdout before the tokenizer is even loaded.
        drop(child.stdout.take());
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"\"a\"\n");
        }
        let out = child.wait_with_output().expect("wait for ferro");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && out.status.code() != Some(101),
            "ferro {args:?}: {:?}\n{stderr}",
            out.status
        );
    }
}

/// `ferro run` streams only the new text: transformers' greedy answer on the same GGUF
/// (tests/fixtures/causal_lm: "I am Qwen, an Alibaba Cloud developed language model."),
/// or the same text up to the first step where transformers' own top-2 logit gap is below
/// 0.01 (step 6, "Alibaba" over "AI" by 0.003: a near-tie that the 8-bit activations of
/// the quantized kernels may break either way, as in the parity tests).
#[test]
fn run_answers_like_transformers() {
    let want = fixture_case_causal("who_are_you");
    let out = ferro(["run", "--max-new-tokens", "32", "Who are you?"]).run();
    let text = out.text();
    let want_text = want["new_text"]
        .as_str()
        .unwrap()
        .trim_end_matches("<|im_end|>");
    if text == format!("{want_text}\n") {
        return;
    }
    let gaps: Vec<f64> = serde_json::from_value(want["gaps"].clone()).unwrap();
    let tokens: Vec<u32> = serde_json::from_value(want["new_tokens"].clone()).unwrap();
    let tie = gaps.iter().position(|g| *g < 0.01).unwrap_or_else(|| {
        panic!(
            "differs from transformers, which has no near-tie here\n{}",
            out.what()
        )
    });
    let prefix = ferro(["detokenize", &format!("{:?}", &tokens[..tie])])
        .run()
        .text();
    assert!(
        text.starts_with(&prefix) && text.len() > prefix.len(),
        "parted from transformers before its near-tie at step {tie} ({prefix:?})\n{}",
        out.what()
    );
}

/// Prompt-lookup speculation on a code edit (the answer copies most of the prompt): the
/// same text as plain greedy decoding.
#[test]
fn run_with_speculation_answers_the_same() {
    let task = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/prompts/code_edit.txt"),
    )
    .unwrap();
    let plain = ferro(["run", "--max-new-tokens", "96", task.as_str()]).run();
    let spec = ferro([
        "run",
        "--max-new-tokens",
        "96",
        "--speculate",
        "10",
        task.as_str(),
    ])
    .run();
    assert_eq!(spec.text(), plain.text(), "{}", spec.what());
    // The answer copies the function (what prompt lookup drafts from).
    assert!(
        plain.text().contains("def summarize_orders("),
        "{}",
        plain.what()
    );
}

#[test]
fn run_bad_arguments_are_errors() {
    ferro(["run", "--device", "tpu", "hi"])
        .run()
        .fails(&["device", "tpu"]);
    ferro(["run", "--temperature", "0", "hi"])
        .run()
        .fails(&["temperature"]);
    let dir = tmp();
    let out = ferro(["run", "--model", dir.path().to_str().unwrap(), "hi"]).run();
    out.fails(&["no tokenizer"]);
}

fn fixture_case_causal(name: &str) -> Value {
    let p = fixtures().join("../causal_lm/qwen2.5-coder-0.5b-instruct.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
        .clone()
}

/// `ferro quantize` writes a GGUF that `ferro run` loads, says which matrices fell back to
/// Q8_0 and warns that the tiny checkpoint has no tokenizer; bad types and `--quantize` on
/// a GGUF are errors naming the cause.
#[test]
fn quantize_writes_a_gguf_and_bad_arguments_are_errors() {
    let dir = tmp();
    let tiny = fixtures().join("../causal_lm/tiny/llama");
    let out_path = dir.path().join("tiny.gguf");
    let out = ferro([
        OsStr::new("quantize"),
        tiny.as_os_str(),
        out_path.as_os_str(),
        OsStr::new("--type"),
        OsStr::new("q4_k"),
    ])
    .run();
    assert_eq!(out.code, Some(0), "{}", out.what());
    let stderr = &out.stderr;
    assert!(
        stderr.contains("blk.0.attn_q.weight: rows are not whole Q4_K blocks; stored as Q8_0")
            && stderr.contains("no tokenizer.json")
            && stderr.contains("wrote "),
        "{}",
        out.what()
    );
    let g = ferroformers::core::GgufFile::open(&out_path).unwrap();
    assert_eq!(g.get_str("general.architecture").unwrap(), Some("llama"));

    ferro([
        OsStr::new("quantize"),
        tiny.as_os_str(),
        out_path.as_os_str(),
        OsStr::new("--type"),
        OsStr::new("q3_k"),
    ])
    .run()
    .fails(&["q3_k", "q8_0, q4_k, q5_k, q6_k"]);
    ferro(["run", "--quantize", "q8_0", "--model", &qwen(), "hi"])
        .run()
        .fails(&["already quantized"]);
    ferro(["run", "--quantize", "q4", "--model", &qwen(), "hi"])
        .run()
        .fails(&["`q4` is not a quantization type"]);
}

// ---------------------------------------------------------------------------------------
// ferro pipeline
// ---------------------------------------------------------------------------------------

fn tiny_encoder(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/encoders/tiny")
        .join(name)
        .to_str()
        .expect("UTF-8 path")
        .to_owned()
}

#[test]
fn pipeline_text_classification_prints_transformers_records() {
    let model = tiny_encoder("bert-seq-cls");
    let out = ferro([
        "pipeline",
        "text-classification",
        "--model",
        &model,
        "--top-k",
        "2",
        "The movie was great.",
        "Paris",
    ])
    .run();
    let text = String::from_utf8(out.ok().to_vec()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    // transformers: neutral 0.732212, positive 0.226564; negative 0.993296 for "Paris".
    assert_eq!(lines[0][0]["label"], "neutral");
    assert!((lines[0][0]["score"].as_f64().unwrap() - 0.732212).abs() < 1e-4);
    assert_eq!(lines[0][1]["label"], "positive");
    assert_eq!(lines[1][0]["label"], "negative");
    let long = "John Smith was born in London in the summer. ".repeat(8);
    ferro([
        "pipeline",
        "sentiment-analysis",
        "--model",
        &model,
        long.as_str(),
    ])
    .run()
    .fails(&["input 1", "tokens", "truncation"]);
    ferro(["pipeline", "summarization", "--model", &model, "x"])
        .run()
        .fails(&["unknown task `summarization`"]);
    ferro([
        "pipeline",
        "text-classification",
        "--model",
        &model,
        "--aggregation-strategy",
        "simple",
        "x",
    ])
    .run()
    .fails(&["`aggregation_strategy` is not an argument of text-classification"]);
    let file = tempfile::NamedTempFile::with_suffix(".jsonl").unwrap();
    std::fs::write(
        file.path(),
        "\"Paris\"\n{\"text\": \"The movie was great.\"}\n",
    )
    .unwrap();
    let out = ferro([
        "pipeline",
        "text-classification",
        "--model",
        &model,
        "--file",
        file.path().to_str().unwrap(),
    ])
    .run();
    let text = String::from_utf8(out.ok().to_vec()).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    // fill-mask: transformers' top token for "The movie was [MASK]." is "##gle" (0.113048).
    let mlm = tiny_encoder("bert-mlm");
    let out = ferro([
        "pipeline",
        "fill-mask",
        "--model",
        &mlm,
        "--top-k",
        "1",
        "The movie was [MASK].",
    ])
    .run();
    let v: Value = serde_json::from_slice(out.ok()).unwrap();
    assert_eq!(v[0]["token_str"], "##gle");
    assert!((v[0]["score"].as_f64().unwrap() - 0.113048).abs() < 1e-4);
    ferro(["pipeline", "fill-mask", "--model", &mlm, "no mask"])
        .run()
        .fails(&["no mask token"]);
    std::fs::write(file.path(), "{\"txt\": 1}\n").unwrap();
    ferro([
        "pipeline",
        "text-classification",
        "--model",
        &model,
        "--file",
        file.path().to_str().unwrap(),
    ])
    .run()
    .fails(&["input 1", "text"]);
}

#[test]
fn pipeline_reads_each_tasks_fields_from_jsonl_and_csv() {
    // question-answering from JSONL objects: transformers 4.57.6 answers "in London and
    // works for" (0.00170847) and, over windows of 32 tokens, "studied music at a small
    // school near" (0.153593).
    let qa = tiny_encoder("bert-qa");
    let file = tempfile::NamedTempFile::with_suffix(".jsonl").unwrap();
    let long = "John Smith was born in London in the summer. He studied music at a small \
        school near the river, and later he moved to Paris to work for a large company. Every \
        morning he walked to the office, bought coffee from a friendly woman, and read the \
        news. In the evening he played the piano for his children, who loved the old songs \
        from London.";
    let lines = [
        serde_json::json!({"question": "Where does John live?",
                           "context": "John Smith lives in London and works for Google."}),
        serde_json::json!({"question": "Where was John born?", "context": long}),
    ];
    let body: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(file.path(), body.join("\n")).unwrap();
    let out = ferro([
        "pipeline",
        "question-answering",
        "--model",
        &qa,
        "--file",
        file.path().to_str().unwrap(),
        "--max-seq-len",
        "32",
        "--doc-stride",
        "16",
    ])
    .run();
    let text = String::from_utf8(out.ok().to_vec()).unwrap();
    let got: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1]["answer"], "studied music at a small school near");
    assert!((got[1]["score"].as_f64().unwrap() - 0.153593).abs() < 1e-4);
    // zero-shot-classification from CSV rows with `sequence` and `candidate_labels`.
    let nli = tiny_encoder("bert-nli");
    let csv = tempfile::NamedTempFile::with_suffix(".csv").unwrap();
    std::fs::write(
        csv.path(),
        "sequence,candidate_labels\n\"The team won the game yesterday.\",\"sports, politics, food\"\n",
    )
    .unwrap();
    let out = ferro([
        "pipeline",
        "zero-shot-classification",
        "--model",
        &nli,
        "--file",
        csv.path().to_str().unwrap(),
    ])
    .run();
    let v: Value = serde_json::from_slice(out.ok()).unwrap();
    assert_eq!(v["labels"].as_array().unwrap().len(), 3);
    assert_eq!(v["sequence"], "The team won the game yesterday.");
    // A CSV row with the wrong number of fields names its row.
    std::fs::write(csv.path(), "text\n\"a\",b\n").unwrap();
    ferro([
        "pipeline",
        "text-classification",
        "--model",
        &tiny_encoder("bert-seq-cls"),
        "--file",
        csv.path().to_str().unwrap(),
    ])
    .run()
    .fails(&["row 2", "2 fields for 1 columns"]);
    // Generic keyword arguments: align_to_words=false cuts "Google." to "gle." (transformers).
    let out = ferro([
        "pipeline",
        "question-answering",
        "--model",
        &qa,
        "--top-k",
        "3",
        "--arg",
        "align_to_words=false",
        "--file",
        file.path().to_str().unwrap(),
    ])
    .run();
    let first: Value = serde_json::from_str(
        String::from_utf8(out.ok().to_vec())
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first[2]["answer"], "gle.");
}

#[test]
fn pipeline_semantic_search_and_text_generation() {
    let minilm = model(PackagedModel::AllMiniLmL6V2);
    let corpus = tempfile::NamedTempFile::with_suffix(".txt").unwrap();
    std::fs::write(
        corpus.path(),
        "The cat sleeps on the sofa.\nStock markets fell sharply today.\nA kitten naps on the couch.\n",
    )
    .unwrap();
    let out = ferro([
        "pipeline",
        "semantic-search",
        "--model",
        &minilm,
        "--corpus",
        corpus.path().to_str().unwrap(),
        "--top-k",
        "2",
        "Where is the cat sleeping?",
    ])
    .run();
    let hits: Value = serde_json::from_slice(out.ok()).unwrap();
    let ids: Vec<u64> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["corpus_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(
        !ids.contains(&1),
        "the finance passage ranked among the cat ones: {hits}"
    );
    ferro(["pipeline", "semantic-search", "--model", &minilm, "cat"])
        .run()
        .fails(&["--corpus"]);
    // text-generation: a chat message list per JSONL line, greedy.
    let chat = tempfile::NamedTempFile::with_suffix(".jsonl").unwrap();
    std::fs::write(
        chat.path(),
        "[{\"role\": \"user\", \"content\": \"Who are you?\"}]\n",
    )
    .unwrap();
    let out = ferro([
        "pipeline",
        "text-generation",
        "--model",
        &qwen(),
        "--max-new-tokens",
        "32",
        "--arg",
        "do_sample=false",
        "--file",
        chat.path().to_str().unwrap(),
    ])
    .run();
    let v: Value = serde_json::from_slice(out.ok()).unwrap();
    assert_eq!(
        v[0]["generated_text"][1]["content"],
        "I am Qwen, an Alibaba Cloud developed language model."
    );
}

// ---------------------------------------------------------------------------------------
// ferro train
// ---------------------------------------------------------------------------------------

/// A training config for the tiny classifier on the first 40 sentiment examples.
fn tiny_train_config(dir: &Path, max_steps: usize) -> std::path::PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let train = dir.join("train.jsonl");
    let all = std::fs::read_to_string(fixtures.join("training/sentiment/train.jsonl")).unwrap();
    let lines: Vec<&str> = all.lines().take(40).collect();
    std::fs::write(&train, lines.join("\n")).unwrap();
    let cfg = dir.join("train.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\nname_or_path = {:?}\n[data]\ntrain_file = {:?}\n[training]\n\
             output_dir = {:?}\nmax_steps = {max_steps}\nper_device_train_batch_size = 4\n\
             learning_rate = 1e-3\nlogging_steps = 1\nsave_steps = 5\nsave_total_limit = 2\n\
             disable_tqdm = true\n",
            tiny_encoder("bert-seq-cls"),
            train.to_str().unwrap(),
            dir.join("out").to_str().unwrap()
        ),
    )
    .unwrap();
    cfg
}

fn losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("out/log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn train_killed_and_resumed_continues_as_if_uninterrupted() {
    // Long enough that the run is still going when the test, polling for checkpoint 50,
    // gets the CPU back on a loaded machine (300 steps of the tiny model finished first once).
    let steps = 2000;
    let whole = tempfile::tempdir().unwrap();
    let cfg = tiny_train_config(whole.path(), steps);
    ferro(["train", "--config", cfg.to_str().unwrap()])
        .run()
        .ok();
    let want = losses(whole.path());
    assert_eq!(want.len(), steps);

    let killed = tempfile::tempdir().unwrap();
    let cfg = tiny_train_config(killed.path(), steps);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferro"))
        .args(["train", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let marker = killed.path().join("out/checkpoint-50");
    let start = std::time::Instant::now();
    while !marker.exists() && start.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = losses(killed.path()).len();
    assert!(before < steps, "the run finished before it could be killed");
    // Only whole checkpoints carry the name; a partial one is never picked up.
    let out = killed.path().join("out");
    for e in std::fs::read_dir(&out).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("checkpoint-") {
            assert!(
                e.path().join("trainer_state.json").is_file(),
                "{name} is incomplete"
            );
        }
    }
    ferro([
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--resume-from-checkpoint",
        "latest",
    ])
    .run()
    .ok();
    let got = losses(killed.path());
    assert_eq!(got.len(), want.len());
    for (step, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-5, "step {}: {g} vs {w}", step + 1);
    }
}

#[test]
fn train_refuses_bad_input_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_train_config(dir.path(), 10);
    let text = std::fs::read_to_string(&cfg).unwrap();
    // A column the dataset does not have.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        text.replace("[data]\n", "[data]\ntext_column = \"review\"\n"),
    )
    .unwrap();
    ferro(["train", "--config", bad.to_str().unwrap()])
        .run()
        .fails(&["no column `review`", "train.jsonl"]);
    // Labels outside the model's classes.
    std::fs::write(
        dir.path().join("train.jsonl"),
        "{\"text\": \"fine\", \"label\": 7}\n",
    )
    .unwrap();
    ferro(["train", "--config", cfg.to_str().unwrap()])
        .run()
        .fails(&["label 7", "3 classes"]);
    // An unknown argument.
    std::fs::write(
        &bad,
        text.replace("[training]\n", "[training]\nlearnin_rate = 1.0\n"),
    )
    .unwrap();
    ferro(["train", "--config", bad.to_str().unwrap()])
        .run()
        .fails(&["learnin_rate"]);
}

#[test]
fn eval_reports_loss_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    tiny_train_config(dir.path(), 10); // writes train.jsonl
    let file = dir.path().join("train.jsonl");
    let out = ferro([
        "eval",
        "--model",
        &tiny_encoder("bert-seq-cls"),
        "--task",
        "text-classification",
        "--file",
        file.to_str().unwrap(),
    ])
    .run();
    let v: Value = serde_json::from_slice(out.ok()).unwrap();
    for key in ["eval_loss", "eval_accuracy", "eval_f1"] {
        assert!(v[key].as_f64().unwrap().is_finite(), "{key} in {v}");
    }
    // Perplexity of the packaged Qwen on the committed chat set (assistant turns only).
    let chat =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/training/chat/test.jsonl");
    let out = ferro([
        "eval",
        "--model",
        &qwen(),
        "--task",
        "causal-lm",
        "--text-column",
        "messages",
        "--file",
        chat.to_str().unwrap(),
    ])
    .run();
    let v: Value = serde_json::from_slice(out.ok()).unwrap();
    let ppl = v["eval_perplexity"].as_f64().unwrap();
    let loss = v["eval_loss"].as_f64().unwrap();
    assert!(ppl > 1.0 && (ppl - loss.exp()).abs() < 1e-6 * ppl, "{v}");
    ferro(["eval", "--model", &qwen()])
        .run()
        .fails(&["--task and --file"]);
}

#[test]
fn train_token_classification_reports_entity_scores() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ner.jsonl");
    let rows = [
        r#"{"tokens": ["John", "lives", "in", "London"], "ner_tags": ["B-PER", "O", "O", "B-LOC"]}"#,
        r#"{"tokens": ["Mary", "works", "for", "Google"], "ner_tags": ["B-PER", "O", "O", "B-ORG"]}"#,
        r#"{"tokens": ["Paris", "is", "a", "city"], "ner_tags": ["B-LOC", "O", "O", "O"]}"#,
    ];
    std::fs::write(&data, rows.join("\n")).unwrap();
    let cfg = dir.path().join("ner.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\nname_or_path = {:?}\ntask = \"token-classification\"\n[data]\n\
             train_file = {:?}\neval_file = {:?}\n[training]\noutput_dir = {:?}\nmax_steps = 4\n\
             per_device_train_batch_size = 2\nlearning_rate = 1e-3\nlogging_steps = 2\n\
             eval_strategy = \"steps\"\neval_steps = 2\nsave_steps = 2\ndisable_tqdm = true\n",
            tiny_encoder("bert-token-cls"),
            data.to_str().unwrap(),
            data.to_str().unwrap(),
            dir.path().join("out").to_str().unwrap()
        ),
    )
    .unwrap();
    let out = ferro(["train", "--config", cfg.to_str().unwrap()]).run();
    let v: Value = serde_json::from_slice(out.ok()).unwrap();
    for key in [
        "eval_loss",
        "eval_f1",
        "eval_precision",
        "eval_recall",
        "eval_accuracy",
    ] {
        assert!(v["eval"][key].as_f64().is_some(), "{key} in {v}");
    }
    // The saved model runs in the NER pipeline.
    let saved = dir.path().join("out");
    let out = ferro([
        "pipeline",
        "ner",
        "--model",
        saved.to_str().unwrap(),
        "--aggregation-strategy",
        "simple",
        "John lives in London",
    ])
    .run();
    let v: Value = serde_json::from_slice(out.ok()).unwrap();
    assert!(v.is_array(), "{v}");
}

#[test]
fn train_masked_lm_and_fill_masks_with_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("text.txt");
    std::fs::write(
        &data,
        "the movie was great\nthe food was terrible\nthe team won the game\nmary visited paris\n",
    )
    .unwrap();
    let cfg = dir.path().join("mlm.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\nname_or_path = {:?}\ntask = \"masked-lm\"\n[data]\ntrain_file = {:?}\n\
             eval_file = {:?}\nmlm_probability = 0.3\n[training]\noutput_dir = {:?}\n\
             max_steps = 3\nper_device_train_batch_size = 2\nlearning_rate = 1e-3\n\
             logging_steps = 1\nsave_steps = 3\ndisable_tqdm = true\n",
            tiny_encoder("bert-mlm"),
            data.to_str().unwrap(),
            data.to_str().unwrap(),
            dir.path().join("out").to_str().unwrap()
        ),
    )
    .unwrap();
    let out = ferro(["train", "--config", cfg.to_str().unwrap()]).run();
    let v: Value = serde_json::from_slice(out.ok()).unwrap();
    assert!(v["eval"]["eval_loss"].as_f64().unwrap().is_finite(), "{v}");
    let saved = dir.path().join("out");
    let out = ferro([
        "pipeline",
        "fill-mask",
        "--model",
        saved.to_str().unwrap(),
        "The movie was [MASK].",
    ])
    .run();
    let v: Value = serde_json::from_slice(out.ok()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 5, "{v}");
}

#[test]
fn train_lora_classifier_on_a_bare_encoder_saves_head_with_adapter() {
    // LoRA on all-MiniLM-L6-v2 (no classification head): PEFT's SEQ_CLS arrangement, the
    // new head trained whole and saved in the adapter; `ferro eval --adapter` rebuilds the
    // same classifier from the base and the adapter alone.
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let all = std::fs::read_to_string(fixtures.join("training/sentiment/train.jsonl")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let (train, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("test.jsonl"),
    );
    std::fs::write(&train, lines[..64].join("\n")).unwrap();
    std::fs::write(&test, lines[64..96].join("\n")).unwrap();
    let out = dir.path().join("out");
    let cfg = dir.path().join("lora.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\nname_or_path = {:?}\nlabels = [\"negative\", \"positive\"]\nmax_length = 64\n\
             [data]\ntrain_file = {:?}\neval_file = {:?}\n\
             [training]\noutput_dir = {:?}\nmax_steps = 4\nper_device_train_batch_size = 16\n\
             per_device_eval_batch_size = 32\nlearning_rate = 1e-3\nlogging_steps = 1\n\
             save_strategy = \"no\"\ndisable_tqdm = true\n\
             [lora]\nr = 4\nlora_alpha = 8\nlora_dropout = 0.1\ntarget_modules = [\"query\", \"value\"]\n",
            minilm(),
            train.to_str().unwrap(),
            test.to_str().unwrap(),
            out.to_str().unwrap()
        ),
    )
    .unwrap();
    ferro(["train", "--config", cfg.to_str().unwrap()])
        .run()
        .ok();
    let adapter_cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(adapter_cfg["task_type"], "SEQ_CLS", "{adapter_cfg}");
    assert!(adapter_cfg["modules_to_save"]
        .as_array()
        .unwrap()
        .contains(&Value::from("classifier")));
    // The safetensors header: an 8-byte length, then JSON naming every tensor.
    let bytes = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
    // 6 layers × (query, value) × (A, B), and the head's weight and bias.
    assert_eq!(names.len(), 26, "{names:?}");
    assert!(header.contains_key("base_model.model.classifier.weight"));
    assert!(header
        .contains_key("base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight"));
    // The final evaluation of training and a fresh evaluation from base + adapter agree.
    let trained: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval_results.json")).unwrap())
            .unwrap();
    let again = ferro([
        "eval",
        "--config",
        cfg.to_str().unwrap(),
        "--adapter",
        out.to_str().unwrap(),
    ])
    .run();
    let again: Value = serde_json::from_slice(again.ok()).unwrap();
    for key in ["eval_loss", "eval_accuracy"] {
        let (a, b) = (trained[key].as_f64().unwrap(), again[key].as_f64().unwrap());
        assert!(
            (a - b).abs() < 1e-5,
            "{key}: {a} after training, {b} from the adapter"
        );
    }
}
