//! The bodies of OpenAI's `POST /v1/chat/completions` and `POST /v1/completions`, as the
//! official clients send them, and the error body they expect back.
//!
//! Parsing is strict, as OpenAI's API is: an unknown field, a wrong type or a value out of
//! range is a 400 naming the parameter, never a silent default. A few extensions that
//! vLLM and llama.cpp's server also accept (`top_k`, `min_p`, `repetition_penalty`) are
//! allowed. `temperature: 0` means greedy decoding.

use std::collections::BTreeMap;

use ferro_generate::config::GenerationConfig;
use serde::{Deserialize, Serialize};

/// An error as OpenAI's API returns it: an HTTP status and
/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, …
    pub kind: &'static str,
    /// The request parameter at fault, where there is one.
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: None,
        }
    }

    /// A 400 about the body as a whole (not JSON, not UTF-8).
    pub fn bad_body(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.param {
            Some(p) => write!(f, "{} ({}): {}", self.status, p, self.message),
            None => write!(f, "{}: {}", self.status, self.message),
        }
    }
}

impl std::error::Error for ApiError {}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// OpenAI's newer name for `system`.
    Developer,
    System,
    User,
    Assistant,
    Tool,
}

/// A message's content: a string, or parts of which only text is supported.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// A tool call an assistant message made (sent back in later turns).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as OpenAI sends it.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// The text of the content (parts joined), empty when there is none.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

/// `stop`: one string or up to four.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// A tool offered to the model: a function with a JSON-schema of its parameters.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub json_schema: Option<serde_json::Value>,
}

/// The sampling parameters both routes share (their names: `SAMPLING_FIELDS`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub stop: Option<Stop>,
    pub seed: Option<u64>,
    pub n: Option<u32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Token id (as a string) → bias added to its logit, in [-100, 100].
    pub logit_bias: Option<BTreeMap<String, f32>>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    /// Extensions (vLLM, llama.cpp's server).
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
}

/// `Sampling`'s fields: serde's `deny_unknown_fields` does not work through `flatten`, so
/// the top-level keys of a body are checked against these lists by hand.
const SAMPLING_FIELDS: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "stream",
    "stream_options",
    "user",
    "top_k",
    "min_p",
    "repetition_penalty",
];

const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
];

const COMPLETION_FIELDS: &[&str] = &["model", "prompt", "logprobs", "echo"];

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub tool_choice: Option<serde_json::Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `prompt`: a string or several (each a choice of its own).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    /// Log-probabilities of this many top tokens per position (0..=5).
    #[serde(default)]
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// A body as `T`: a 400 when it is not UTF-8, not a JSON object, has a key outside
/// `fields` and `SAMPLING_FIELDS`, or a value of the wrong type (named where serde names it).
fn parse<T: serde::de::DeserializeOwned>(body: &[u8], fields: &[&str]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_body(format!(
            "the request body is not valid UTF-8 (byte {})",
            e.valid_up_to()
        ))
    })?;
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_body(format!("the request body is not JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::bad_body("the request body must be a JSON object"));
    };
    if let Some(key) = object
        .keys()
        .find(|k| !fields.contains(&k.as_str()) && !SAMPLING_FIELDS.contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            key.clone(),
            format!("unrecognized request argument supplied: `{key}`"),
        ));
    }
    serde_json::from_value::<T>(value.clone()).map_err(|e| {
        let msg = e.to_string();
        // serde names a missing field in its message: pass it on as `param`. A wrong type
        // in an optional field is found by leaving out one top-level key at a time: the
        // key whose absence ends the error is at fault.
        let missing = msg
            .split("missing field `")
            .nth(1)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string);
        let param = missing.or_else(|| {
            object.keys().find_map(|k| {
                let mut without = object.clone();
                without.remove(k);
                serde_json::from_value::<T>(serde_json::Value::Object(without))
                    .is_ok()
                    .then(|| k.clone())
            })
        });
        let mut err = ApiError::bad_body(format!("invalid request body: {msg}"));
        err.param = param;
        err
    })
}

impl ChatCompletionRequest {
    /// Parses and checks a body.
    pub fn from_body(body: &[u8]) -> Result<Self, ApiError> {
        let req: Self = parse(body, CHAT_FIELDS)?;
        req.check()?;
        Ok(req)
    }

