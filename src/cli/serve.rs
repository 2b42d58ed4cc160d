//! `lopa serve`: the frozen model over HTTP (OpenAI-style `/v1/completions` with a `soft_prompt`
//! field, and `/v1/score`), in this process or as the gateway in front of vLLM (`--upstream`).

use crate::args::ModelArgs;
use lopa::model::decoder::TokenEmbedding;

/// `lopa serve` flags; unset limits take [`lopa::endpoint::ServeConfig::default`].
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    models: ModelArgs,
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Serve through a vLLM server instead of this process: `vllm=http://HOST:PORT`. The gateway
    /// loads only the tokenizer and token embeddings of --model, which vLLM must serve too.
    #[arg(long)]
    upstream: Option<lopa::endpoint::Upstream>,
    /// Accepted Host name (repeatable; `*` for any). Loopback names are always accepted.
    #[arg(long)]
    allow_host: Vec<String>,
    /// Allowed CORS origin (repeatable), e.g. http://127.0.0.1:8000, or `*` for any.
    #[arg(long)]
    cors_origin: Vec<String>,
    /// Most requests per forward pass (1 = one at a time).
    #[arg(long)]
    max_batch: Option<usize>,
    /// Most token positions per forward pass, summed over its requests.
    #[arg(long)]
    max_batch_tokens: Option<usize>,
    /// Milliseconds to wait for more requests after the first.
    #[arg(long)]
    batch_window_ms: Option<u64>,
    /// Waiting requests beyond this get 429.
    #[arg(long)]
    queue: Option<usize>,
    #[arg(long)]
    max_body_bytes: Option<usize>,
    #[arg(long)]
    max_tokens_limit: Option<usize>,
    /// Most token positions per request (soft prompt + prompt + new tokens; all candidates of a score).
    #[arg(long)]
    max_request_tokens: Option<usize>,
    #[arg(long)]
    max_soft_prompt_rows: Option<usize>,
    /// Requests in flight at once (503 beyond).
    #[arg(long)]
    max_concurrent: Option<usize>,
    /// Seconds a request may wait for its answer.
    #[arg(long)]
    timeout_s: Option<u64>,
    /// Seconds a streamed completion may run.
    #[arg(long)]
    stream_timeout_s: Option<u64>,
    /// MiB one soft-prompt gradient computation may hold; an example that alone would hold more
    /// is refused with 400 [default: 2048].
    #[arg(long)]
    max_gradient_mb: Option<u64>,
}

pub fn run(a: Args) -> lopa::Result<()> {
    use lopa::endpoint::{Backend, ServeConfig};
    use std::time::Duration;
    let d = ServeConfig::default();
    let mut cfg = ServeConfig {
        engine: lopa::endpoint::EngineConfig {
            max_batch: a.max_batch.unwrap_or(d.engine.max_batch),
            max_batch_tokens: a.max_batch_tokens.unwrap_or(d.engine.max_batch_tokens),
            batch_window: a.batch_window_ms.map_or(d.engine.batch_window, Duration::from_millis),
            queue: a.queue.unwrap_or(d.engine.queue),
            max_gradient_bytes: a.max_gradient_mb.map_or(d.engine.max_gradient_bytes, |mb| mb << 20),
        },
        max_soft_prompt_rows: a.max_soft_prompt_rows.unwrap_or(d.max_soft_prompt_rows),
        max_body_bytes: a.max_body_bytes.unwrap_or(d.max_body_bytes),
        max_tokens_limit: a.max_tokens_limit.unwrap_or(d.max_tokens_limit),
        max_request_tokens: a.max_request_tokens.unwrap_or(d.max_request_tokens),
        request_timeout: a.timeout_s.map_or(d.request_timeout, Duration::from_secs),
        stream_timeout: a.stream_timeout_s.map_or(d.stream_timeout, Duration::from_secs),
        max_concurrent: a.max_concurrent.unwrap_or(d.max_concurrent),
        cors_origins: a.cors_origin,
        allowed_hosts: a.allow_host,
        ..d
    };
    // A server bound to one address answers to that address as a Host name too.
    if let Ok(sa) = a.addr.parse::<std::net::SocketAddr>() {
        if !sa.ip().is_unspecified() {
            cfg.allowed_hosts.push(match sa.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            });
        }
    }
    cfg.validate().map_err(lopa::Error::Config)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| lopa::Error::Backend(e.to_string()))?;
    rt.block_on(async move {
        let (app, what) = match &a.upstream {
            None => {
                let dev = a.models.device()?;
                let fm = a.models.load_model(&dev.device)?;
                let what = format!("{} ({})", fm.id, dev.name);
                (lopa::endpoint::router(fm, dev.device, cfg.clone()), what)
            }
            Some(up) => {
                let emb = TokenEmbedding::load(a.models.model_path())?;
                let vllm = lopa::endpoint::Vllm::connect(&up.url, emb).await?;
                let info = vllm.model_info();
                let what = format!("{} through vLLM at {}", info.id, up.url);
                (lopa::endpoint::router_with(Backend::Vllm(std::sync::Arc::new(vllm)), info, cfg.clone()), what)
            }
        };
        let listener = tokio::net::TcpListener::bind(&a.addr).await.map_err(|e| lopa::Error::Backend(format!("bind {}: {e}", a.addr)))?;
        let at = listener.local_addr().map(|x| x.to_string()).unwrap_or(a.addr.clone());
        eprintln!("lopa: serving {what} on http://{at}");
        if cfg.allowed_hosts.is_empty() && at.starts_with("0.0.0.0") {
            eprintln!("lopa: only loopback Host names are accepted; add --allow-host NAME for the names clients use");
        }
        lopa::endpoint::serve(listener, app, &cfg, async { let _ = tokio::signal::ctrl_c().await; }).await.map_err(|e| lopa::Error::Backend(e.to_string()))
    })
}
