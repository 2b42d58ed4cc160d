// The demo: the encoder and a task adapter run in this page (in a Web Worker, on WebGPU when the
// browser has it); the server only ever sees the query and the soft prompt.
import { LopaClient, saveAdapter } from '../pkg/index.js';

const params = new URLSearchParams(location.search);
const endpoint = params.get('endpoint') || 'http://127.0.0.1:8080';
const models = params.get('models') || '../models/';
const backend = params.get('backend') || 'auto';
const $ = (id) => document.getElementById(id);

let client = null;
let adapters = [];
const state = { ready: false, last: null, error: null, runs: 0, computations: 0, teach: null };
window.lopaDemo = state;

function status(text, error = false) {
  $('status').textContent = text;
  $('status').className = error ? 'error' : '';
  if (error) state.error = text;
}

async function load(name) {
  const entry = adapters.find((a) => a.name === name);
  state.ready = false;
  $('run').disabled = $('text').disabled = true;
  if (client) await client.dispose();
  const loaded = {};
  const t0 = performance.now();
  status(`Loading the encoder and the ${name} adapter…`);
  try {
    client = await LopaClient.load({
      encoder: models + 'encoder.safetensors',
      tokenizer: models + 'tokenizer.json',
      adapter: models + entry.file,
      backend,
      worker: true,
      onProgress: (p) => {
        loaded[p.file] = p;
        const all = Object.values(loaded);
        const total = all.reduce((s, x) => s + (x.total || 0), 0);
        const done = all.reduce((s, x) => s + x.loaded, 0);
        $('bar').style.width = `${total ? (100 * done) / total : 0}%`;
        const cached = all.length && all.every((x) => x.cached);
        status(cached ? 'Loading from the browser cache…' : `Downloading ${(done / 1e6).toFixed(1)} / ${(total / 1e6).toFixed(1)} MB…`);
      },
    });
  } catch (e) {
    status(e.message, true);
    $('backend').textContent = 'backend: failed';
    return;
  }
  $('bar').style.width = '100%';
  const b = client.backend;
  $('backend').textContent = `backend: ${b === 'webgpu' ? 'WebGPU' : client.threads > 1 ? `CPU (wasm, ${client.threads} threads)` : 'CPU (wasm)'}`;
  $('backend').className = `pill ${b}`;
  $('backend').title = client.fallbackReason ? `WebGPU unavailable: ${client.fallbackReason}` : '';
  $('adapter-bytes').textContent = `${entry.bytes.toLocaleString()} bytes, ${entry.trainable_parameters.toLocaleString()} parameters`;
  const task = client.adapter.task;
  $('text').placeholder = task.kind === 'classification' ? `Input for ${task.name}, e.g. “a warm, funny and beautifully acted film”` : `Input for ${task.name}`;
  status(`Ready: ${entry.method} adapter for ${task.name} (${task.kind}) loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s. Server: ${endpoint}`);
  $('run').disabled = $('text').disabled = false;
  $('teach-words').textContent = Object.values(task.label_words).map((w) => w.trim()).join(' / ');
  $('teach-examples').disabled = $('teach-run').disabled = task.kind !== 'classification';
  state.ready = true;
}

/** The examples typed in the teach box: [{input, label}], label words mapped to label values. */
function teachExamples(task) {
  const byWord = Object.fromEntries(Object.entries(task.label_words).map(([label, word]) => [word.trim().toLowerCase(), label]));
  return $('teach-examples').value.split('\n').filter((l) => l.trim()).map((line, i) => {
    const cut = line.lastIndexOf('=>');
    const word = cut < 0 ? '' : line.slice(cut + 2).trim().toLowerCase();
    if (!(word in byWord)) throw new Error(`line ${i + 1}: end it with => and one of ${Object.keys(byWord).join(' / ')}`);
    return { input: line.slice(0, cut).trim(), label: byWord[word] };
  });
}

function drawLoss(losses) {
  const c = $('teach-loss');
  const ctx = c.getContext('2d');
  ctx.clearRect(0, 0, c.width, c.height);
  const top = Math.max(...losses, 1e-6);
  ctx.beginPath();
  losses.forEach((l, i) => ctx[i ? 'lineTo' : 'moveTo']((i / Math.max(losses.length - 1, 1)) * (c.width - 4) + 2, c.height - 2 - (l / top) * (c.height - 4)));
  ctx.stroke();
}

let stop = null;
async function teach() {
  const task = client.adapter.task;
  let examples;
  try {
    examples = teachExamples(task);
  } catch (e) {
    $('teach-status').textContent = e.message;
    return;
  }
  const steps = Number($('teach-steps').value) || 16;
  stop = new AbortController();
  $('teach-run').disabled = $('run').disabled = true;
  $('teach-stop').disabled = false;
  const losses = [];
  state.teach = { done: false, losses, examples: examples.length };
  try {
    const r = await client.personalize(endpoint, examples, {
      steps, learningRate: 3e-3, batchSize: 8, signal: stop.signal,
      onStep: ({ step, loss, seconds }) => {
        losses.push(loss);
        drawLoss(losses);
        $('teach-status').textContent = `step ${step} of ${steps}: loss ${loss.toFixed(3)} (${seconds.toFixed(2)} s)`;
      },
    });
    $('teach-status').textContent = `Taught in ${r.steps} steps (loss ${losses[0]?.toFixed(3)} → ${r.loss?.toFixed(3)}). Answers now come from your adapter.`;
    $('teach-keep').disabled = false;
  } catch (e) {
    $('teach-status').textContent = e.message;
    state.error = e.message;
  } finally {
    state.teach.done = true;
    $('teach-run').disabled = $('run').disabled = false;
    $('teach-stop').disabled = true;
  }
}