    fn check(&self) -> Result<(), ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "`messages` must not be empty",
            ));
        }
        for (i, m) in self.messages.iter().enumerate() {
            if m.role == Role::Tool && m.tool_call_id.is_none() {
                return Err(ApiError::invalid(
                    format!("messages[{i}].tool_call_id"),
                    "a `tool` message needs the `tool_call_id` it answers",
                ));
            }
            if let Some(Content::Parts(parts)) = &m.content {
                if let Some(p) = parts.iter().find(|p| p.kind != "text" || p.text.is_none()) {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].content"),
                        format!("only text content parts are supported, not `{}`", p.kind),
                    ));
                }
            }
        }
        self.sampling.check()?;
        if let Some(k) = self.top_logprobs {
            if k > 20 {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "must be between 0 and 20",
                ));
            }
            if self.logprobs != Some(true) {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "`top_logprobs` needs `logprobs: true`",
                ));
            }
        }
        if self.max_completion_tokens == Some(0) {
            return Err(ApiError::invalid(
                "max_completion_tokens",
                "must be at least 1",
            ));
        }
        if let Some(f) = &self.response_format {
            match f.kind.as_str() {
                "text" => {}
                "json_object" | "json_schema" => {
                    return Err(ApiError::invalid(
                        "response_format",
                        format!(
                            "`{}` needs constrained decoding, which this server does not do yet",
                            f.kind
                        ),
                    ))
                }
                other => {
                    return Err(ApiError::invalid(
                        "response_format",
                        format!("unknown type `{other}` (text, json_object or json_schema)"),
                    ))
                }
            }
        }
        if let Some(tools) = &self.tools {
            if let Some(i) = tools.iter().position(|t| t.kind != "function") {
                return Err(ApiError::invalid(
                    format!("tools[{i}].type"),
                    "only `function` tools are supported",
                ));
            }
        }
        Ok(())
    }

    /// The generation settings: the model's `defaults` with what the request sets.
    /// `max_completion_tokens` wins over the older `max_tokens`.
    pub fn generation_config(&self, defaults: &GenerationConfig) -> GenerationConfig {
        let mut cfg = self.sampling.apply(defaults);
        if let Some(m) = self.max_completion_tokens {
            cfg.max_new_tokens = m as usize;
        }
        if self.logprobs == Some(true) {
            cfg.top_logprobs = Some(self.top_logprobs.unwrap_or(0) as usize);
        }
        cfg
    }

    pub fn stream(&self) -> bool {
        self.sampling.stream == Some(true)
    }
}

impl CompletionRequest {
    /// Parses and checks a body.
    pub fn from_body(body: &[u8]) -> Result<Self, ApiError> {
        let req: Self = parse(body, COMPLETION_FIELDS)?;
        if let Prompt::Many(p) = &req.prompt {
            if p.is_empty() {
                return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
            }
        }
        if req.logprobs.is_some_and(|k| k > 5) {
            return Err(ApiError::invalid("logprobs", "must be between 0 and 5"));
        }
        req.sampling.check()?;
        Ok(req)
    }

    /// The generation settings: the model's `defaults` with what the request sets.
    pub fn generation_config(&self, defaults: &GenerationConfig) -> GenerationConfig {
        let mut cfg = self.sampling.apply(defaults);
        if let Some(k) = self.logprobs {
            cfg.top_logprobs = Some(k as usize);
        }
        cfg
    }

    /// The prompts, one choice (or `n`) each.
    pub fn prompts(&self) -> Vec<&str> {
        match &self.prompt {
            Prompt::One(p) => vec![p.as_str()],
            Prompt::Many(ps) => ps.iter().map(String::as_str).collect(),
        }
    }
}

/// `value` within `lo..=hi`, or a 400 naming `param`.
fn within(param: &str, value: Option<f32>, lo: f32, hi: f32) -> Result<(), ApiError> {
    match value {
        Some(v) if !(lo..=hi).contains(&v) => Err(ApiError::invalid(
            param,
            format!("must be between {lo} and {hi}, got {v}"),
        )),
        _ => Ok(()),
    }
}

