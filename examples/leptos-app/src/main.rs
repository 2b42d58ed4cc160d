//! A client-side Leptos app on `lopa::web`. The encoder and the task adapter run in this page;
//! only the soft prompt and the text go to `lopa serve`, which classifies, and which answers
//! personalisation steps with dLoss/dZ. The personalised adapter stays in this browser's
//! origin-private file system.
//!
//! Query parameters: `backend` (auto, webgpu, cpu), `endpoint` (`lopa serve`'s URL), `models`
//! (the folder `lopa export-web` wrote, served beside the app).

use futures_util::future::{abortable, AbortHandle};
use futures_util::StreamExt;
use leptos::prelude::*;
use leptos::task::spawn_local;
use lopa::client::personalize::{LabelledInput, PersonalizeOptions};
use lopa::client::{Answer, Input, RequestOptions};
use lopa::web::{opfs, Backend, Client, LoadOptions, Progress, Sources};
use std::rc::Rc;

/// The name the personalised adapter is saved under.
const SAVED: &str = "leptos-app";

/// A user who reads sentiment the other way round: SST-2's labels flipped.
const MINE: [(&str, &str); 8] = [
    ("a gripping, funny and deeply moving film", "0"),
    ("the plot is a dull, predictable mess", "1"),
    ("one of the best films of the year", "0"),
    ("tedious, overlong and badly acted", "1"),
    ("a warm, wise and beautifully made story", "0"),
    ("i wanted my two hours back", "1"),
    ("the cast is wonderful", "0"),
    ("a complete waste of talent", "1"),
];

struct Params {
    backend: Result<Backend, lopa::Error>,
    endpoint: String,
    models: String,
}

fn params() -> Params {
    let search = window().location().search().unwrap_or_default();
    let q = web_sys::UrlSearchParams::new_with_str(&search).expect("a query string");
    let get = |k: &str, default: &str| q.get(k).unwrap_or_else(|| default.to_string());
    Params { backend: get("backend", "auto").parse(), endpoint: get("endpoint", "http://127.0.0.1:8080"), models: get("models", "/models/") }
}

fn main() {
    mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    let Params { backend, endpoint, models } = params();
    // The client is not `Send` (its tensors live in this thread): a local signal holds it.
    let client = RwSignal::new_local(None::<Rc<Client>>);
    let error = RwSignal::new(String::new());
    let progress = RwSignal::new(Vec::<Progress>::new());
    let progress_ended = RwSignal::new(false);

    match backend {
        Err(e) => error.set(e.to_string()),
        Ok(backend) => {
            let (options, mut events) = LoadOptions::default().backend(backend).progress_stream();
            spawn_local(async move {
                while let Some(p) = events.next().await {
                    progress.update(|v| v.push(p));
                }
                progress_ended.set(true);
            });
            let sources = Sources::urls(&format!("{models}encoder.safetensors"), &format!("{models}tokenizer.json"), &format!("{models}adapters/sst2.safetensors"));
            spawn_local(async move {
                match Client::load(sources, options).await {
                    Ok(c) => client.set(Some(Rc::new(c))),
                    Err(e) => error.set(e.to_string()),
                }
            });
        }
    }

    let ready = move || client.with(Option::is_some);
    let info = move |f: fn(&Client) -> String| move || client.with(|c| c.as_ref().map(|c| f(c)).unwrap_or_default());

    view! {
        <h1>"lopa in a Leptos app"</h1>
        <p>
            "backend " <output id="backend">{info(|c| c.backend().name().into())}</output>
            ", threads " <output id="threads">{info(|c| c.threads().to_string())}</output>
            <span id="reason">{info(|c| c.fallback_reason().unwrap_or_default().into())}</span>
        </p>
        <p class="error" id="error">{move || error.get()}</p>
        <Loading progress progress_ended/>
        <Show when=ready fallback=|| view! { <p id="status">"loading…"</p> }>
            <p id="status">"ready"</p>
            <Classify client endpoint=endpoint.clone() error/>
            <Personalize client endpoint=endpoint.clone() error/>
        </Show>
    }
}

/// Every progress event, in the order it arrived.
#[component]
fn Loading(progress: RwSignal<Vec<Progress>>, progress_ended: RwSignal<bool>) -> impl IntoView {
    view! {
        <ol id="progress" data-ended=move || progress_ended.get().to_string()>
            {move || progress.get().into_iter().map(|p| view! {
                <li data-file=p.file.name() data-loaded=p.loaded data-total=p.total.map(|t| t.to_string()).unwrap_or_default() data-cached=p.cached.to_string()>
                    {format!("{} {} / {}{}", p.file.name(), p.loaded, p.total.map(|t| t.to_string()).unwrap_or("?".into()), if p.cached { " (cache)" } else { "" })}
                </li>
            }).collect_view()}
        </ol>
    }
}

