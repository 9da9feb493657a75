//! The function-calling round trip of `examples/tool_calling.rs` on the packaged
//! Qwen2.5-Coder-0.5B-Instruct: offered a get_weather tool and asked about Berlin, the model
//! (greedy, dequantized as transformers runs it) answers with a call that parses into
//! get_weather(city="Berlin"); the example runs the tool and the model answers again.
//! (`cargo test` builds the examples; with a `--test` filter, build them first with
//! `cargo build --release --examples -p ferroformers`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --release --examples -p ferroformers`",
        path.display()
    );
    path
}

#[test]
fn the_model_calls_the_tool_and_answers_with_its_result() {
    ferroformers::core::PackagedModel::Qwen25Coder05BInstruct
        .require()
        .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(example("tool_calling"))
        .env("FERRO_DEQUANTIZE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The model's greedy reply is the bare JSON object (no <tool_call> tags).
    assert!(
        stdout.starts_with(
            "model: {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Berlin\"}}\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("tool call: get_weather {\"city\":\"Berlin\"}\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("tool result: {\"city\":\"Berlin\",\"temperature_c\":14"),
        "{stdout}"
    );
    let answer = stdout.split("answer: ").nth(1).expect("a final answer");
    assert!(
        answer.contains("14"),
        "the answer does not use the tool's result: {answer}"
    );
}
