//! `POST /v1/embeddings`: OpenAI's embeddings route over an encoder the binary provides.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::engine_io::internal;
use crate::protocol::ApiError;
use crate::server::{json_response, read_body, Shared};

/// Something that embeds texts (sentence-transformers' way, in the binary); the server
/// only calls it.
pub trait Embedder: Send + Sync {
    /// The id clients send as `model`.
    fn model_id(&self) -> &str;
    /// One vector per text, and the tokens read in all.
    fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, usize), String>;
}

/// Most texts one request may embed (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

fn parse(body: &[u8]) -> Result<(String, Vec<String>, bool, Option<usize>), ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_body(format!("the request body is not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_body("the request body must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| {
        !["model", "input", "encoding_format", "dimensions", "user"].contains(&k.as_str())
    }) {
        return Err(ApiError::invalid(
            k.clone(),
            format!("unrecognized request argument supplied: `{k}`"),
        ));
    }
    let model = match obj.get("model") {
        Some(Value::String(m)) => m.clone(),
        _ => return Err(ApiError::invalid("model", "`model` must be a string")),
    };
    let inputs = match obj.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        Some(Value::Array(a)) if !a.is_empty() => {
            return Err(ApiError::invalid(
                "input",
                "token-id inputs are not supported; send text",
            ))
        }
        _ => {
            return Err(ApiError::invalid(
                "input",
                "`input` must be a string or a non-empty list of strings",
            ))
        }
    };
    if inputs.len() > MAX_INPUTS {
        return Err(ApiError::invalid(
            "input",
            format!("at most {MAX_INPUTS} inputs per request"),
        ));
    }
    if inputs.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "input",
            "inputs must not be empty strings",
        ));
    }
    let base64 = match obj.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        _ => {
            return Err(ApiError::invalid(
                "encoding_format",
                "must be `float` or `base64`",
            ))
        }
    };
    let dimensions = match obj.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(d) if d > 0 => Some(d as usize),
            _ => {
                return Err(ApiError::invalid(
                    "dimensions",
                    "must be a positive integer",
                ))
            }
        },
        _ => {
            return Err(ApiError::invalid(
                "dimensions",
                "must be a positive integer",
            ))
        }
    };
    Ok((model, inputs, base64, dimensions))
}

/// Standard base64 of little-endian f32s (what OpenAI's clients decode).
fn base64_f32(v: &[f32]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) async fn embeddings(State(state): State<Shared>, body: Body) -> Response {
    match handle(state, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(state: Shared, body: Body) -> Result<Response, ApiError> {
    let Some(embedder) = state.embedder.clone() else {
        return Err(ApiError {
            status: 404,
            message: "this server has no embedding model (start it with --embedding-model)".into(),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        });
    };
    let body = read_body(&state, body).await?;
    let (model, inputs, base64, dimensions) = parse(&body)?;
    if model != embedder.model_id() {
        return Err(ApiError {
            status: 404,
            message: format!(
                "The model `{model}` does not exist; embeddings come from `{}`",
                embedder.model_id()
            ),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        });
    }
    let (vectors, tokens) = tokio::task::spawn_blocking(move || embedder.embed(&inputs))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(internal)?;
    if let Some(d) = dimensions {
        if vectors.first().is_some_and(|v| d > v.len()) {
            return Err(ApiError::invalid(
                "dimensions",
                "larger than the model's embeddings",
            ));
        }
    }
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, mut v)| {
            if let Some(d) = dimensions {
                // Truncated and renormalized (Matryoshka-style, as OpenAI's `dimensions`).
                v.truncate(d);
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
            }
            let embedding = if base64 {
                json!(base64_f32(&v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Ok(json_response(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        // 1.0f32 = 00 00 80 3f; 2.0 = 00 00 00 40.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
    }

    #[test]
    fn bad_inputs_name_the_parameter() {
        for (body, param) in [
            (r#"{"model": "m"}"#, "input"),
            (r#"{"model": "m", "input": []}"#, "input"),
            (r#"{"model": "m", "input": [1, 2]}"#, "input"),
            (r#"{"model": "m", "input": ""}"#, "input"),
            (
                r#"{"model": "m", "input": "x", "encoding_format": "hex"}"#,
                "encoding_format",
            ),
            (
                r#"{"model": "m", "input": "x", "dimensions": 0}"#,
                "dimensions",
            ),
            (r#"{"model": "m", "input": "x", "extra": 1}"#, "extra"),
            (r#"{"input": "x"}"#, "model"),
        ] {
            let err = parse(body.as_bytes()).unwrap_err();
            assert_eq!(err.status, 400, "{body}");
            assert_eq!(err.param.as_deref(), Some(param), "{body}");
        }
        let (_, inputs, b64, _) =
            parse(br#"{"model": "m", "input": ["a", "b"], "encoding_format": "base64"}"#).unwrap();
        assert_eq!(inputs, vec!["a", "b"]);
        assert!(b64);
    }
}
