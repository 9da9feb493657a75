//! `POST /v1/chat/completions`: messages through the model's chat template, tools offered
//! to it and its tool calls parsed back, answered whole or streamed as server-sent events.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferro_engine::{Event, ResponseStream};
use ferro_generate::parse_tool_calls;
use ferro_tokenizers::ChatTemplateOptions;
use serde_json::{json, Value};

use crate::engine_io::{self, finish_reason, logprob_out, Choice};
use crate::protocol::{ApiError, ChatCompletionRequest, Role};
use crate::response::{
    sse_event, AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChoiceLogprobs,
    ChunkChoice, Delta, FinishReason, ToolCallOut, Usage, UsageField, SSE_DONE,
};
use crate::server::{json_response, now_secs, read_body, request_id, Shared};

/// What `tool_choice` asks for.
enum ToolChoice {
    /// Tools are offered; the model decides (`auto`, or no `tool_choice`).
    Auto,
    /// Tools are not shown to the model (`none`).
    Off,
    /// The model must call a tool (`required`), or this one.
    Forced(Option<String>),
}

fn tool_choice(req: &ChatCompletionRequest) -> Result<ToolChoice, ApiError> {
    let bad = || {
        ApiError::invalid(
            "tool_choice",
            "must be `none`, `auto`, `required` or {\"type\": \"function\", \"function\": {\"name\": ...}}",
        )
    };
    Ok(match &req.tool_choice {
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::Off,
            "required" => ToolChoice::Forced(None),
            _ => return Err(bad()),
        },
        Some(v) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(bad)?;
            let offered = req
                .tools
                .iter()
                .flatten()
                .any(|t| t.function.get("name").and_then(Value::as_str) == Some(name));
            if !offered {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("the function `{name}` is not among `tools`"),
                ));
            }
            ToolChoice::Forced(Some(name.to_string()))
        }
    })
}

/// The messages as the chat template reads them (transformers' format: tool-call
/// arguments as objects).
fn template_messages(req: &ChatCompletionRequest) -> Result<Vec<Value>, ApiError> {
    req.messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role {
                Role::Developer | Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            };
            let mut v = json!({"role": role, "content": m.text()});
            if let Some(calls) = &m.tool_calls {
                let calls = calls
                    .iter()
                    .enumerate()
                    .map(|(j, c)| {
                        let args: Value =
                            serde_json::from_str(&c.function.arguments).map_err(|e| {
                                ApiError::invalid(
                                    format!("messages[{i}].tool_calls[{j}].function.arguments"),
                                    format!("not JSON: {e}"),
                                )
                            })?;
                        Ok(json!({"id": c.id, "type": "function",
                                  "function": {"name": c.function.name, "arguments": args}}))
                    })
                    .collect::<Result<Vec<_>, ApiError>>()?;
                v["tool_calls"] = Value::Array(calls);
            }
            if let Some(id) = &m.tool_call_id {
                v["tool_call_id"] = json!(id);
            }
            if let Some(name) = &m.name {
                v["name"] = json!(name);
            }
            Ok(v)
        })
        .collect()
}

/// The prompt's tokens, and the text the answer is forced to start with (a tool call's
/// opening, when `tool_choice` demands a call and the template writes calls as
/// `<tool_call>` blocks).
fn prompt(
    state: &Shared,
    req: &ChatCompletionRequest,
    choice: &ToolChoice,
) -> Result<(Vec<u32>, String), ApiError> {
    let messages = template_messages(req)?;
    let tools: Option<Vec<Value>> = match choice {
        ToolChoice::Off => None,
        ToolChoice::Forced(Some(name)) => req.tools.as_ref().map(|ts| {
            ts.iter()
                .filter(|t| t.function.get("name").and_then(Value::as_str) == Some(name))
                .map(|t| json!({"type": "function", "function": t.function}))
                .collect()
        }),
        _ => req.tools.as_ref().map(|ts| {
            ts.iter()
                .map(|t| json!({"type": "function", "function": t.function}))
                .collect()
        }),
    };
    let opts = ChatTemplateOptions {
        tools: tools.filter(|t| !t.is_empty()),
        ..ChatTemplateOptions::generation_prompt()
    };
    let text = state
        .tokenizer
        .render_chat(&messages, &opts)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let forced = match choice {
        ToolChoice::Forced(name) if opts.tools.is_some() && text.contains("<tool_call>") => {
            match name {
                Some(n) => format!("<tool_call>\n{{\"name\": {}, \"arguments\": ", json!(n)),
                None => "<tool_call>\n".to_string(),
            }
        }
        _ => String::new(),
    };
    let ids = state
        .tokenizer
        .encode(&format!("{text}{forced}"), false)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?
        .ids;
    Ok((ids, forced))
}

