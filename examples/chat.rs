//! transformers' best-known program, in Rust: load a chat model and its tokenizer, apply the
//! chat template to "Who are you?", generate 40 tokens, print only the new text.
//!
//!     cargo run --release -p ferroformers --example chat [-- MODEL]
//!
//! MODEL is a folder, a .gguf file or a Hub id (`Qwen/Qwen2.5-7B-Instruct` in transformers'
//! docs); by default the packaged Qwen2.5-Coder-0.5B-Instruct GGUF.

use ferroformers::core::PackagedModel;
use ferroformers::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model_name = match std::env::args().nth(1) {
        Some(m) => m,
        None => PackagedModel::Qwen25Coder05BInstruct
            .require()?
            .display()
            .to_string(),
    };

    let tokenizer = AutoTokenizer::from_pretrained(&model_name)?;
    let model = AutoModelForCausalLM::from_pretrained(&model_name, &LoadOptions::default())?;

    let messages = [ChatMessage::user("Who are you?")];
    let inputs =
        tokenizer.apply_chat_template(&messages, &ChatTemplateOptions::generation_prompt())?;
    let output = model.generate(
        &inputs,
        &GenerationConfig {
            max_new_tokens: 40,
            ..Default::default()
        },
    )?;
    println!("{}", tokenizer.decode(output.new_tokens(0), true)?);
    Ok(())
}
