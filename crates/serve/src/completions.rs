//! `POST /v1/completions`: plain text prompts (no chat template), answered whole or
//! streamed.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use ferro_engine::Event;
use serde_json::{json, Value};

use crate::engine_io::{self, finish_reason, Choice};
use crate::protocol::{ApiError, CompletionRequest};
use crate::response::{sse_event, Completion, CompletionChoice, Usage, SSE_DONE};
use crate::server::{json_response, now_secs, read_body, Shared};

pub(crate) async fn completions(State(state): State<Shared>, body: Body) -> Response {
    match handle(state, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The legacy completions log-probabilities: `tokens`, `token_logprobs`, `top_logprobs`
/// (token → log-probability) and `text_offset`.
fn legacy_logprobs(state: &Shared, c: &Choice) -> Value {
    let mut offset = 0;
    let (mut tokens, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    for lp in &c.logprobs {
        let piece = state
            .tokenizer
            .decode(&[lp.token], false)
            .unwrap_or_default();
        offsets.push(offset);
        offset += piece.len();
        tokens.push(piece);
        lps.push(lp.logprob);
        let top: serde_json::Map<String, Value> = lp
            .top
            .iter()
            .map(|&(t, l)| {
                (
                    state.tokenizer.decode(&[t], false).unwrap_or_default(),
                    json!(l),
                )
            })
            .collect();
        tops.push(Value::Object(top));
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

async fn handle(state: Shared, body: Body) -> Result<Response, ApiError> {
    let body = read_body(&state, body).await?;
    let req = CompletionRequest::from_body(&body)?;
    state.check_model(&req.model)?;
    let config = req.generation_config(&state.defaults);
    let n = config.num_return_sequences;
    let prompts = req.prompts();
    let echo = req.echo == Some(true);
    let id = state.new_id("cmpl");
    let created = now_secs();
    let encode = |p: &str| -> Result<Vec<u32>, ApiError> {
        Ok(state
            .tokenizer
            .encode(p, true)
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))?
            .ids)
    };
    if req.sampling.stream == Some(true) {
        let [prompt] = prompts.as_slice() else {
            return Err(ApiError::invalid(
                "prompt",
                "a streamed completion takes one prompt",
            ));
        };
        let ids = encode(prompt)?;
        let prompt_tokens = ids.len();
        let events = engine_io::submit(&state.engine, &id, ids, config, "prompt")?;
        let include_usage = req
            .sampling
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        let chunk = move |choices: Vec<CompletionChoice>, usage: Option<Usage>| {
            sse_event(&Completion::new(
                id.clone(),
                created,
                state.config.model_id.clone(),
                choices,
                usage,
            ))
        };
        // The stream's state: the events (none once done), the echoed prompt still to
        // send, tokens generated and choices finished.
        let start = (
            Some(events),
            echo.then(|| prompt.to_string()),
            0usize,
            0usize,
        );
        let body =
            futures_util::stream::unfold(start, move |(events, echo, mut tokens, mut finished)| {
                let chunk = chunk.clone();
                async move {
                    let mut events = events?;
                    let mut out = String::new();
                    if let Some(text) = echo {
                        for index in 0..n {
                            out.push_str(&chunk(
                                vec![text_choice(index, text.clone(), None)],
                                None,
                            ));
                        }
                    }
                    match events.recv().await {
                        Some(Event::Token { seq, text, .. }) => {
                            tokens += 1;
                            if !text.is_empty() {
                                out.push_str(&chunk(vec![text_choice(seq, text, None)], None));
                            }
                        }
                        Some(Event::Finished { seq, reason, text }) => {
                            finished += 1;
                            out.push_str(&chunk(vec![text_choice(seq, text, Some(&reason))], None));
                        }
                        Some(Event::Failed(e)) => {
                            out.push_str(&sse_event(&engine_io::internal(e).body()));
                            out.push_str(SSE_DONE);
                            return Some((
                                Ok::<Bytes, Infallible>(Bytes::from(out)),
                                (None, None, tokens, finished),
                            ));
                        }
                        None => {
                            if finished == n && include_usage {
                                out.push_str(&chunk(
                                    Vec::new(),
                                    Some(Usage::new(prompt_tokens, tokens)),
                                ));
                            }
                            out.push_str(SSE_DONE);
                            return Some((Ok(Bytes::from(out)), (None, None, tokens, finished)));
                        }
                    }
                    Some((Ok(Bytes::from(out)), (Some(events), None, tokens, finished)))
                }
            });
        return Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(body),
        )
            .into_response());
    }
    // Every prompt is submitted before any is awaited, so they run together.
    let mut pending = Vec::with_capacity(prompts.len());
    for p in &prompts {
        let ids = encode(p)?;
        let len = ids.len();
        pending.push((
            len,
            engine_io::submit(&state.engine, &id, ids, config.clone(), "prompt")?,
        ));
    }
    let (mut choices, mut prompt_tokens, mut completion_tokens) = (Vec::new(), 0, 0);
    for (p, (len, events)) in prompts.iter().zip(pending) {
        prompt_tokens += len;
        for c in engine_io::collect(events, n).await? {
            completion_tokens += c.tokens;
            let logprobs = req.logprobs.map(|_| legacy_logprobs(&state, &c));
            let text = if echo {
                format!("{p}{}", c.text)
            } else {
                c.text.clone()
            };
            let mut choice = text_choice(choices.len(), text, c.finish.as_ref());
            choice.logprobs = logprobs;
            choices.push(choice);
        }
    }
    let body = Completion::new(
        id,
        created,
        state.config.model_id.clone(),
        choices,
        Some(Usage::new(prompt_tokens, completion_tokens)),
    );
    Ok(json_response(StatusCode::OK, &body))
}

fn text_choice(
    index: usize,
    text: String,
    finish: Option<&ferro_generate::FinishReason>,
) -> CompletionChoice {
    CompletionChoice {
        index,
        text,
        logprobs: None,
        finish_reason: finish.map(finish_reason),
    }
}