impl Sampling {
    fn check(&self) -> Result<(), ApiError> {
        within("temperature", self.temperature, 0.0, 2.0)?;
        within("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        within("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        within("min_p", self.min_p, 0.0, 1.0)?;
        if self.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return Err(ApiError::invalid("top_p", "must be in (0, 1]"));
        }
        if self
            .repetition_penalty
            .is_some_and(|p| !(p > 0.0 && p.is_finite()))
        {
            return Err(ApiError::invalid("repetition_penalty", "must be positive"));
        }
        if self.n.is_some_and(|n| !(1..=128).contains(&n)) {
            return Err(ApiError::invalid("n", "must be between 1 and 128"));
        }
        if self.max_tokens == Some(0) {
            return Err(ApiError::invalid("max_tokens", "must be at least 1"));
        }
        if let Some(Stop::Many(s)) = &self.stop {
            if s.len() > 4 {
                return Err(ApiError::invalid("stop", "at most 4 stop sequences"));
            }
        }
        if self.stop_strings().iter().any(String::is_empty) {
            return Err(ApiError::invalid(
                "stop",
                "stop sequences must not be empty",
            ));
        }
        if self.stream_options.is_some() && self.stream != Some(true) {
            return Err(ApiError::invalid(
                "stream_options",
                "`stream_options` is only allowed with `stream: true`",
            ));
        }
        for (token, bias) in self.logit_bias.iter().flatten() {
            if token.parse::<u32>().is_err() {
                return Err(ApiError::invalid(
                    "logit_bias",
                    format!("keys are token ids, not `{token}`"),
                ));
            }
            if !(-100.0..=100.0).contains(bias) {
                return Err(ApiError::invalid(
                    "logit_bias",
                    format!("bias of token {token} must be between -100 and 100, got {bias}"),
                ));
            }
        }
        Ok(())
    }

