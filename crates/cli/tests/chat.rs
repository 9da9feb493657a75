//! `ferro chat` end to end on the packaged Qwen2.5-Coder-0.5B-Instruct (dequantized, greedy):
//! scripted through stdin (one message per line) and through a pseudo-terminal; multi-turn
//! memory, /save then /load, named sessions, the context limit dropping the oldest turns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

struct Chat {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

/// Runs `ferro chat ARGS` with `input` on stdin (a pipe), sessions under `sessions`.
fn chat(args: &[&str], input: &str, sessions: &Path) -> Chat {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferro"))
        .arg("chat")
        .args(["--dequantize", "--max-new-tokens", "24"])
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("FERRO_SESSIONS_DIR", sessions)
        .env_remove("FERRO_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Chat {
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        code: out.status.code(),
    }
}

impl Chat {
    fn answers(&self) -> Vec<&str> {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        self.stdout.lines().collect()
    }
}

const NAME: &str = "My name is Ada Lovelace. Greet me in one short sentence.";
const ASK: &str = "What is my name? Answer with my name only.";

#[test]
fn remembers_earlier_turns_and_save_then_load_restores_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("conversation.json");
    let first = chat(
        &[],
        &format!("{NAME}\n{ASK}\n/save {}\n", file.display()),
        dir.path(),
    );
    let answers = first.answers();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(
        answers[1].contains("Ada"),
        "second answer forgot the name: {answers:?}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let roles: Vec<&str> = saved
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(saved[0]["content"], NAME);
    assert_eq!(saved[1]["content"], answers[0]);

    // A new process: without the saved conversation the model cannot know the name...
    let fresh = chat(&[], &format!("{ASK}\n"), dir.path());
    assert!(!fresh.answers()[0].contains("Ada"), "{:?}", fresh.stdout);
    // ... with /load it does.
    let loaded = chat(
        &[],
        &format!("/load {}\n{ASK}\n", file.display()),
        dir.path(),
    );
    assert!(loaded.answers()[0].contains("Ada"), "{:?}", loaded.stdout);
    assert!(
        loaded.stderr.contains("loaded 4 messages"),
        "{}",
        loaded.stderr
    );
}

#[test]
fn a_named_session_continues_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let first = chat(&["--session", "ada"], &format!("{NAME}\n"), dir.path());
    assert_eq!(first.answers().len(), 1);
    let stored = dir.path().join("ada.json");
    assert!(
        stored.exists(),
        "no session file in {}",
        dir.path().display()
    );
    let second = chat(&["--session", "ada"], &format!("{ASK}\n"), dir.path());
    assert!(
        second.stderr.contains("resumed session"),
        "{}",
        second.stderr
    );
    assert!(second.answers()[0].contains("Ada"), "{:?}", second.stdout);
    let bad = chat(&["--session", "../x"], "", dir.path());
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("--session"), "{}", bad.stderr);
}

#[test]
fn overflow_drops_the_oldest_turns_and_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = chat(
        &["--context", "64", "--system", "Answer in one short sentence."],
        "Name a color.\nName a fruit.\nName an animal.\n/params\n/system\n/load /nonexistent/file.json\n/nonsense\n/reset\nName a planet.\n",
        dir.path(),
    );
    let answers = out.answers();
    assert_eq!(answers.len(), 4, "{answers:?}\n{}", out.stderr);
    assert!(
        out.stderr.contains("dropped the 2 oldest messages"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("max_new_tokens=24"), "{}", out.stderr);
    assert!(
        out.stderr.contains("system: Answer in one short sentence."),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("/nonexistent/file.json"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("unknown command /nonsense"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("conversation cleared"),
        "{}",
        out.stderr
    );
    // A message that cannot fit even alone is refused, and the chat goes on.
    let long = "word ".repeat(200);
    let out = chat(
        &["--context", "110"],
        &format!("{long}\nName a color.\n"),
        dir.path(),
    );
    assert_eq!(out.answers().len(), 1);
    assert!(
        out.stderr.contains("does not fit the context of 110"),
        "{}",
        out.stderr
    );
}

/// In a terminal (a pseudo-terminal from util-linux's `script`), `ferro chat` shows a
/// banner and a prompt and streams the answer.
#[test]
fn in_a_terminal_it_prompts_and_streams() {
    let ferro = env!("CARGO_BIN_EXE_ferro");
    let cmd = format!("{ferro} chat --dequantize --max-new-tokens 16");
    let mut child = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) runs ferro chat in a pseudo-terminal");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Who are you?\n/exit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("/help for commands"), "no banner: {text:?}");
    assert!(text.contains("> "), "no prompt: {text:?}");
    assert!(text.contains("I am Qwen"), "no answer: {text:?}");
}
