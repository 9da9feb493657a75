//! Prints a causal LM's next-token logits for one chat prompt, with a LoRA adapter (PEFT's
//! format) applied — what scripts/check_qwen_adapter_in_peft.py compares with Python peft.
//!
//!     cargo run --release -p ferro-train --example adapter_logits -- MODEL ADAPTER_DIR \
//!         [--dequantize] "Write a Python function to add 3 to a number." > logits.json
//!
//! Output: {"input_ids": [...], "logits": [vocab floats at the last position]}.

use anyhow::{bail, Context, Result};
use ferro_models::{AutoModelForCausalLM, LoadOptions};
use ferro_nn::lora::LoraSpec;
use ferro_tokenizers::{AutoTokenizer, ChatMessage, ChatTemplateOptions};

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let dequantize = args.iter().any(|a| a == "--dequantize");
    args.retain(|a| a != "--dequantize");
    let [model, adapter, prompt] = args.as_slice() else {
        bail!("usage: adapter_logits MODEL ADAPTER_DIR [--dequantize] PROMPT");
    };
    let opts = LoadOptions {
        dequantize,
        lora: Some(LoraSpec::from_pretrained(adapter).context("reading the adapter")?),
        ..LoadOptions::default()
    };
    let lm = AutoModelForCausalLM::from_pretrained(model, &opts)?;
    let tok = AutoTokenizer::from_pretrained(model)?;
    let ids = tok.apply_chat_template(
        &[ChatMessage::user(prompt.clone())],
        &ChatTemplateOptions::generation_prompt(),
    )?;
    let input =
        candle_core::Tensor::new(ids.as_slice(), &candle_core::Device::Cpu)?.unsqueeze(0)?;
    let logits: Vec<f32> = lm
        .forward(&input, &mut lm.new_cache(), true)?
        .flatten_all()?
        .to_vec1()?;
    println!(
        "{}",
        serde_json::json!({"input_ids": ids, "logits": logits})
    );
    Ok(())
}
