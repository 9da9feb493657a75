//! transformers' `text-generation` pipeline on the causal LMs: a text is continued, a chat
//! (a list of messages) is answered through the model's chat template. Outputs are
//! `[{"generated_text": ...}]`, one record per returned sequence: the prompt and its
//! continuation (or the continuation alone with `return_full_text: false`); for a chat,
//! the messages with the assistant's answer appended.

use std::ops::ControlFlow;

use ferro_generate::{generate_text, GenerationConfig};
use ferro_models::{AutoModelForCausalLM, CausalLm, LoadOptions};
use ferro_tokenizers::{AutoTokenizer, ChatTemplateOptions, Tokenizer};
use serde_json::{json, Value};

use crate::error::{PipelineError, Result};

/// What to generate from.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// A text, continued as it is (no special tokens added, as transformers).
    Text(String),
    /// Messages (`{"role": ..., "content": ...}`), rendered by the chat template.
    Chat(Vec<Value>),
}

pub struct TextGenerationPipeline {
    pub model: CausalLm,
    pub tokenizer: Tokenizer,
}

impl TextGenerationPipeline {
    /// A causal LM (folder, .gguf file or Hub id) and its tokenizer.
    pub fn from_pretrained(model: &str) -> Result<Self> {
        Self::from_pretrained_with(model, &LoadOptions::default())
    }

    /// The same, loaded with `opts` (transformers' `model_kwargs`).
    pub fn from_pretrained_with(model: &str, opts: &LoadOptions) -> Result<Self> {
        Ok(Self {
            tokenizer: AutoTokenizer::from_pretrained(model)?,
            model: AutoModelForCausalLM::from_pretrained(model, opts)?,
        })
    }

    /// The model's generation defaults (its generation_config.json), ending on the
    /// tokenizer's end tokens; `update` it with the call's arguments.
    pub fn generation_config(&self) -> Result<GenerationConfig> {
        let mut cfg = GenerationConfig::from_model(&self.model)?;
        if cfg.eos_token_ids.is_none() && !self.tokenizer.eos_token_ids.is_empty() {
            cfg.eos_token_ids = Some(self.tokenizer.eos_token_ids.clone());
        }
        Ok(cfg)
    }

    /// Generates from `prompt` as `cfg` says; one `{"generated_text": ...}` per sequence.
    pub fn call(
        &self,
        prompt: &Prompt,
        cfg: &GenerationConfig,
        return_full_text: bool,
    ) -> Result<Vec<Value>> {
        cfg.validate()?;
        let ids = match prompt {
            Prompt::Text(text) => self.tokenizer.encode(text, false)?.ids,
            Prompt::Chat(messages) => {
                if messages.is_empty() {
                    return Err(PipelineError::InvalidArgument {
                        param: "inputs",
                        msg: "a chat needs at least one message".into(),
                    });
                }
                let text = self
                    .tokenizer
                    .render_chat(messages, &ChatTemplateOptions::generation_prompt())?;
                self.tokenizer.encode(&text, false)?.ids
            }
        };
        if ids.is_empty() {
            return Err(PipelineError::InvalidArgument {
                param: "inputs",
                msg: "the prompt is empty: there is nothing to continue".into(),
            });
        }
        let out = generate_text(&self.model, &self.tokenizer, &[ids], cfg, &mut |_| {
            ControlFlow::Continue(())
        })?;
        let texts = out.texts.unwrap_or_default();
        Ok(texts
            .into_iter()
            .map(|new| {
                let generated = match (prompt, return_full_text) {
                    (_, false) => Value::String(new),
                    (Prompt::Text(text), true) => Value::String(format!("{text}{new}")),
                    (Prompt::Chat(messages), true) => {
                        let mut all = messages.clone();
                        all.push(json!({"role": "assistant", "content": new}));
                        Value::Array(all)
                    }
                };
                json!({ "generated_text": generated })
            })
            .collect())
    }
}
