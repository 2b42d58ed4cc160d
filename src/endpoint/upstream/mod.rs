//! `lopa serve --upstream vllm=URL`: the gateway in front of a vLLM server. vLLM takes
//! `prompt_embeds` only as whole prompts and should take them only from trusted senders
//! (CVE-2025-62164), so the gateway does the client-facing work: it validates the soft prompt
//! like the embedded engine, builds `[soft prompt ; embed(prompt ids)]` from its own copy of the
//! token-embedding table, writes the `torch.save` bytes itself (no client byte is forwarded;
//! [`body`] writes them straight into the request), and maps vLLM's answer (token ids, raw
//! log-probabilities) back to lopa's responses.
//!
//! Scoring uses `logprob_token_ids`: one request per distinct candidate prefix asks for the
//! log-probabilities of every candidate's next token after it. Single-token label words are one
//! request; a candidate of k tokens adds at most k - 1 more (vLLM refuses `prompt_logprobs` and
//! `echo` with embeddings, so there is no teacher forcing in one pass).

use crate::model::decoder::TokenEmbedding;
use crate::error::{Error, Result};
use crate::model::generate::{Generation, GenerationRequest};
use crate::model::sampling::{FinishReason, SamplingParams};
use super::info::ModelInfo;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub mod body;

/// The serving engines lopa can front (a closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    Vllm,
}

/// `--upstream KIND=URL`, e.g. `vllm=http://127.0.0.1:8000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub kind: UpstreamKind,
    /// Base URL without a trailing slash.
    pub url: String,
}

impl std::str::FromStr for Upstream {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (kind, url) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected KIND=URL, e.g. vllm=http://127.0.0.1:8000"))?;
        let kind = match kind {
            "vllm" => UpstreamKind::Vllm,
            other => return Err(format!("upstream `{other}` is not supported (vllm)")),
        };
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(format!("`{url}`: the upstream URL must start with http:// or https://"));
        }
        Ok(Upstream { kind, url: url.trim_end_matches('/').to_string() })
    }
}

/// vLLM caps `logprobs` (and the ids asked for per request) at 20 by default.
const MAX_IDS_PER_REQUEST: usize = 20;

/// A connected vLLM server serving the same model as the gateway's embedding table.
pub struct Vllm {
    http: reqwest::Client,
    url: String,
    /// vLLM's served model name.
    model: String,
    embedding: TokenEmbedding,
    /// vLLM's `--max-model-len`.
    max_model_len: usize,
}

fn upstream(rejected: bool, message: impl Into<String>) -> Error {
    Error::Upstream { rejected, message: message.into() }
}

/// vLLM's error text, in either of the shapes it has used.
fn error_message(v: &Value) -> String {
    let m = v["error"]["message"].as_str().or_else(|| v["message"].as_str()).unwrap_or("no message");
    m.chars().take(500).collect()
}

