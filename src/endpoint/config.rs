//! `lopa serve`'s settings: every limit and its default in one place, checked before the server
//! starts.

use super::engine::EngineConfig;
use axum::http::HeaderValue;
use std::time::Duration;

/// Server settings (`lopa serve` flags). `Default` holds every default in one place.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub engine: EngineConfig,
    /// Longest accepted soft prompt (rows).
    pub max_soft_prompt_rows: usize,
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most new tokens per request.
    pub max_tokens_limit: usize,
    /// Most token positions one request may put through the model: soft prompt + prompt + new
    /// tokens, summed over candidates for `/v1/score`.
    pub max_request_tokens: usize,
    /// Time a request may wait for its answer (504 beyond).
    pub request_timeout: Duration,
    /// Longest a streamed completion may run; it then ends with an error event.
    pub stream_timeout: Duration,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body (408 beyond).
    pub body_timeout: Duration,
    /// Requests handled at once (503 beyond); a stream counts until it ends.
    pub max_concurrent: usize,
    /// Open connections at once (further ones are closed at accept).
    pub max_connections: usize,
    /// Most examples in one `/v1/soft_prompt_grad` request.
    pub max_gradient_examples: usize,
    /// Origins allowed by CORS (empty: no CORS headers; `*`: any origin).
    pub cors_origins: Vec<String>,
    /// Accepted `Host` names (without port); `*` accepts any. Empty: loopback names only.
    pub allowed_hosts: Vec<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig { max_batch: 16, max_batch_tokens: 16_384, batch_window: Duration::from_millis(5), queue: 64, max_gradient_bytes: 2 << 30 },
            max_soft_prompt_rows: 64,
            max_body_bytes: 4 << 20,
            max_tokens_limit: 512,
            max_request_tokens: 4096,
            request_timeout: Duration::from_secs(120),
            stream_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_concurrent: 64,
            max_connections: 1024,
            max_gradient_examples: 32,
            cors_origins: vec![],
            allowed_hosts: vec![],
        }
    }
}

/// Names every loopback client may use.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl ServeConfig {
    /// Check settings that could otherwise fail later; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.cors_origins.iter().any(|o| o == "*") && self.cors_origins.len() > 1 {
            return Err("--cors-origin '*' allows every origin; give it alone".into());
        }
        if let Some(bad) = self.cors_origins.iter().find(|o| *o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) || o.parse::<HeaderValue>().is_err()) {
            return Err(format!("--cors-origin `{bad}` is not an origin like http://host:port (or '*')"));
        }
        if self.max_request_tokens > self.engine.max_batch_tokens {
            return Err(format!("--max-request-tokens {} exceeds --max-batch-tokens {}", self.max_request_tokens, self.engine.max_batch_tokens));
        }
        if [self.max_concurrent, self.max_connections, self.max_request_tokens, self.max_tokens_limit, self.max_soft_prompt_rows, self.max_gradient_examples].contains(&0) {
            return Err("limits must be at least 1".into());
        }
        Ok(())
    }

    /// Whether a `Host` header value (host, optional port) is accepted.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().map(|h| format!("[{h}]")).unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h).to_string(),
        }
        .to_ascii_lowercase();
        self.allowed_hosts.iter().any(|h| h == "*" || h.eq_ignore_ascii_case(&name)) || LOOPBACK_HOSTS.contains(&name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_matched_without_port_and_case() {
        let cfg = ServeConfig { allowed_hosts: vec!["api.example.com".into()], ..ServeConfig::default() };
        for ok in ["localhost", "localhost:8080", "127.0.0.1:1", "[::1]:8080", "[::1]", "API.example.com:443"] {
            assert!(cfg.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.example", "api.example.com.evil.example", "127.0.0.2", "[::2]:80", "localhost.evil.example:80", ""] {
            assert!(!cfg.host_allowed(bad), "{bad}");
        }
        assert!(ServeConfig { allowed_hosts: vec!["*".into()], ..ServeConfig::default() }.host_allowed("anything.example"));
    }
}
