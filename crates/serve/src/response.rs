//! The bodies OpenAI's API answers with, as its clients parse them: chat completions and
//! their streamed chunks, text completions, the model list, and server-sent-event framing.

use serde::Serialize;

use crate::protocol::{FunctionCall, Role};

/// Token counts of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Why a choice ended, in OpenAI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of sequence or a stop string.
    Stop,
    /// `max_tokens` or the context.
    Length,
    ToolCalls,
}

/// A tool call in an answer (`type` is always `function`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallOut {
    /// Position among the message's calls (streamed deltas carry it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

impl ToolCallOut {
    pub fn function(id: String, name: String, arguments: String) -> Self {
        Self {
            index: None,
            id,
            kind: "function",
            function: FunctionCall { name, arguments },
        }
    }
}

/// One candidate token with its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// A generated token's log-probability and the most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChoiceLogprobs {
    pub content: Vec<TokenLogprob>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssistantMessage {
    pub role: Role,
    /// `null` when the answer is only tool calls.
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    pub logprobs: Option<ChoiceLogprobs>,
    pub finish_reason: FinishReason,
}

/// The body of a chat completion that is not streamed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

impl ChatCompletion {
    pub fn new(
        id: String,
        created: u64,
        model: String,
        choices: Vec<ChatChoice>,
        usage: Usage,
    ) -> Self {
        Self {
            id,
            object: "chat.completion",
            created,
            model,
            choices,
            usage,
        }
    }
}

/// What one streamed chunk adds to a choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChoiceLogprobs>,
    pub finish_reason: Option<FinishReason>,
}

/// One streamed chunk. With `stream_options.include_usage` every chunk carries
/// `"usage": null` and a last chunk with no choices carries the counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "UsageField::is_absent")]
    pub usage: UsageField,
}

/// `usage` of a chunk: absent (usage not asked for), `null`, or the counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum UsageField {
    #[serde(skip)]
    Absent,
    Null(()),
    Counts(Usage),
}

impl UsageField {
    fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }
}

impl ChatCompletionChunk {
    pub fn new(
        id: String,
        created: u64,
        model: String,
        choices: Vec<ChunkChoice>,
        usage: UsageField,
    ) -> Self {
        Self {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            choices,
            usage,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<serde_json::Value>,
    pub finish_reason: Option<FinishReason>,
}

/// The body of a text completion (and, with `object` "text_completion", of its chunks).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl Completion {
    pub fn new(
        id: String,
        created: u64,
        model: String,
        choices: Vec<CompletionChoice>,
        usage: Option<Usage>,
    ) -> Self {
        Self {
            id,
            object: "text_completion",
            created,
            model,
            choices,
            usage,
        }
    }
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: String,
}

impl ModelList {
    pub fn new(models: impl IntoIterator<Item = (String, u64)>) -> Self {
        Self {
            object: "list",
            data: models
                .into_iter()
                .map(|(id, created)| ModelCard {
                    id,
                    object: "model",
                    created,
                    owned_by: "ferroformers".into(),
                })
                .collect(),
        }
    }
}

/// One server-sent event carrying `value` as JSON.
pub fn sse_event<T: Serialize>(value: &T) -> String {
    // Serializing these plain records cannot fail; an error would still be an event.
    let json = serde_json::to_string(value)
        .unwrap_or_else(|e| format!("{{\"error\": {{\"message\": \"{e}\"}}}}"));
    format!("data: {json}\n\n")
}

/// The event that ends a stream.
pub const SSE_DONE: &str = "data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_chat_completion_has_openais_shape() {
        let body = ChatCompletion::new(
            "chatcmpl-1".into(),
            1_700_000_000,
            "qwen".into(),
            vec![
                ChatChoice {
                    index: 0,
                    message: AssistantMessage {
                        role: Role::Assistant,
                        content: Some("Hi".into()),
                        tool_calls: vec![],
                    },
                    logprobs: None,
                    finish_reason: FinishReason::Stop,
                },
                ChatChoice {
                    index: 1,
                    message: AssistantMessage {
                        role: Role::Assistant,
                        content: None,
                        tool_calls: vec![ToolCallOut::function(
                            "call_0".into(),
                            "get_weather".into(),
                            "{\"city\":\"Berlin\"}".into(),
                        )],
                    },
                    logprobs: None,
                    finish_reason: FinishReason::ToolCalls,
                },
            ],
            Usage::new(10, 3),
        );
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000u64,
                "model": "qwen",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "Hi"},
                     "logprobs": null, "finish_reason": "stop"},
                    {"index": 1, "message": {"role": "assistant", "content": null,
                      "tool_calls": [{"id": "call_0", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Berlin\"}"}}]},
                     "logprobs": null, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
            })
        );
    }

    #[test]
    fn chunks_carry_usage_only_when_asked() {
        let delta = |content: &str| ChunkChoice {
            index: 0,
            delta: Delta {
                content: Some(content.into()),
                ..Delta::default()
            },
            logprobs: None,
            finish_reason: None,
        };
        let plain = ChatCompletionChunk::new(
            "c".into(),
            1,
            "m".into(),
            vec![delta("He")],
            UsageField::Absent,
        );
        let v = serde_json::to_value(&plain).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["choices"][0]["delta"], json!({"content": "He"}));
        assert!(v.get("usage").is_none());
        let asked = ChatCompletionChunk::new(
            "c".into(),
            1,
            "m".into(),
            vec![delta("llo")],
            UsageField::Null(()),
        );
        assert_eq!(serde_json::to_value(&asked).unwrap()["usage"], json!(null));
        let last = ChatCompletionChunk::new(
            "c".into(),
            1,
            "m".into(),
            vec![],
            UsageField::Counts(Usage::new(5, 2)),
        );
        let v = serde_json::to_value(&last).unwrap();
        assert_eq!(v["choices"], json!([]));
        assert_eq!(v["usage"]["total_tokens"], 7);
        let event = sse_event(&last);
        assert!(
            event.starts_with("data: {") && event.ends_with("}\n\n"),
            "{event}"
        );
        assert_eq!(SSE_DONE, "data: [DONE]\n\n");
    }

    #[test]
    fn completions_and_model_lists_have_openais_shape() {
        let c = Completion::new(
            "cmpl-1".into(),
            2,
            "m".into(),
            vec![CompletionChoice {
                index: 0,
                text: " world".into(),
                logprobs: None,
                finish_reason: Some(FinishReason::Length),
            }],
            Some(Usage::new(1, 1)),
        );
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        let list = serde_json::to_value(ModelList::new([("qwen".to_string(), 3)])).unwrap();
        assert_eq!(
            list,
            json!({"object": "list", "data": [{"id": "qwen", "object": "model", "created": 3, "owned_by": "ferroformers"}]})
        );
    }
}