impl Vllm {
    /// Connect to vLLM at `url` and check that it serves the model whose tokenizer and embedding
    /// table the gateway holds: same width and vocabulary, and the same logits for a probe
    /// sent once as token ids (vLLM's own table) and once as embeddings (the gateway's).
    pub async fn connect(url: &str, embedding: TokenEmbedding) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| upstream(false, e.to_string()))?;
        let models: Value = get_json(&http, &format!("{url}/v1/models")).await?;
        let card = &models["data"][0];
        let model = card["id"].as_str().ok_or_else(|| upstream(false, format!("{url}/v1/models lists no model")))?.to_string();
        let max_model_len = card["max_model_len"].as_u64().unwrap_or(embedding.config.max_position_embeddings as u64) as usize;
        let v = Vllm { http, url: url.to_string(), model, embedding, max_model_len };
        v.check_model().await?;
        Ok(v)
    }

    async fn check_model(&self) -> Result<()> {
        let (vocab, d) = (self.embedding.config.vocab_size, self.embedding.config.hidden_size);
        let ours = format!("the gateway's model `{}` has width {d} and vocabulary {vocab}", self.embedding.id);
        // Width: vLLM refuses embeddings of another width (or any, without --enable-prompt-embeds).
        let probe = [self.embedding.row(0)?];
        if let Err(e) = self.post(self.body(&probe, json!({"max_tokens": 1}))?).await {
            return Err(Error::Config(format!("vLLM at {} refused a [1, {d}] prompt_embeds tensor ({e}); {ours}, and vLLM must run with --enable-prompt-embeds", self.url)));
        }
        // Vocabulary: the last id must be allowed and the next one refused.
        let last = self.post(self.body(&probe, json!({"max_tokens": 1, "allowed_token_ids": [vocab - 1], "return_token_ids": true}))?).await;
        if last.map_or(true, |v| v["choices"][0]["token_ids"][0].as_u64() != Some(vocab as u64 - 1)) {
            return Err(Error::Config(format!("vLLM at {} does not know token id {}: its vocabulary is smaller; {ours}", self.url, vocab - 1)));
        }
        if self.post(self.body(&probe, json!({"max_tokens": 1, "allowed_token_ids": [vocab]}))?).await.is_ok() {
            return Err(Error::Config(format!("vLLM at {} accepts token id {vocab}: its vocabulary is larger; {ours}", self.url)));
        }
        // Identity: the same ids through vLLM's table and through ours give the same answer.
        let ids = self.embedding.tokenizer.encode("The capital of France is").map_err(|e| Error::Config(e.to_string()))?;
        let ask = json!({"max_tokens": 1, "temperature": 0, "logprobs": 1, "return_token_ids": true});
        let mut as_ids = ask.clone();
        as_ids["prompt"] = json!(ids);
        let as_ids = self.post(self.json(as_ids)).await?;
        let rows = ids.iter().map(|&t| self.embedding.row(t)).collect::<Result<Vec<_>>>()?;
        let as_embeds = self.post(self.body(&rows, ask)?).await?;
        let pick = |v: &Value| (v["choices"][0]["token_ids"][0].as_u64(), v["choices"][0]["logprobs"]["token_logprobs"][0].as_f64());
        let ((t1, l1), (t2, l2)) = (pick(&as_ids), pick(&as_embeds));
        match (l1, l2) {
            (Some(a), Some(b)) if t1 == t2 && (a - b).abs() < 1e-3 => Ok(()),
            _ => Err(Error::Config(format!(
                "vLLM at {} serves other token embeddings than {}: a probe gave token {t1:?} (log p {l1:?}) from ids and {t2:?} ({l2:?}) from the gateway's embeddings; serve the same checkpoint (`lopa export-hf`)",
                self.url, self.embedding.id
            ))),
        }
    }

    /// A request body without embeddings, for the served model.
    fn json(&self, mut fields: Value) -> Vec<u8> {
        fields["model"] = json!(self.model);
        serde_json::to_vec(&fields).expect("a JSON value serializes")
    }

    /// A request body with `prompt_embeds` of `rows` (each `[d]`), for the served model.
    fn body(&self, rows: &[&[f32]], mut fields: Value) -> Result<Vec<u8>> {
        fields["model"] = json!(self.model);
        let fields = fields.as_object().expect("request fields are an object");
        body::completion_body(rows, self.embedding.config.hidden_size, fields).map_err(|e| Error::Input(e.to_string()))
    }

    /// [`Self::body`] for `[soft prompt ; embed(prompt ids ; extra)]`: the rows stay where they
    /// are (the request's soft prompt, the table) until they are written into the body.
    fn embeds_body(&self, req: &GenerationRequest, extra: &[u32], fields: Value) -> Result<Vec<u8>> {
        let mut rows: Vec<&[f32]> = Vec::with_capacity(1 + req.prompt_ids.len() + extra.len());
        rows.extend(req.soft_prompt.as_ref().map(|z| z.values()));
        for &t in req.prompt_ids.iter().chain(extra) {
            rows.push(self.embedding.row(t)?);
        }
        self.body(&rows, fields)
    }

    /// What the routes know of the model: the gateway's tokenizer and width, and the shorter of
    /// its context and vLLM's `--max-model-len`.
    pub fn model_info(&self) -> ModelInfo {
        let c = &self.embedding.config;
        ModelInfo {
            id: self.embedding.id.clone(),
            tokenizer: self.embedding.tokenizer.clone(),
            width: c.hidden_size,
            vocab: c.vocab_size,
            max_context: c.max_position_embeddings.min(self.max_model_len),
            gradient_cost: None,
        }
    }

    /// POST `/v1/completions` with a body from [`Self::body`] or [`Self::json`]; a non-2xx answer
    /// is an error (a 4xx one `rejected`).
    async fn send(&self, body: Vec<u8>) -> Result<reqwest::Response> {
        let r = self
            .http
            .post(format!("{}/v1/completions", self.url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| upstream(false, e.to_string()))?;
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status.is_client_error() {
            return Err(upstream(true, error_message(&v)));
        }
        Err(upstream(false, format!("vLLM answered {status}: {}", error_message(&v))))
    }

    /// [`Self::send`], reading the answer as JSON.
    async fn post(&self, body: Vec<u8>) -> Result<Value> {
        self.send(body).await?.json().await.map_err(|e| upstream(false, format!("reading vLLM's answer: {e}")))
    }

    fn completion_body(&self, req: &GenerationRequest, p: &SamplingParams, stops: &[String], stream: bool) -> Result<Vec<u8>> {
        let fields = json!({
            "max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p, "seed": p.seed,
            "stop_token_ids": p.stop_token_ids, "stop": stops,
            "logprobs": 0, "return_token_ids": true, "stream": stream,
        });
        self.embeds_body(req, &[], fields)
    }

    /// Start a generation on vLLM; tokens stream on `tokens` when given. Dropping the receiver
    /// drops the HTTP request, and vLLM aborts a request whose client went away.
    pub fn start(self: &Arc<Self>, req: GenerationRequest, params: SamplingParams, stops: Vec<String>, tokens: Option<mpsc::UnboundedSender<u32>>) -> oneshot::Receiver<Result<Generation>> {
        let (reply, rx) = oneshot::channel();
        let me = self.clone();
        tokio::spawn(async move {
            let mut reply = reply;
            let work = async {
                match tokens {
                    Some(tx) => me.stream(&req, &params, &stops, tx).await,
                    None => me.complete(&req, &params, &stops).await,
                }
            };
            tokio::select! {
                r = work => { let _ = reply.send(r); }
                _ = reply.closed() => {}
            }
        });
        rx
    }

    async fn complete(&self, req: &GenerationRequest, p: &SamplingParams, stops: &[String]) -> Result<Generation> {
        let v = self.post(self.completion_body(req, p, stops, false)?).await?;
        let choice = &v["choices"][0];
        let ids = token_ids(&choice["token_ids"])?;
        let lps: Vec<f32> = choice["logprobs"]["token_logprobs"].as_array().map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN) as f32).collect()).unwrap_or_default();
        Ok(generation(ids, lps, choice["finish_reason"].as_str(), &p.stop_token_ids))
    }

    async fn stream(&self, req: &GenerationRequest, p: &SamplingParams, stops: &[String], tx: mpsc::UnboundedSender<u32>) -> Result<Generation> {
        let mut r = self.send(self.completion_body(req, p, stops, true)?).await?;
        let (mut buf, mut ids, mut finish) = (Vec::<u8>::new(), Vec::new(), None::<String>);
        while let Some(bytes) = r.chunk().await.map_err(|e| upstream(false, e.to_string()))? {
            buf.extend_from_slice(&bytes);
            // Server-sent events: one `data: {json}` line each.
            while let Some(end) = buf.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let Some(data) = line.strip_prefix(b"data: ") else { continue };
                let data = data.trim_ascii();
                if data == b"[DONE]" {
                    continue;
                }
                let v: Value = serde_json::from_slice(data).map_err(|e| upstream(false, format!("vLLM stream: {e}")))?;
                if v.get("error").is_some() {
                    return Err(upstream(false, error_message(&v)));
                }
                let choice = &v["choices"][0];
                for t in token_ids(&choice["token_ids"]).unwrap_or_default() {
                    if !p.stop_token_ids.contains(&t) {
                        let _ = tx.send(t);
                    }
                    ids.push(t);
                }
                if let Some(f) = choice["finish_reason"].as_str() {
                    finish = Some(f.to_string());
                }
            }
        }
        Ok(generation(ids, vec![], finish.as_deref(), &p.stop_token_ids))
    }

    /// Summed log-probability of each candidate after `[soft prompt ; prompt]` (raw, over the
    /// whole vocabulary, as the embedded engine computes it).
    pub async fn score(&self, req: &GenerationRequest, candidates: &[Vec<u32>]) -> Result<Vec<f32>> {
        // Each distinct prefix of a candidate and the tokens that follow it.
        let mut next: BTreeMap<&[u32], BTreeSet<u32>> = BTreeMap::new();
        for c in candidates {
            for i in 0..c.len() {
                next.entry(&c[..i]).or_default().insert(c[i]);
            }
        }
        let asks: Vec<(&[u32], Vec<u32>)> = next
            .into_iter()
            .flat_map(|(prefix, ids)| ids.into_iter().collect::<Vec<_>>().chunks(MAX_IDS_PER_REQUEST).map(|c| (prefix, c.to_vec())).collect::<Vec<_>>())
            .collect();
        let answers = futures_util::future::try_join_all(asks.iter().map(|(prefix, ids)| async move {
            let fields = json!({"max_tokens": 1, "temperature": 0, "logprobs": ids.len(), "logprob_token_ids": ids, "return_tokens_as_token_ids": true});
            let v = self.post(self.embeds_body(req, prefix, fields)?).await?;
            let top = &v["choices"][0]["logprobs"]["top_logprobs"][0];
            ids.iter()
                .map(|t| top[format!("token_id:{t}")].as_f64().map(|x| ((*prefix, *t), x as f32)).ok_or_else(|| upstream(false, format!("vLLM returned no log-probability for token {t}"))))
                .collect::<Result<Vec<_>>>()
        }))
        .await?;
        let lp: BTreeMap<(&[u32], u32), f32> = answers.into_iter().flatten().collect();
        Ok(candidates.iter().map(|c| (0..c.len()).map(|i| lp[&(&c[..i], c[i])]).sum()).collect())
    }

    /// vLLM's `/health`, within 5 s.
    pub async fn health(&self) -> Result<()> {
        let r = self.http.get(format!("{}/health", self.url)).timeout(Duration::from_secs(5)).send().await.map_err(|e| upstream(false, e.to_string()))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(upstream(false, format!("vLLM /health answered {}", r.status())))
        }
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value> {
    let r = http.get(url).timeout(Duration::from_secs(10)).send().await.map_err(|e| upstream(false, format!("{url}: {e}")))?;
    if !r.status().is_success() {
        return Err(upstream(false, format!("{url} answered {}", r.status())));
    }
    r.json().await.map_err(|e| upstream(false, format!("{url}: {e}")))
}