    fn stop_strings(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(s)) => s.clone(),
        }
    }

    /// `defaults` with what the request sets (checked already).
    fn apply(&self, defaults: &GenerationConfig) -> GenerationConfig {
        let mut cfg = defaults.clone();
        if let Some(t) = self.temperature {
            // OpenAI's temperature 0 is greedy decoding.
            cfg.do_sample = t > 0.0;
            if t > 0.0 {
                cfg.temperature = t;
            }
        }
        if let Some(p) = self.top_p {
            cfg.top_p = p;
        }
        if let Some(k) = self.top_k {
            cfg.top_k = k as usize;
        }
        if let Some(p) = self.min_p {
            cfg.min_p = p;
        }
        if let Some(p) = self.repetition_penalty {
            cfg.repetition_penalty = p;
        }
        if let Some(m) = self.max_tokens {
            cfg.max_new_tokens = m as usize;
        }
        if let Some(s) = self.seed {
            cfg.seed = s;
        }
        if let Some(n) = self.n {
            cfg.num_return_sequences = n as usize;
        }
        if let Some(p) = self.presence_penalty {
            cfg.presence_penalty = p;
        }
        if let Some(p) = self.frequency_penalty {
            cfg.frequency_penalty = p;
        }
        cfg.stop_strings = self.stop_strings();
        if let Some(bias) = &self.logit_bias {
            cfg.sequence_bias = bias
                .iter()
                .filter_map(|(t, b)| Some((vec![t.parse().ok()?], *b)))
                .collect();
        }
        cfg
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn chat(body: &str) -> Result<ChatCompletionRequest, ApiError> {
        ChatCompletionRequest::from_body(body.as_bytes())
    }

    /// What the `openai` Python client sends for a streamed chat with tools and logprobs.
    #[test]
    fn a_full_client_request_parses_into_settings() {
        let req = chat(
            r#"{"model": "qwen", "messages": [
                 {"role": "system", "content": "Be brief."},
                 {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Berlin?"}]},
                 {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Berlin\"}"}}]},
                 {"role": "tool", "tool_call_id": "call_1", "content": "21 C"}],
               "temperature": 0.7, "top_p": 0.9, "max_tokens": 50, "max_completion_tokens": 40,
               "stop": ["\n\n", "END"], "seed": 7, "n": 2, "presence_penalty": 0.5,
               "frequency_penalty": -0.5, "logit_bias": {"1234": -100, "99": 5.5},
               "logprobs": true, "top_logprobs": 3, "stream": true,
               "stream_options": {"include_usage": true},
               "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
               "tool_choice": "auto", "response_format": {"type": "text"}, "user": "u1"}"#,
        )
        .unwrap();
        assert_eq!(req.messages[1].text(), "Weather in Berlin?");
        assert_eq!(
            req.messages[2].tool_calls.as_ref().unwrap()[0]
                .function
                .name,
            "get_weather"
        );
        assert!(req.stream());
        let cfg = req.generation_config(&GenerationConfig::default());
        assert!(cfg.do_sample);
        assert_eq!(cfg.temperature, 0.7);
        assert_eq!(cfg.top_p, 0.9);
        assert_eq!(cfg.max_new_tokens, 40, "max_completion_tokens wins");
        assert_eq!(cfg.stop_strings, ["\n\n", "END"]);
        assert_eq!((cfg.seed, cfg.num_return_sequences), (7, 2));
        assert_eq!((cfg.presence_penalty, cfg.frequency_penalty), (0.5, -0.5));
        assert_eq!(
            cfg.sequence_bias,
            vec![(vec![1234], -100.0), (vec![99], 5.5)]
        );
        assert_eq!(cfg.top_logprobs, Some(3));
    }

    #[test]
    fn temperature_zero_is_greedy() {
        let defaults = GenerationConfig {
            do_sample: true,
            temperature: 0.8,
            ..GenerationConfig::default()
        };
        let req = chat(
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}"#,
        )
        .unwrap();
        let cfg = req.generation_config(&defaults);
        assert!(!cfg.do_sample);
        // Unset parameters keep the model's defaults.
        let req =
            chat(r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#).unwrap();
        assert_eq!(req.generation_config(&defaults), defaults);
    }

    /// Each bad request is a 400 naming the parameter at fault.
    #[test]
    fn bad_parameters_are_400s_naming_them() {
        let user = r#""messages": [{"role": "user", "content": "hi"}]"#;
        let cases = [
            (format!(r#"{{"model": "m", {user}, "temperature": 3}}"#), Some("temperature")),
            (format!(r#"{{"model": "m", {user}, "temperature": "hot"}}"#), Some("temperature")),
            (format!(r#"{{"model": "m", {user}, "top_p": 0}}"#), Some("top_p")),
            (format!(r#"{{"model": "m", {user}, "n": 0}}"#), Some("n")),
            (format!(r#"{{"model": "m", {user}, "max_tokens": 0}}"#), Some("max_tokens")),
            (format!(r#"{{"model": "m", {user}, "max_tokens": -5}}"#), Some("max_tokens")),
            (format!(r#"{{"model": "m", {user}, "presence_penalty": 2.5}}"#), Some("presence_penalty")),
            (format!(r#"{{"model": "m", {user}, "stop": ["a","b","c","d","e"]}}"#), Some("stop")),
            (format!(r#"{{"model": "m", {user}, "stop": ""}}"#), Some("stop")),
            (format!(r#"{{"model": "m", {user}, "logit_bias": {{"x": 1}}}}"#), Some("logit_bias")),
            (format!(r#"{{"model": "m", {user}, "logit_bias": {{"5": 101}}}}"#), Some("logit_bias")),
            (format!(r#"{{"model": "m", {user}, "top_logprobs": 3}}"#), Some("top_logprobs")),
            (format!(r#"{{"model": "m", {user}, "logprobs": true, "top_logprobs": 21}}"#), Some("top_logprobs")),
            (format!(r#"{{"model": "m", {user}, "stream_options": {{"include_usage": true}}}}"#), Some("stream_options")),
            (format!(r#"{{"model": "m", {user}, "response_format": {{"type": "json_object"}}}}"#), Some("response_format")),
            (format!(r#"{{"model": "m", {user}, "tools": [{{"type": "retrieval", "function": {{}}}}]}}"#), Some("tools[0].type")),
            (format!(r#"{{"model": "m", {user}, "best_of": 3}}"#), Some("best_of")),
            (r#"{"model": "m", "messages": []}"#.to_string(), Some("messages")),
            (r#"{"messages": [{"role": "user", "content": "hi"}]}"#.to_string(), Some("model")),
            (r#"{"model": "m", "messages": [{"role": "robot", "content": "hi"}]}"#.to_string(), None),
            (r#"{"model": "m", "messages": [{"role": "tool", "content": "21 C"}]}"#.to_string(), Some("messages[0].tool_call_id")),
            (r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "text": null}]}]}"#.to_string(), Some("messages[0].content")),
            (r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image", "text": "x"}]}]}"#.to_string(), Some("messages[0].content")),
            (r#"{"model": "m", "messages": "#.to_string(), None),
            ("[]".to_string(), None),
        ];
        for (body, param) in cases {
            let err = chat(&body).expect_err(&body);
            assert_eq!(err.status, 400, "{body}");
            assert_eq!(err.param.as_deref(), param, "{body}: {err}");
            let json = err.body();
            assert_eq!(json["error"]["type"], "invalid_request_error");
            assert!(!json["error"]["message"].as_str().unwrap().is_empty());
        }
    }

    /// 1,000 random and mutated bodies: each parses or is a 400, none panics; then a
    /// normal body still parses.
    #[test]
    fn mutated_bodies_are_400s_or_valid() {
        let good = br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "stop": ["x"], "logit_bias": {"3": 1}, "n": 2}"#;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        let pieces: [&[u8]; 10] = [
            b"\xff\xfe",
            b"null",
            b"[[[[[[[[[[",
            b"}",
            b"\"",
            b"1e999",
            b"-0",
            b"\\u0000",
            b"{\"n\":",
            b"true",
        ];
        let (mut ok, mut rejected) = (0, 0);
        for _ in 0..1000 {
            let mut body = good.to_vec();
            for _ in 0..1 + next(4) {
                let at = next(body.len());
                match next(4) {
                    0 => {
                        let end = (at + next(8)).min(body.len());
                        body.drain(at..end);
                    }
                    1 => body
                        .splice(at..at, pieces[next(pieces.len())].iter().copied())
                        .for_each(drop),
                    2 if at < body.len() => body[at] = next(256) as u8,
                    _ => body.truncate(at),
                }
            }
            match ChatCompletionRequest::from_body(&body) {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert_eq!(e.status, 400, "{}", String::from_utf8_lossy(&body));
                    rejected += 1;
                }
            }
        }
        assert!(rejected > 900, "{ok} parsed, {rejected} rejected");
        assert!(ChatCompletionRequest::from_body(good).is_ok());
        // Nesting deeper than serde_json's recursion limit is an error, not a stack overflow.
        let deep = format!(
            "{{\"model\": \"m\", \"messages\": {}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            ChatCompletionRequest::from_body(deep.as_bytes())
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn a_body_that_is_not_utf8_is_a_400() {
        let err = ChatCompletionRequest::from_body(b"{\"model\": \"\xff\"}").unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("UTF-8"), "{err}");
    }

    #[test]
    fn completions_take_one_prompt_or_several() {
        let req = CompletionRequest::from_body(
            br#"{"model": "m", "prompt": ["a", "b"], "max_tokens": 5, "logprobs": 2, "echo": false}"#,
        )
        .unwrap();
        assert_eq!(req.prompts(), ["a", "b"]);
        let cfg = req.generation_config(&GenerationConfig::default());
        assert_eq!((cfg.max_new_tokens, cfg.top_logprobs), (5, Some(2)));
        let one = CompletionRequest::from_body(br#"{"model": "m", "prompt": "x"}"#).unwrap();
        assert_eq!(one.prompts(), ["x"]);
        for bad in [
            &br#"{"model": "m", "prompt": []}"#[..],
            br#"{"model": "m", "prompt": "x", "logprobs": 6}"#,
            br#"{"model": "m", "prompt": "x", "temperature": -1}"#,
            br#"{"model": "m", "prompt": "x", "suffix_tokens": 1}"#,
        ] {
            let err = CompletionRequest::from_body(bad).unwrap_err();
            assert_eq!(err.status, 400);
        }
    }
}