async function keep() {
  const name = `${$('task').value}-mine`;
  await saveAdapter(name, await client.exportAdapter());
  $('teach-status').textContent = `Kept on this device as “${name}” (the origin-private file system); it was never sent anywhere.`;
}

function heatmap(data, [m, d]) {
  const canvas = $('heatmap');
  canvas.width = d;
  canvas.height = m;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(d, m);
  let scale = 0;
  for (const v of data) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < data.length; i++) {
    const t = data[i] / (scale || 1); // -1 blue … 0 white … 1 red
    const [r, g, b] = t >= 0 ? [255, 255 * (1 - t), 255 * (1 - t)] : [255 * (1 + t), 255 * (1 + t), 255];
    img.data.set([r, g, b, 255], i * 4);
  }
  ctx.putImageData(img, 0, 0);
}

function showAnswer(result, task) {
  const el = $('answer');
  el.replaceChildren();
  if (result.kind === 'classification') {
    const word = (l) => task.label_words[l].trim();
    const head = document.createElement('div');
    head.className = 'label';
    head.textContent = word(result.label);
    head.dataset.label = result.label;
    el.append(head);
    for (const [l, p] of Object.entries(result.probabilities)) {
      const row = document.createElement('div');
      row.className = 'prob';
      row.innerHTML = `<span style="width:6rem"></span><span class="b" style="width:${Math.round(300 * p)}px"></span><span></span>`;
      row.children[0].textContent = word(l);
      row.children[2].textContent = `${(100 * p).toFixed(1)}%`;
      el.append(row);
    }
  } else {
    const pre = document.createElement('pre');
    pre.id = 'generated';
    pre.textContent = result.text;
    el.append(pre);
  }
}

async function run() {
  const text = $('text').value;
  $('run').disabled = true;
  state.error = null;
  try {
    const task = client.adapter.task;
    // One soft prompt per click: the request is encoded once, shown, drawn and sent as it is.
    const t0 = performance.now();
    const request = await client.encodeRequest(text, { stream: task.kind === 'generation' || undefined });
    const ms = performance.now() - t0;
    // The soft prompt as the body carries it (its values after the wire's dtype).
    const sp = request.softPrompt;
    $('result').hidden = false;
    heatmap(sp.data, sp.shape);
    $('sp-info').textContent = `[${sp.shape.join(' × ')}] computed on this device in ${ms.toFixed(0)} ms (${client.backend}); ${client.computations} so far`;
    $('wire-path').textContent = `POST ${endpoint}${request.path} (${request.kind})`;
    $('wire-bytes').textContent = `${request.body.length.toLocaleString()} bytes`;
    const shown = JSON.parse(new TextDecoder().decode(request.body));
    $('wire-shape').textContent = `[${sp.shape.join(', ')}], ${sp.dtype}, base64`;
    shown.soft_prompt.data = shown.soft_prompt.data.slice(0, 96) + `… (${shown.soft_prompt.data.length} base64 characters)`;
    $('wire-body').textContent = JSON.stringify(shown, null, 2);
    let streamed = '';
    const onToken = task.kind === 'generation' ? (piece) => showAnswer({ kind: 'generation', text: (streamed += piece) }, task) : undefined;
    const result = await client.send(endpoint, request, { onToken });
    showAnswer(result, task);
    state.last = { softPromptMs: ms, shape: sp.shape, requestBytes: request.body.length, result };
    state.computations = client.computations;
    state.runs++;
    status(`Answered by ${endpoint}.`);
  } catch (e) {
    status(e.message, true);
    state.runs++;
  } finally {
    $('run').disabled = false;
  }
}

async function main() {
  try {
    const r = await fetch(models + 'adapters.json');
    if (!r.ok) throw new Error(`${models}adapters.json: HTTP ${r.status} (run scripts/run.sh to export the adapters)`);
    adapters = await r.json();
  } catch (e) {
    return status(e.message, true);
  }
  if (!adapters.length) return status('No adapters exported yet (scripts/run.sh trains and exports one).', true);
  for (const a of adapters) $('task').append(new Option(`${a.task} (${a.kind}, ${a.method})`, a.name));
  $('task').onchange = () => load($('task').value);
  $('run').onclick = run;
  $('teach-run').onclick = teach;
  $('teach-stop').onclick = () => stop && stop.abort();
  $('teach-keep').onclick = keep;
  $('text').onkeydown = (e) => e.key === 'Enter' && (e.ctrlKey || e.metaKey) && run();
  await load(adapters[0].name);
}

main();
