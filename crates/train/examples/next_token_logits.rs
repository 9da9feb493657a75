//! Prints a causal LM's next-token logits after each of some plain-text prompts (tokenized
//! without special tokens) — what scripts/check_scratch_in_transformers.py compares with
//! transformers for a model trained from scratch.
//!
//!     cargo build --release -p ferro-train --example next_token_logits
//!     target/release/examples/next_token_logits MODEL "Mr. Fogg" "The steamer" > logits.jsonl
//!
//! Output: a line {"prompt", "input_ids", "logits": [vocab floats at the last position]} per prompt.

use anyhow::{bail, Result};
use ferro_models::{AutoModelForCausalLM, LoadOptions};
use ferro_tokenizers::AutoTokenizer;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, prompts @ ..] = args.as_slice() else {
        bail!("usage: next_token_logits MODEL PROMPT...");
    };
    if prompts.is_empty() {
        bail!("usage: next_token_logits MODEL PROMPT...");
    }
    let lm = AutoModelForCausalLM::from_pretrained(model, &LoadOptions::default())?;
    let tok = AutoTokenizer::from_pretrained(model)?;
    for prompt in prompts {
        let ids = tok.encode(prompt, false)?.ids;
        let input =
            candle_core::Tensor::new(ids.as_slice(), &candle_core::Device::Cpu)?.unsqueeze(0)?;
        let logits: Vec<f32> = lm
            .forward(&input, &mut lm.new_cache(), true)?
            .flatten_all()?
            .to_vec1()?;
        println!(
            "{}",
            serde_json::json!({"prompt": prompt, "input_ids": ids, "logits": logits})
        );
    }
    Ok(())
}
