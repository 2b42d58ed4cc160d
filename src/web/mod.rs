//! lopa for Rust web apps (Leptos, Dioxus, Yew): the client as an async API over the browser's
//! own APIs, on a page or in a worker (wasm32, feature `web`; `webgpu` adds the WebGPU device).
//!
//! ```ignore
//! let (options, mut progress) = LoadOptions::default().progress_stream();
//! let client = Client::load(Sources::urls("/m/encoder.safetensors", "/m/tokenizer.json", "/m/sst2.safetensors"), options).await?;
//! let answer = client.complete("http://localhost:8080", &Input::Text("a fine film".into()), &RequestOptions::default()).await?;
//! ```
//!
//! - Weight files download through `fetch` with [`Progress`] (a callback or a `Stream`) and are
//!   kept in the Cache API (`lopa-weights-v1`, shared with the JS package), so a reload
//!   downloads nothing.
//! - WebGPU opens asynchronously; `Backend::Auto` falls back to the CPU and says why.
//! - Requests to `lopa serve` go through `fetch` and carry only the soft prompt and the query.
//! - [`Client::personalize`] trains the adapter here on the user's examples; dropping its future
//!   cancels it, aborting the request in flight, and leaves the client as it was.
//! - Personalised adapters are kept on the device in the origin-private file system ([`opfs`]).
//!
//! Every failure is a [`crate::Error`]: `Fetch` (a URL that could not be fetched, naming it),
//! `Storage` (the origin-private file system), `Endpoint` (`lopa serve` refused), and the model's
//! own errors.

mod gpu;
mod http;
pub mod opfs;
/// The JS package's wasm-bindgen boundary (`pkg/`), on the same device choice.
#[cfg(feature = "browser")]
pub mod package;
mod progress;

pub use gpu::Backend;
pub use http::CACHE;
pub use progress::{File, OnProgress, Progress, ProgressStream};

use crate::adapter::Adapter;
use crate::client::personalize::{LabelledInput, PersonalizeOptions, Personalizer, StepReport};
use crate::client::{Answer, Input, Query, RequestOptions};
use crate::error::{Error, Result};
use crate::wire::GRADIENT_PATH;
use std::rc::Rc;

/// Where a file comes from: a URL (absolute, or relative to the page) or its bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Url(String),
    Bytes(Vec<u8>),
}

impl From<&str> for Source {
    fn from(url: &str) -> Self {
        Source::Url(url.into())
    }
}

impl From<String> for Source {
    fn from(url: String) -> Self {
        Source::Url(url)
    }
}

impl From<Vec<u8>> for Source {
    fn from(bytes: Vec<u8>) -> Self {
        Source::Bytes(bytes)
    }
}

/// The three files of a client: the encoder bundle, its `tokenizer.json`, the adapter bundle
/// (what `lopa export-web` writes).
#[derive(Debug, Clone, PartialEq)]
pub struct Sources {
    pub encoder: Source,
    pub tokenizer: Source,
    pub adapter: Source,
}

impl Sources {
    pub fn urls(encoder: &str, tokenizer: &str, adapter: &str) -> Self {
        Sources { encoder: encoder.into(), tokenizer: tokenizer.into(), adapter: adapter.into() }
    }
}

/// How a client loads.
#[derive(Clone)]
pub struct LoadOptions {
    pub backend: Backend,
    /// Keep downloads in the Cache API and read them from there (default: true).
    pub cache: bool,
    pub on_progress: Option<OnProgress>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { backend: Backend::Auto, cache: true, on_progress: None }
    }
}

impl LoadOptions {
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    pub fn cache(mut self, cache: bool) -> Self {
        self.cache = cache;
        self
    }

    /// Call `f` with every progress event.
    pub fn on_progress(mut self, f: impl Fn(&Progress) + 'static) -> Self {
        self.on_progress = Some(Rc::new(f));
        self
    }

    /// The progress events as a `Stream` instead, which ends when the load does.
    pub fn progress_stream(mut self) -> (Self, ProgressStream) {
        let (callback, stream) = progress::channel();
        self.on_progress = Some(callback);
        (self, stream)
    }
}

/// The client in the browser: the encoder and the adapter's generator on WebGPU or the CPU.
#[derive(Debug, Clone)]
pub struct Client {
    inner: crate::client::Client,
    backend: Backend,
    fallback_reason: Option<String>,
}

