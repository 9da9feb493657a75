//! Between the HTTP handlers and the engine: submitting a request (refusals become
//! OpenAI errors), and gathering a choice's text, tokens and log-probabilities.

use ferro_engine::{EngineHandle, GenerationRequest, ResponseStream, SubmitError};
use ferro_generate::{FinishReason, GenerationConfig};
use ferro_tokenizers::Tokenizer;

use crate::protocol::ApiError;
use crate::response::{self, TokenLogprob, TopLogprob};

/// `max_new_tokens` when the request set no `max_tokens`: the room left in the context.
pub(crate) const UNSET_MAX_TOKENS: usize = usize::MAX;

/// Submits `prompt` with `config`; `prompt_param` names the request field the prompt came
/// from (`messages`, `prompt`) in errors.
pub(crate) fn submit(
    engine: &EngineHandle,
    id: &str,
    prompt: Vec<u32>,
    mut config: GenerationConfig,
    prompt_param: &str,
) -> Result<ResponseStream, ApiError> {
    if config.max_new_tokens == UNSET_MAX_TOKENS {
        config.max_new_tokens = engine.context_length().saturating_sub(prompt.len()).max(1);
    }
    engine
        .submit(GenerationRequest {
            id: id.to_string(),
            prompt,
            config,
        })
        .map_err(|e| match e {
            SubmitError::Invalid { param, msg } => {
                let param = if param == "prompt" {
                    prompt_param
                } else {
                    param
                };
                ApiError::invalid(param, msg)
            }
            SubmitError::QueueFull(_) => ApiError {
                status: 429,
                message: e.to_string(),
                kind: "rate_limit_error",
                param: None,
                code: Some("queue_full"),
            },
            SubmitError::ShuttingDown => unavailable(e.to_string()),
        })
}

pub(crate) fn unavailable(message: String) -> ApiError {
    ApiError {
        status: 503,
        message,
        kind: "server_error",
        param: None,
        code: Some("unavailable"),
    }
}

pub(crate) fn internal(message: String) -> ApiError {
    ApiError {
        status: 500,
        message,
        kind: "server_error",
        param: None,
        code: None,
    }
}

/// OpenAI's finish reason for the engine's.
pub(crate) fn finish_reason(r: &FinishReason) -> response::FinishReason {
    match r.openai() {
        "length" => response::FinishReason::Length,
        _ => response::FinishReason::Stop,
    }
}

/// A token's text and bytes as OpenAI shows them in log-probabilities.
fn token_piece(tokenizer: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let text = tokenizer.decode(&[id], false).unwrap_or_default();
    let bytes = text.as_bytes().to_vec();
    (text, bytes)
}

/// The engine's log-probability record as OpenAI's.
pub(crate) fn logprob_out(
    tokenizer: &Tokenizer,
    lp: &ferro_generate::TokenLogprob,
) -> TokenLogprob {
    let (token, bytes) = token_piece(tokenizer, lp.token);
    TokenLogprob {
        token,
        logprob: lp.logprob,
        bytes,
        top_logprobs: lp
            .top
            .iter()
            .map(|&(t, logprob)| {
                let (token, bytes) = token_piece(tokenizer, t);
                TopLogprob {
                    token,
                    logprob,
                    bytes,
                }
            })
            .collect(),
    }
}

/// One choice, gathered from the engine's events.
#[derive(Debug, Default)]
pub(crate) struct Choice {
    pub text: String,
    pub tokens: usize,
    pub logprobs: Vec<ferro_generate::TokenLogprob>,
    pub finish: Option<FinishReason>,
}

/// Reads the whole answer: `n` choices.
pub(crate) async fn collect(mut stream: ResponseStream, n: usize) -> Result<Vec<Choice>, ApiError> {
    let mut choices: Vec<Choice> = (0..n).map(|_| Choice::default()).collect();
    while let Some(event) = stream.recv().await {
        match event {
            ferro_engine::Event::Token {
                seq, text, logprob, ..
            } => {
                if let Some(c) = choices.get_mut(seq) {
                    c.text.push_str(&text);
                    c.tokens += 1;
                    c.logprobs.extend(logprob);
                }
            }
            ferro_engine::Event::Finished { seq, reason, text } => {
                if let Some(c) = choices.get_mut(seq) {
                    c.text.push_str(&text);
                    c.finish = Some(reason);
                }
            }
            ferro_engine::Event::Failed(e) => return Err(internal(e)),
        }
    }
    if choices.iter().any(|c| c.finish.is_none()) {
        return Err(unavailable(
            "the engine stopped before the answer was complete".into(),
        ));
    }
    Ok(choices)
}