fn token_ids(v: &Value) -> Result<Vec<u32>> {
    let a = v.as_array().ok_or_else(|| upstream(false, "vLLM's answer has no token_ids"))?;
    a.iter().map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()).ok_or_else(|| upstream(false, "vLLM's token_ids are not token ids"))).collect()
}

/// A [`Generation`] from vLLM's token ids: a trailing stop token is dropped, as the embedded
/// engine never emits it.
fn generation(mut ids: Vec<u32>, mut logprobs: Vec<f32>, finish: Option<&str>, stop_ids: &[u32]) -> Generation {
    if ids.last().is_some_and(|t| stop_ids.contains(t)) {
        ids.pop();
        logprobs.truncate(ids.len());
    }
    let finish_reason = match finish {
        Some("length") => FinishReason::Length,
        Some("abort") => FinishReason::Abort,
        _ => FinishReason::Stop,
    };
    Generation { tokens: ids, logprobs, finish_reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_flag_parses_kind_and_url() {
        assert_eq!("vllm=http://127.0.0.1:8000/".parse::<Upstream>().unwrap(), Upstream { kind: UpstreamKind::Vllm, url: "http://127.0.0.1:8000".into() });
        assert!("tgi=http://x".parse::<Upstream>().unwrap_err().contains("not supported"));
        assert!("vllm=127.0.0.1:8000".parse::<Upstream>().unwrap_err().contains("http://"));
        assert!("http://x".parse::<Upstream>().is_err());
    }

    #[test]
    fn a_trailing_stop_token_is_dropped() {
        let g = generation(vec![5, 6, 2], vec![-0.1, -0.2, -0.3], Some("stop"), &[2]);
        assert_eq!((g.tokens, g.logprobs, g.finish_reason), (vec![5, 6], vec![-0.1, -0.2], FinishReason::Stop));
        assert_eq!(generation(vec![5, 6], vec![], Some("length"), &[2]).finish_reason, FinishReason::Length);
    }
}
