//! Function calling: offer the model a tool, parse the call it makes, run the tool, give
//! the result back and print the model's final answer (transformers' tool-use recipe).
//!
//!     cargo run --release -p ferroformers --example tool_calling [-- MODEL [QUESTION]]
//!
//! By default the packaged Qwen2.5-Coder-0.5B-Instruct GGUF (set FERRO_DEQUANTIZE=1 to run
//! it dequantized, as transformers does) and "What's the weather like in Berlin right now?".

use std::ops::ControlFlow;

use ferroformers::core::PackagedModel;
use ferroformers::generate::{generate_text, parse_tool_calls};
use ferroformers::prelude::*;
use serde_json::{json, Value};

/// The tool: a stand-in weather service with a fixed answer.
fn get_weather(city: &str) -> Value {
    json!({"city": city, "temperature_c": 14, "condition": "partly cloudy"})
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model_name = match args.next() {
        Some(m) => m,
        None => PackagedModel::Qwen25Coder05BInstruct
            .require()?
            .display()
            .to_string(),
    };
    let question = args
        .next()
        .unwrap_or_else(|| "What's the weather like in Berlin right now?".into());

    let tokenizer = AutoTokenizer::from_pretrained(&model_name)?;
    let opts = LoadOptions {
        dequantize: std::env::var_os("FERRO_DEQUANTIZE").is_some(),
        ..LoadOptions::default()
    };
    let model = AutoModelForCausalLM::from_pretrained(&model_name, &opts)?;

    let tools = vec![json!({
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city's name"}},
                "required": ["city"]
            }
        }
    })];
    let template = ChatTemplateOptions {
        tools: Some(tools),
        ..ChatTemplateOptions::generation_prompt()
    };
    let cfg = GenerationConfig {
        max_new_tokens: 128,
        ..Default::default()
    };
    let reply = |messages: &[ChatMessage]| -> Result<String, Box<dyn std::error::Error>> {
        let inputs = tokenizer.apply_chat_template(messages, &template)?;
        let out = generate_text(&model, &tokenizer, &[inputs], &cfg, &mut |_| {
            ControlFlow::Continue(())
        })?;
        Ok(out
            .texts
            .and_then(|t| t.into_iter().next())
            .unwrap_or_default())
    };

    let mut messages = vec![ChatMessage::user(question)];
    let first = reply(&messages)?;
    println!("model: {first}");
    let parsed = parse_tool_calls(&first, true);
    if parsed.tool_calls.is_empty() {
        println!("answer: {}", parsed.content);
        return Ok(());
    }
    messages.push(ChatMessage::assistant_tool_calls(
        Some(parsed.content.clone()).filter(|c| !c.is_empty()),
        parsed
            .tool_calls
            .iter()
            .map(|c| c.to_message_value())
            .collect(),
    ));
    for call in &parsed.tool_calls {
        println!("tool call: {} {}", call.name, call.arguments);
        let result = match (call.name.as_str(), call.arguments["city"].as_str()) {
            ("get_weather", Some(city)) => get_weather(city),
            _ => json!({"error": format!("unknown tool or arguments: {}", call.name)}),
        };
        println!("tool result: {result}");
        messages.push(ChatMessage::tool(result.to_string()));
    }
    println!("answer: {}", reply(&messages)?);
    Ok(())
}