pub(crate) async fn chat_completions(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(state, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(state: Shared, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = read_body(&state, body).await?;
    let req = ChatCompletionRequest::from_body(&body)?;
    state.check_model(&req.model)?;
    let choice = tool_choice(&req)?;
    let tools_offered =
        req.tools.as_ref().is_some_and(|t| !t.is_empty()) && !matches!(choice, ToolChoice::Off);
    let (ids, forced) = prompt(&state, &req, &choice)?;
    let config = req.generation_config(&state.defaults);
    let n = config.num_return_sequences;
    let want_logprobs = config.top_logprobs.is_some();
    let id = state.new_id("chatcmpl");
    tracing::debug!(request_id = %request_id(&headers), completion = %id, prompt_tokens = ids.len(), "chat");
    let prompt_tokens = ids.len();
    let stream = engine_io::submit(&state.engine, &id, ids, config, "messages")?;
    let answer = Answer {
        id,
        created: now_secs(),
        model: state.config.model_id.clone(),
        forced,
        tools_offered,
    };
    if req.stream() {
        let include_usage = req
            .sampling
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        return Ok(stream_response(
            state,
            stream,
            answer,
            n,
            prompt_tokens,
            include_usage,
            want_logprobs,
        ));
    }
    let choices = engine_io::collect(stream, n).await?;
    let completion_tokens = choices.iter().map(|c| c.tokens).sum();
    let choices = choices
        .into_iter()
        .enumerate()
        .map(|(index, c)| {
            let logprobs = want_logprobs.then(|| ChoiceLogprobs {
                content: c
                    .logprobs
                    .iter()
                    .map(|lp| logprob_out(&state.tokenizer, lp))
                    .collect(),
            });
            let (message, finish) = answer.message(&c);
            ChatChoice {
                index,
                message,
                logprobs,
                finish_reason: finish,
            }
        })
        .collect();
    let body = ChatCompletion::new(
        answer.id,
        answer.created,
        answer.model,
        choices,
        Usage::new(prompt_tokens, completion_tokens),
    );
    Ok(json_response(StatusCode::OK, &body))
}

/// What every choice of one answer shares.
struct Answer {
    id: String,
    created: u64,
    model: String,
    /// Text the answer was forced to start with (part of the reply, not generated).
    forced: String,
    tools_offered: bool,
}

impl Answer {
    /// A finished choice as an assistant message: its text, or the tool calls in it.
    fn message(&self, c: &Choice) -> (AssistantMessage, FinishReason) {
        let reason = c
            .finish
            .as_ref()
            .map_or(FinishReason::Length, finish_reason);
        let text = format!("{}{}", self.forced, c.text);
        if self.tools_offered {
            let parsed = parse_tool_calls(&text, true);
            if !parsed.tool_calls.is_empty() {
                let calls = parsed
                    .tool_calls
                    .iter()
                    .enumerate()
                    .map(|(i, call)| {
                        ToolCallOut::function(
                            format!("call_{}_{i}", self.id),
                            call.name.clone(),
                            call.arguments.to_string(),
                        )
                    })
                    .collect();
                let content = (!parsed.content.is_empty()).then_some(parsed.content);
                return (
                    AssistantMessage {
                        role: Role::Assistant,
                        content,
                        tool_calls: calls,
                    },
                    FinishReason::ToolCalls,
                );
            }
        }
        (
            AssistantMessage {
                role: Role::Assistant,
                content: Some(text),
                tool_calls: Vec::new(),
            },
            reason,
        )
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: UsageField) -> String {
        sse_event(&ChatCompletionChunk::new(
            self.id.clone(),
            self.created,
            self.model.clone(),
            choices,
            usage,
        ))
    }
}

/// The state of a streamed answer: events in, server-sent events out.
struct ChatStream {
    state: Shared,
    events: ResponseStream,
    answer: Answer,
    out: VecDeque<String>,
    /// Per choice: text gathered (tools offered: sent whole at the end), tokens, done.
    choices: Vec<Choice>,
    prompt_tokens: usize,
    include_usage: bool,
    want_logprobs: bool,
    done: bool,
}

impl ChatStream {
    fn usage_field(&self) -> UsageField {
        if self.include_usage {
            UsageField::Null(())
        } else {
            UsageField::Absent
        }
    }

    fn push_choice(
        &mut self,
        index: usize,
        delta: Delta,
        logprobs: Option<ChoiceLogprobs>,
        finish: Option<FinishReason>,
    ) {
        let chunk = self.answer.chunk(
            vec![ChunkChoice {
                index,
                delta,
                logprobs,
                finish_reason: finish,
            }],
            self.usage_field(),
        );
        self.out.push_back(chunk);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Token {
                seq, text, logprob, ..
            } => {
                let Some(c) = self.choices.get_mut(seq) else {
                    return;
                };
                c.tokens += 1;
                if self.answer.tools_offered {
                    c.text.push_str(&text);
                    return;
                }
                let logprobs = match (&logprob, self.want_logprobs) {
                    (Some(lp), true) => Some(ChoiceLogprobs {
                        content: vec![logprob_out(&self.state.tokenizer, lp)],
                    }),
                    _ => None,
                };
                if !text.is_empty() || logprobs.is_some() {
                    let delta = Delta {
                        content: Some(text),
                        ..Delta::default()
                    };
                    self.push_choice(seq, delta, logprobs, None);
                }
            }
            Event::Finished { seq, reason, text } => {
                let Some(c) = self.choices.get_mut(seq) else {
                    return;
                };
                c.finish = Some(reason);
                if self.answer.tools_offered {
                    c.text.push_str(&text);
                    let (message, finish) = self.answer.message(&self.choices[seq]);
                    let delta = Delta {
                        content: message.content,
                        tool_calls: message
                            .tool_calls
                            .into_iter()
                            .enumerate()
                            .map(|(i, mut call)| {
                                call.index = Some(i);
                                call
                            })
                            .collect(),
                        ..Delta::default()
                    };
                    self.push_choice(seq, delta, None, None);
                    self.push_choice(seq, Delta::default(), None, Some(finish));
                    return;
                }
                if !text.is_empty() {
                    let delta = Delta {
                        content: Some(text),
                        ..Delta::default()
                    };
                    self.push_choice(seq, delta, None, None);
                }
                let finish = self.choices[seq].finish.as_ref().map(finish_reason);
                self.push_choice(seq, Delta::default(), None, finish);
            }
            Event::Failed(e) => {
                self.out
                    .push_back(sse_event(&engine_io::internal(e).body()));
                self.finish();
            }
        }
    }

    /// The end: the usage chunk when asked for, then `[DONE]`.
    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if self.choices.iter().all(|c| c.finish.is_some()) && self.include_usage {
            let tokens = self.choices.iter().map(|c| c.tokens).sum();
            let usage = UsageField::Counts(Usage::new(self.prompt_tokens, tokens));
            self.out.push_back(self.answer.chunk(Vec::new(), usage));
        }
        self.out.push_back(SSE_DONE.to_string());
    }
}

fn stream_response(
    state: Shared,
    events: ResponseStream,
    answer: Answer,
    n: usize,
    prompt_tokens: usize,
    include_usage: bool,
    want_logprobs: bool,
) -> Response {
    let mut s = ChatStream {
        state,
        events,
        answer,
        out: VecDeque::new(),
        choices: (0..n).map(|_| Choice::default()).collect(),
        prompt_tokens,
        include_usage,
        want_logprobs,
        done: false,
    };
    // Each choice opens with the assistant role (and the forced opening, if any).
    for index in 0..n {
        let content = if s.answer.tools_offered {
            String::new()
        } else {
            s.answer.forced.clone()
        };
        let delta = Delta {
            role: Some(Role::Assistant),
            content: Some(content),
            ..Delta::default()
        };
        s.push_choice(index, delta, None, None);
    }
    let body = futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(chunk) = s.out.pop_front() {
                return Some((Ok::<Bytes, Infallible>(Bytes::from(chunk)), s));
            }
            if s.done {
                return None;
            }
            match s.events.recv().await {
                Some(event) => s.on_event(event),
                None => s.finish(),
            }
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
