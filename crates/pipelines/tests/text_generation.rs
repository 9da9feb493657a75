//! The text-generation pipeline on the packaged Qwen2.5-Coder-0.5B-Instruct GGUF: a chat is
//! answered through the chat template with transformers' greedy answer
//! (tests/fixtures/causal_lm/qwen2.5-coder-0.5b-instruct.json), returned as the messages
//! plus the assistant's; a text is continued and returned whole or alone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use ferro_core::PackagedModel;
use ferro_pipelines::{pipeline, Pipeline};
use serde_json::{json, Map, Value};

#[test]
fn chat_and_text_prompts_are_answered_as_transformers_shapes_them() {
    let path = PackagedModel::Qwen25Coder05BInstruct
        .require()
        .unwrap_or_else(|e| panic!("{e}"));
    let pipe = pipeline("text-generation", path.to_str().unwrap()).unwrap();
    assert!(matches!(pipe, Pipeline::TextGeneration(_)));
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/causal_lm/qwen2.5-coder-0.5b-instruct.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let case = &reference["cases"][0];
    assert_eq!(case["name"], "who_are_you");
    let messages = case["messages"].clone();
    let kw = |v: Value| v.as_object().unwrap().clone();
    let greedy = kw(json!({"max_new_tokens": 32, "do_sample": false}));
    let out = pipe.run(std::slice::from_ref(&messages), &greedy).unwrap();
    let generated = out[0][0]["generated_text"].as_array().unwrap();
    assert_eq!(generated.len(), messages.as_array().unwrap().len() + 1);
    assert_eq!(generated[generated.len() - 1]["role"], "assistant");
    // transformers' answer, less the end token its decode would skip.
    let want = case["new_text"]
        .as_str()
        .unwrap()
        .trim_end_matches("<|im_end|>");
    assert_eq!(generated[generated.len() - 1]["content"], want);

    // A text is continued as it is; return_full_text decides whether it is repeated.
    let prompt = "def fibonacci(n):";
    let few = kw(json!({"max_new_tokens": 8}));
    let full = pipe.run(&[json!(prompt)], &few).unwrap();
    let text = full[0][0]["generated_text"].as_str().unwrap();
    assert!(
        text.starts_with(prompt) && text.len() > prompt.len(),
        "{text}"
    );
    let mut new_only = few.clone();
    new_only.insert("return_full_text".into(), json!(false));
    let new = pipe.run(&[json!({"text": prompt})], &new_only).unwrap();
    assert_eq!(
        format!("{prompt}{}", new[0][0]["generated_text"].as_str().unwrap()),
        text
    );

    // Bad arguments name themselves.
    let err = pipe
        .run(
            &[json!(prompt)],
            &kw(json!({"temperature": -1.0, "do_sample": true})),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("temperature"), "{err}");
    let err = pipe.run(&[json!([])], &Map::new()).unwrap_err().to_string();
    assert!(err.contains("at least one message"), "{err}");
    let err = pipe.run(&[json!(3)], &Map::new()).unwrap_err().to_string();
    assert!(err.contains("`text` or `messages`"), "{err}");
}
