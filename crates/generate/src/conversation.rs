//! A conversation kept within a token budget: the system message, then user and
//! assistant turns; when the rendered prompt would not leave room for the answer, the
//! oldest exchanges are dropped first (the system message always stays).

use ferro_tokenizers::{ChatMessage, ChatTemplateOptions, Tokenizer};
use serde_json::Value;

use crate::error::{GenerateError, Result};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversation {
    pub system: Option<String>,
    /// User, assistant (and tool) messages, oldest first.
    pub messages: Vec<ChatMessage>,
}

/// The prompt of the next answer, and how many old messages had to go to fit it.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedPrompt {
    pub input_ids: Vec<u32>,
    pub dropped_messages: usize,
}

impl Conversation {
    pub fn new(system: Option<String>) -> Self {
        Self {
            system,
            messages: Vec::new(),
        }
    }

    /// System message (if any) followed by the turns: what the chat template renders.
    pub fn all_messages(&self) -> Vec<ChatMessage> {
        self.system
            .iter()
            .map(|s| ChatMessage::system(s.clone()))
            .chain(self.messages.iter().cloned())
            .collect()
    }

    /// Forgets the turns; keeps the system message.
    pub fn reset(&mut self) {
        self.messages.clear();
    }

    /// The prompt for answering the last message, dropping the oldest exchanges (up to the
    /// next user message) until it and `answer_tokens` fit in `budget` tokens.
    pub fn fit(
        &mut self,
        tokenizer: &Tokenizer,
        opts: &ChatTemplateOptions,
        budget: usize,
        answer_tokens: usize,
    ) -> Result<FittedPrompt> {
        let mut dropped = 0;
        loop {
            let ids = tokenizer.apply_chat_template(&self.all_messages(), opts)?;
            if ids.len() + answer_tokens <= budget {
                return Ok(FittedPrompt {
                    input_ids: ids,
                    dropped_messages: dropped,
                });
            }
            // The oldest exchange: its first message up to (not including) the next user
            // message; never the last user message itself.
            let last_user = self
                .messages
                .iter()
                .rposition(|m| m.role == "user")
                .unwrap_or(0);
            let next_user = self
                .messages
                .iter()
                .skip(1)
                .position(|m| m.role == "user")
                .map(|p| p + 1)
                .filter(|&p| p <= last_user);
            match next_user {
                Some(end) => {
                    self.messages.drain(..end);
                    dropped += end;
                }
                None => {
                    return Err(GenerateError::InvalidArgument {
                        param: "messages",
                        msg: format!(
                            "the prompt takes {} tokens even without earlier turns; with {answer_tokens} tokens for the answer it does not fit the context of {budget}",
                            ids.len()
                        ),
                    })
                }
            }
        }
    }

    /// The messages as a JSON array (the `messages` format of transformers and OpenAI).
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.all_messages()
                .iter()
                .map(|m| serde_json::to_value(m).unwrap_or(Value::Null))
                .collect(),
        )
    }

    /// A conversation from a JSON array of messages; a leading system message becomes the
    /// system prompt.
    pub fn from_json(v: &Value) -> Result<Self> {
        let bad = |msg: String| GenerateError::InvalidArgument {
            param: "messages",
            msg,
        };
        let items = v
            .as_array()
            .ok_or_else(|| bad("must be a JSON array of messages".into()))?;
        ferro_tokenizers::chat_template::validate_messages(items)?;
        let mut messages: Vec<ChatMessage> = items
            .iter()
            .map(|m| serde_json::from_value(m.clone()).map_err(|e| bad(e.to_string())))
            .collect::<Result<_>>()?;
        let system = match messages.first() {
            Some(m) if m.role == "system" => {
                let s = m.content.as_str().map(str::to_string);
                messages.remove(0);
                s
            }
            _ => None,
        };
        Ok(Self { system, messages })
    }
}
