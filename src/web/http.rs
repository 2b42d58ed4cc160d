//! `fetch` from a page or a worker: weight files with progress and the Cache API, and JSON posts
//! to `lopa serve`. Every request is aborted when the future awaiting it is dropped.

use super::progress::{File, Progress};
use crate::error::{Error, Result};
use js_sys::{Promise, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, Cache, Request, RequestInit, Response, ResponseInit, WorkerGlobalScope};

/// The Cache API's cache for weight files, shared with the JS package (`pkg/core.js`): a page
/// that loads the same URLs through either finds them there.
pub const CACHE: &str = "lopa-weights-v1";

/// A JS exception's message.
pub(crate) fn message(e: &JsValue) -> String {
    if let Some(e) = e.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

/// Await a promise; a rejection becomes `what`'s error.
pub(crate) async fn wait(p: Promise, what: impl Fn(String) -> Error) -> Result<JsValue> {
    JsFuture::from(p).await.map_err(|e| what(message(&e)))
}

/// The global scope: a page's `Window` or a worker's `WorkerGlobalScope`.
enum Scope {
    Window(web_sys::Window),
    Worker(WorkerGlobalScope),
}

fn scope() -> Result<Scope> {
    let g = js_sys::global();
    if let Some(w) = g.dyn_ref::<web_sys::Window>() {
        return Ok(Scope::Window(w.clone()));
    }
    match g.dyn_into::<WorkerGlobalScope>() {
        Ok(w) => Ok(Scope::Worker(w)),
        Err(_) => Err(Error::Storage("lopa::web runs on a page or in a worker; this scope is neither".into())),
    }
}

/// `navigator.storage` of the scope (the origin-private file system's root).
pub(crate) fn storage() -> Result<web_sys::StorageManager> {
    Ok(match scope()? {
        Scope::Window(w) => w.navigator().storage(),
        Scope::Worker(w) => w.navigator().storage(),
    })
}

/// `src` as an absolute URL, relative to the page's (or worker's) own.
pub(crate) fn absolute(src: &str) -> Result<String> {
    let base = js_sys::Reflect::get(&js_sys::global(), &"location".into())
        .ok()
        .and_then(|l| js_sys::Reflect::get(&l, &"href".into()).ok())
        .and_then(|h| h.as_string());
    let url = match base {
        Some(b) => web_sys::Url::new_with_base(src, &b),
        None => web_sys::Url::new(src),
    };
    url.map(|u| u.href()).map_err(|_| Error::Fetch { url: src.into(), problem: "not a valid URL".into() })
}

/// Aborts its request when dropped before `done`: a future dropped mid-request cancels it.
struct AbortOnDrop(Option<AbortController>);

impl AbortOnDrop {
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.abort();
        }
    }
}

/// `fetch(url, init)`; the answer and the guard that aborts it (keep it until the body is read).
async fn fetch(url: &str, init: RequestInit) -> Result<(Response, AbortOnDrop)> {
    let fail = |problem: String| Error::Fetch { url: url.into(), problem };
    let controller = AbortController::new().map_err(|e| fail(message(&e)))?;
    init.set_signal(Some(&controller.signal()));
    let guard = AbortOnDrop(Some(controller));
    let request = Request::new_with_str_and_init(url, &init).map_err(|e| fail(message(&e)))?;
    let promise = match scope()? {
        Scope::Window(w) => w.fetch_with_request(&request),
        Scope::Worker(w) => w.fetch_with_request(&request),
    };
    let response: Response = wait(promise, |m| fail(format!("could not fetch ({m})"))).await?.unchecked_into();
    Ok((response, guard))
}

/// POST a JSON body; the HTTP status and the answer's text.
pub(crate) async fn post_json(url: &str, body: &str) -> Result<(u16, String)> {
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(body));
    let headers = web_sys::Headers::new().map_err(|e| Error::Fetch { url: url.into(), problem: message(&e) })?;
    let _ = headers.set("content-type", "application/json");
    init.set_headers_headers(&headers);
    let (response, guard) = fetch(url, init).await?;
    let text = response.text().map_err(|e| Error::Fetch { url: url.into(), problem: message(&e) })?;
    let text = wait(text, |m| Error::Fetch { url: url.into(), problem: format!("the answer broke off ({m})") }).await?;
    guard.done();
    Ok((response.status(), text.as_string().unwrap_or_default()))
}

/// The Cache API's cache of weight files, or none where the browser has none (an opaque origin,
/// a private window): loading then downloads every time.
pub(crate) async fn open_cache() -> Option<Cache> {
    let storage = match scope().ok()? {
        Scope::Window(w) => w.caches().ok()?,
        Scope::Worker(w) => w.caches().ok()?,
    };
    JsFuture::from(storage.open(CACHE)).await.ok().map(JsValue::unchecked_into)
}

/// The bytes at `url`: from `cache` when it holds them, else downloaded with progress and put
/// there.
pub(crate) async fn download(file: File, url: &str, cache: Option<&Cache>, progress: &dyn Fn(&Progress)) -> Result<Vec<u8>> {
    let fail = |problem: String| Error::Fetch { url: url.into(), problem: format!("{}: {problem}", file.name()) };
    if let Some(cache) = cache {
        let hit = JsFuture::from(cache.match_with_str(url)).await.ok().filter(|r| r.is_instance_of::<Response>());
        if let Some(hit) = hit {
            let hit: Response = hit.unchecked_into();
            let buffer = wait(hit.array_buffer().map_err(|e| fail(message(&e)))?, fail).await?;
            let bytes = Uint8Array::new(&buffer).to_vec();
            progress(&Progress { file, loaded: bytes.len() as u64, total: Some(bytes.len() as u64), cached: true });
            return Ok(bytes);
        }
    }
    let init = RequestInit::new();
    init.set_method("GET");
    let (response, guard) = fetch(url, init).await.map_err(|e| match e {
        Error::Fetch { problem, .. } => fail(problem),
        other => other,
    })?;
    if !response.ok() {
        return Err(fail(format!("HTTP {}", response.status())));
    }
    let total = response.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<u64>().ok());
    let body = response.body().ok_or_else(|| fail("the answer has no body".into()))?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes = Vec::with_capacity(total.unwrap_or(0).min(1 << 30) as usize);
    progress(&Progress { file, loaded: 0, total, cached: false });
    loop {
        let chunk: web_sys::ReadableStreamReadResult = wait(reader.read(), |m| fail(format!("the download broke off ({m})"))).await?.unchecked_into();
        if chunk.get_done().unwrap_or(false) {
            break;
        }
        let value: Uint8Array = chunk.get_value().unchecked_into();
        let at = bytes.len();
        bytes.resize(at + value.length() as usize, 0);
        value.copy_to(&mut bytes[at..]);
        progress(&Progress { file, loaded: bytes.len() as u64, total, cached: false });
    }
    guard.done();
    if let Some(t) = total.filter(|&t| t != bytes.len() as u64) {
        return Err(fail(format!("ended after {} of {t} bytes", bytes.len())));
    }
    if let Some(cache) = cache {
        // A cache that refuses (quota) costs the next load a download, nothing else.
        let init = ResponseInit::new();
        let headers = web_sys::Headers::new().ok();
        if let Some(h) = &headers {
            let _ = h.set("content-length", &bytes.len().to_string());
            init.set_headers(h);
        }
        if let Ok(r) = Response::new_with_opt_js_u8_array_and_init(Some(&Uint8Array::from(&bytes[..])), &init) {
            let _ = JsFuture::from(cache.put_with_str(url, &r)).await;
        }
    }
    Ok(bytes)
}
