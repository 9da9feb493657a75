//! The HTTP server: routes, API key, body limit, CORS, request ids and logs, metrics,
//! graceful shutdown. Handlers talk to the engine only through its handle.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ferro_engine::EngineHandle;
use ferro_generate::GenerationConfig;
use ferro_tokenizers::Tokenizer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::engine_io::UNSET_MAX_TOKENS;
use crate::protocol::ApiError;
use crate::response::ModelList;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The id clients send as `model` (and `/v1/models` lists).
    pub model_id: String,
    /// Required as `Authorization: Bearer KEY` on every /v1 route when set.
    pub api_key: Option<String>,
    /// Larger request bodies get a 413.
    pub max_body_bytes: usize,
    /// Origins allowed by CORS (`*` for any); none: no CORS headers.
    pub cors_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            model_id: "model".into(),
            api_key: None,
            max_body_bytes: 4 << 20,
            cors_origins: Vec::new(),
        }
    }
}

/// What every handler sees.
pub(crate) struct AppState {
    pub engine: EngineHandle,
    /// The encoder behind /v1/embeddings, when the server has one.
    pub embedder: Option<Arc<dyn crate::embeddings::Embedder>>,
    pub tokenizer: Tokenizer,
    pub config: ServerConfig,
    /// Generation settings before the request's own (OpenAI's: sampling at temperature 1).
    pub defaults: GenerationConfig,
    pub created: u64,
    next_id: AtomicU64,
    /// Requests answered, by route and status.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
}

pub(crate) type Shared = Arc<AppState>;

impl AppState {
    /// A fresh id such as `chatcmpl-…`: unique per process run (start time and counter).
    pub fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:x}{n:06x}", self.created)
    }

    /// Checks the request's `model`.
    pub fn check_model(&self, model: &str) -> Result<(), ApiError> {
        if model == self.config.model_id {
            return Ok(());
        }
        Err(ApiError {
            status: 404,
            message: format!(
                "The model `{model}` does not exist; this server serves `{}`",
                self.config.model_id
            ),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        })
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, &self.body())
    }
}

pub(crate) fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The request body, at most `max_body_bytes` (413 beyond).
pub(crate) async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.config.max_body_bytes;
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError {
            status: 413,
            message: format!(
                "the request body is larger than the limit of {limit} bytes (or was cut off)"
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        })
}

/// The router over a running engine (and an encoder for /v1/embeddings, if given).
pub fn router(
    engine: EngineHandle,
    tokenizer: Tokenizer,
    config: ServerConfig,
    embedder: Option<Arc<dyn crate::embeddings::Embedder>>,
) -> Router {
    let defaults = GenerationConfig {
        do_sample: true,
        temperature: 1.0,
        top_p: 1.0,
        top_k: 0,
        max_new_tokens: UNSET_MAX_TOKENS,
        ..GenerationConfig::default()
    };
    let cors = cors_layer(&config.cors_origins);
    let state = Arc::new(AppState {
        engine,
        embedder,
        tokenizer,
        config,
        defaults,
        created: now_secs(),
        next_id: AtomicU64::new(0),
        requests: Mutex::new(BTreeMap::new()),
    });
    let v1 = Router::new()
        .route("/v1/chat/completions", post(crate::chat::chat_completions))
        .route("/v1/completions", post(crate::completions::completions))
        .route("/v1/embeddings", post(crate::embeddings::embeddings))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    let router = Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), log_request))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}

/// `Authorization: Bearer KEY` when the server has a key (compared in constant time).
async fn require_key(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let same = given.len() == key.len()
            && given
                .bytes()
                .zip(key.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return ApiError {
                status: 401,
                message: "Incorrect API key provided (send it as `Authorization: Bearer KEY`)"
                    .into(),
                kind: "invalid_request_error",
                param: None,
                code: Some("invalid_api_key"),
            }
            .into_response();
        }
    }
    next.run(req).await
}

/// Gives every request an id (`x-request-id`, the client's if it sent one), logs it with
/// its route, status and time, and counts it for /metrics.
async fn log_request(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.uri().path().to_string();
    let method = req.method().clone();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map_or_else(|| state.new_id("req"), str::to_string);
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert("x-request-id", v);
    }
    let mut response = next.run(req).await;
    let status = response.status().as_u16();
    tracing::info!(request_id = %id, %method, route = %route, status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    let known = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/health",
        "/metrics",
    ];
    let route = if known.contains(&route.as_str()) {
        route
    } else {
        "other".into()
    };
    if let Ok(mut counts) = state.requests.lock() {
        *counts.entry((route, status)).or_default() += 1;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// The request id `log_request` gave.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

async fn models(State(state): State<Shared>) -> Response {
    let mut models = vec![(state.config.model_id.clone(), state.created)];
    if let Some(e) = &state.embedder {
        models.push((e.model_id().to_string(), state.created));
    }
    let list = ModelList::new(models);
    json_response(StatusCode::OK, &list)
}

async fn health(State(state): State<Shared>) -> Response {
    if state.engine.is_stopped() {
        return crate::engine_io::unavailable("the engine has stopped".into()).into_response();
    }
    json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

async fn metrics(State(state): State<Shared>) -> Response {
    let mut out = String::new();
    out.push_str("# HELP ferro_requests_total HTTP requests answered, by route and status.\n");
    out.push_str("# TYPE ferro_requests_total counter\n");
    if let Ok(counts) = state.requests.lock() {
        for ((route, status), n) in counts.iter() {
            out.push_str(&format!(
                "ferro_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n"
            ));
        }
    }
    state.engine.metrics().render(&mut out);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}

async fn not_found(req: Request) -> Response {
    ApiError {
        status: 404,
        message: format!("no route {} {}", req.method(), req.uri().path()),
        kind: "invalid_request_error",
        param: None,
        code: Some("not_found"),
    }
    .into_response()
}

/// Serves `router` on `addr` until `shutdown` resolves; then stops taking connections,
/// lets the requests in flight finish, and drains the engine.
pub async fn serve(
    router: Router,
    addr: SocketAddr,
    engine: EngineHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    let drain = engine.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing the requests in flight");
            drain.shutdown();
        })
        .await?;
    engine.shutdown();
    engine.stopped().await;
    Ok(())
}