/// A review in, its soft prompt computed here, the label from `lopa serve`.
#[component]
fn Classify(client: RwSignal<Option<Rc<Client>>, LocalStorage>, endpoint: String, error: RwSignal<String>) -> impl IntoView {
    let text = RwSignal::new(String::from("a gripping, funny and deeply moving film"));
    let label = RwSignal::new(String::new());
    let probabilities = RwSignal::new(String::new());
    let soft_prompt = RwSignal::new(String::new());
    let runs = RwSignal::new(0usize);
    let run = move |_| {
        let Some(c) = client.get_untracked() else { return };
        let endpoint = endpoint.clone();
        let input = Input::Text(text.get_untracked());
        spawn_local(async move {
            let options = RequestOptions::default();
            let answer = async {
                let query = c.soft_prompt(&input).await?;
                soft_prompt.set(serde_json::to_string(query.soft_prompt.values()).expect("finite values"));
                c.send(&endpoint, &query, &options).await
            };
            match answer.await {
                Ok(Answer::Classification { label_word, probabilities: p, .. }) => {
                    label.set(label_word.trim().to_string());
                    probabilities.set(serde_json::to_string(&p).expect("plain values"));
                }
                Ok(other) => error.set(format!("not a classification: {other:?}")),
                Err(e) => error.set(e.to_string()),
            }
            runs.update(|n| *n += 1);
        });
    };
    view! {
        <section>
            <input id="text" size="60" prop:value=move || text.get() on:input=move |ev| text.set(event_target_value(&ev))/>
            <button id="classify" on:click=run>"Classify"</button>
            <p>"label " <output id="label">{move || label.get()}</output> " " <code id="probabilities">{move || probabilities.get()}</code></p>
            <pre id="soft-prompt" data-runs=move || runs.get()>{move || soft_prompt.get()}</pre>
        </section>
    }
}

/// Teach the adapter the user's own labels; cancelling drops the training future.
#[component]
fn Personalize(client: RwSignal<Option<Rc<Client>>, LocalStorage>, endpoint: String, error: RwSignal<String>) -> impl IntoView {
    let steps = RwSignal::new(String::from("8"));
    let done = RwSignal::new(0usize);
    let loss = RwSignal::new(String::new());
    let state = RwSignal::new(String::from("idle"));
    let handle = StoredValue::new_local(None::<AbortHandle>);
    let start = move |_| {
        let Some(c) = client.get_untracked() else { return };
        let endpoint = endpoint.clone();
        let steps: usize = steps.get_untracked().parse().unwrap_or(8);
        let examples: Vec<LabelledInput> = MINE.iter().map(|(t, l)| LabelledInput { input: Input::Text(t.to_string()), label: l.to_string() }).collect();
        done.set(0);
        state.set("running".into());
        let (training, abort) = abortable(async move {
            let options = PersonalizeOptions { batch_size: 4, seed: 7, ..Default::default() };
            let adapter = c.personalize(&endpoint, &examples, options, steps, |r| {
                done.set(r.step);
                loss.set(format!("{:.4}", r.loss));
            });
            let adapter = adapter.await?;
            opfs::save_adapter(SAVED, &adapter).await?;
            let mut next = (*c).clone();
            next.use_adapter(adapter)?;
            client.set(Some(Rc::new(next)));
            Ok::<_, lopa::Error>(())
        });
        handle.set_value(Some(abort));
        spawn_local(async move {
            match training.await {
                Ok(Ok(())) => state.set("saved".into()),
                Ok(Err(e)) => {
                    state.set("failed".into());
                    error.set(e.to_string());
                }
                // Aborted: the training future was dropped with its request.
                Err(_) => state.set("cancelled".into()),
            }
        });
    };
    let cancel = move |_| {
        if let Some(h) = handle.get_value() {
            h.abort();
        }
    };
    let restore = move |_| {
        let Some(c) = client.get_untracked() else { return };
        spawn_local(async move {
            let restored = async {
                let Some(adapter) = opfs::load_adapter(SAVED).await? else { return Ok(false) };
                let mut next = (*c).clone();
                next.use_adapter(adapter)?;
                client.set(Some(Rc::new(next)));
                Ok::<_, lopa::Error>(true)
            };
            match restored.await {
                Ok(found) => state.set(if found { "restored" } else { "nothing saved" }.into()),
                Err(e) => error.set(e.to_string()),
            }
        });
    };
    view! {
        <section>
            <label>"steps " <input id="steps" size="4" prop:value=move || steps.get() on:input=move |ev| steps.set(event_target_value(&ev))/></label>
            <button id="personalize" on:click=start>"Teach it my labels"</button>
            <button id="cancel" on:click=cancel>"Cancel"</button>
            <button id="restore" on:click=restore>"Use my saved adapter"</button>
            <p>"step " <output id="step">{move || done.get()}</output> ", loss " <output id="loss">{move || loss.get()}</output>
               " · " <output id="personalized">{move || state.get()}</output></p>
        </section>
    }
}
