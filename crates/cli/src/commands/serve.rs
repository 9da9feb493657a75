//! `ferro serve`: the OpenAI-compatible HTTP server over one model.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use ferro_engine::{Engine, EngineConfig};
use ferro_serve::ServerConfig;

use crate::generation_args::ChatModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    load: ChatModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every /v1 route [default: the
    /// FERRO_API_KEY environment variable, if set].
    #[arg(long)]
    api_key: Option<String>,
    /// The model id clients send and /v1/models lists [default: the model's file or
    /// folder name].
    #[arg(long)]
    served_model_name: Option<String>,
    /// Sequences generated at the same time (continuous batching).
    #[arg(long, default_value_t = 16)]
    max_running: usize,
    /// Requests waiting for a place; more get HTTP 429.
    #[arg(long, default_value_t = 256)]
    max_queued: usize,
    /// Tokens fed to the model per step (running sequences first, then prompt chunks).
    #[arg(long, default_value_t = 512)]
    max_batched_tokens: usize,
    /// KV-cache budget in tokens over all sequences.
    #[arg(long, default_value_t = 65_536)]
    kv_cache_tokens: usize,
    /// Do not keep finished sequences' caches for prompts that share their prefix.
    #[arg(long)]
    no_prefix_caching: bool,
    /// Largest request body in bytes (HTTP 413 beyond).
    #[arg(long, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// A sentence-transformers model (folder or Hub id) to serve on /v1/embeddings.
    #[arg(long)]
    embedding_model: Option<String>,
    /// Allowed CORS origin (repeat for several; `*` for any). None: no CORS headers.
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let spec = args.load.model.spec()?;
    let model_id = args.served_model_name.clone().unwrap_or_else(|| {
        std::path::Path::new(spec.trim_end_matches('/'))
            .file_name()
            .map_or_else(|| spec.clone(), |n| n.to_string_lossy().into_owned())
    });
    let (tokenizer, model) = args.load.load()?;
    let embedder = args
        .embedding_model
        .as_deref()
        .map(|m| -> Result<std::sync::Arc<dyn ferro_serve::Embedder>> {
            let st = ferro_pipelines::SentenceTransformer::from_pretrained(m)
                .with_context(|| format!("loading the embedding model `{m}`"))?;
            let id = std::path::Path::new(m.trim_end_matches('/'))
                .file_name()
                .map_or_else(|| m.to_string(), |n| n.to_string_lossy().into_owned());
            Ok(std::sync::Arc::new(SentenceEmbedder { model: st, id }))
        })
        .transpose()?;
    let engine_config = EngineConfig {
        max_running: args.max_running,
        max_queued: args.max_queued,
        max_batched_tokens: args.max_batched_tokens,
        kv_cache_tokens: args.kv_cache_tokens,
        prefix_caching: !args.no_prefix_caching,
        ..EngineConfig::default()
    };
    let engine =
        Engine::start(model, tokenizer.clone(), engine_config).context("starting the engine")?;
    let config = ServerConfig {
        model_id,
        api_key: args
            .api_key
            .or_else(|| std::env::var("FERRO_API_KEY").ok())
            .filter(|k| !k.is_empty()),
        max_body_bytes: args.max_body_bytes,
        cors_origins: args.cors_origins,
    };
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .with_context(|| format!("--host {} --port {}: not an address", args.host, args.port))?;
    eprintln!("serving `{}` on http://{addr}/v1", config.model_id);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let router = ferro_serve::router(engine.clone(), tokenizer, config, embedder);
        ferro_serve::serve(router, addr, engine, shutdown_signal())
            .await
            .with_context(|| format!("serving on {addr}"))
    })
}

/// /v1/embeddings through sentence-transformers' pipeline.
struct SentenceEmbedder {
    model: ferro_pipelines::SentenceTransformer,
    id: String,
}

impl ferro_serve::Embedder for SentenceEmbedder {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, usize), String> {
        let tokens = texts
            .iter()
            .map(|t| self.model.tokenize(t).map(|ids| ids.len()))
            .sum::<ferro_pipelines::Result<usize>>()
            .map_err(|e| e.to_string())?;
        let vectors = self.model.encode(texts, 32).map_err(|e| e.to_string())?;
        Ok((vectors, tokens))
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