impl Client {
    /// Fetch (or take) the three files, open the device and build the client. The files load at
    /// once, while the device opens; each file reports its progress.
    pub async fn load(sources: Sources, options: LoadOptions) -> Result<Self> {
        let cache = if options.cache && sources_have_url(&sources) { http::open_cache().await } else { None };
        let report = |p: &Progress| {
            if let Some(f) = &options.on_progress {
                f(p)
            }
        };
        let file = |file: File, source: Source| {
            let cache = cache.as_ref();
            async move {
                match source {
                    Source::Bytes(bytes) => {
                        report(&Progress { file, loaded: bytes.len() as u64, total: Some(bytes.len() as u64), cached: false });
                        Ok(bytes)
                    }
                    Source::Url(url) => http::download(file, &http::absolute(&url)?, cache, &report).await,
                }
            }
        };
        let Sources { encoder, tokenizer, adapter } = sources;
        let files = futures_util::future::try_join3(file(File::Encoder, encoder), file(File::Tokenizer, tokenizer), file(File::Adapter, adapter));
        // WebGPU opens while the files download.
        let ((encoder, tokenizer, adapter), (device, backend, fallback_reason)) = futures_util::future::try_join(files, gpu::device(options.backend)).await?;
        let inner = crate::client::Client::from_bundles(&encoder, &tokenizer, &adapter, &device)?;
        Ok(Client { inner, backend, fallback_reason })
    }

    /// `WebGpu` or `Cpu`: what runs.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why `Backend::Auto` fell back to the CPU, if it did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// Threads computing on the CPU: the rayon pool's size in a threaded build, else 1.
    pub fn threads(&self) -> usize {
        #[cfg(feature = "parallel")]
        if self.backend == Backend::Cpu {
            return rayon::current_num_threads();
        }
        1
    }

    /// The model side: the encoder, the generator, the adapter's metadata and task.
    pub fn inner(&self) -> &crate::client::Client {
        &self.inner
    }

    /// The soft prompt `[m, d]` of an input, and the query text that goes with it.
    pub async fn soft_prompt(&self, input: &Input) -> Result<Query> {
        self.inner.query_async(input).await
    }

    /// Sentence embeddings of `texts` from the encoder alone, one row each.
    pub async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let h = self.inner.encoder.hidden_size();
        let values = crate::device::to_vec_async(self.inner.encoder.embed(texts, &self.inner.device)?).await?;
        Ok(values.chunks(h.max(1)).map(<[f32]>::to_vec).collect())
    }

    /// Send a query to `lopa serve` at `endpoint` and read its answer with the adapter's task:
    /// the label probabilities of a classifier, or the completion. Streaming is the JS package's
    /// (`options.stream` is refused here).
    pub async fn send(&self, endpoint: &str, query: &Query, options: &RequestOptions) -> Result<Answer> {
        if options.stream {
            return Err(Error::Input("lopa::web reads whole answers; send without `stream`".into()));
        }
        let request = self.inner.request(query, options);
        let (status, body) = http::post_json(&url(endpoint, request.path()), &request.body()).await?;
        self.inner.read_answer(request.path(), status, body.as_bytes())
    }

    /// The soft prompt of `input`, sent to `lopa serve`: [`Client::soft_prompt`] then
    /// [`Client::send`].
    pub async fn complete(&self, endpoint: &str, input: &Input, options: &RequestOptions) -> Result<Answer> {
        let query = self.soft_prompt(input).await?;
        self.send(endpoint, &query, options).await
    }

    /// Personalise the adapter on the user's labelled examples: the generator trains here for
    /// `steps` steps, and `lopa serve` at `endpoint` answers each with dLoss/dZ only. `on_step`
    /// hears each step's loss. Returns the personalised adapter; [`Client::use_adapter`] makes it
    /// this client's. Dropping the future cancels it: the request in flight is aborted, no
    /// further one is sent, and the client is unchanged.
    pub async fn personalize(&self, endpoint: &str, examples: &[LabelledInput], options: PersonalizeOptions, steps: usize, mut on_step: impl FnMut(StepReport)) -> Result<Adapter> {
        let texts = self.inner.training_texts(examples)?;
        let device = self.inner.device.clone().autodiff();
        let mut p = Personalizer::new_async(&self.inner, &texts, options, &device).await?;
        let url = url(endpoint, GRADIENT_PATH);
        for _ in 0..steps {
            let request = p.next_request_async().await?;
            let body = serde_json::to_string(&request).map_err(|e| Error::Input(e.to_string()))?;
            let (status, answer) = http::post_json(&url, &body).await?;
            on_step(p.apply_http(status, answer.as_bytes())?);
        }
        p.adapter_async().await
    }

    /// Make `adapter` this client's (refused when trained with another encoder).
    pub fn use_adapter(&mut self, adapter: Adapter) -> Result<()> {
        self.inner = crate::client::Client::new(self.inner.encoder.clone(), adapter, &self.inner.device)?;
        Ok(())
    }

    /// This client's adapter (read back from the device).
    pub async fn adapter(&self) -> Result<Adapter> {
        Ok(Adapter { meta: self.inner.meta.clone(), weights: self.inner.generator.to_tensors_async().await? })
    }
}

fn sources_have_url(s: &Sources) -> bool {
    [&s.encoder, &s.tokenizer, &s.adapter].iter().any(|s| matches!(s, Source::Url(_)))
}

fn url(endpoint: &str, path: &str) -> String {
    format!("{}{path}", endpoint.trim_end_matches('/'))
}
