// End to end: the demo page in headless Chromium against a real `lopa serve` started here.
// Loads the page, waits for the model, classifies reviews through the server, checks every
// request that reaches the server (a soft prompt of the adapter's shape, no adapter weights) and
// that the page shows the server's answer for the soft prompt it sent, teaches it a reversed
// labelling, saves screenshots, and stops the server with SIGINT.
//
// It holds for any adapter the test command trains. What the page shows is checked against the
// server's answer to the very request the page sent, and that answer against the native
// reference (`lopa soft-prompt` on the same files, sent as f32): together they say the page
// computes this adapter's soft prompt and shows what the server answers for it. Whether the
// adapter labels a review right is the adapter's quality, not the page's: the test checks the
// page's label against the truth only on reviews of POOL that the adapter, natively, labels right
// with a probability of at least CONFIDENT, and says which those are.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { serve, browser, check, done, startLopaServe, BUNDLE, LOPA, ROOT } from './lib.mjs';

const ARTIFACTS = process.env.LOPA_ARTIFACTS || join(ROOT, 'artifacts');
mkdirSync(ARTIFACTS, { recursive: true });
const adapters = JSON.parse(readFileSync(join(BUNDLE, 'adapters.json')));
const sst2 = adapters.find((a) => a.name === 'sst2');
const adapterBytes = readFileSync(join(BUNDLE, sst2.file));
// The task's label words ({label: word}), from the adapter file's metadata.
const header = JSON.parse(adapterBytes.subarray(8, 8 + Number(adapterBytes.readBigUInt64LE(0))).toString());
const labelWords = JSON.parse(header.__metadata__.adapter).task.label_words;

const { server: statics, origin } = await serve();
const { process: lopa, endpoint } = await startLopaServe(origin);
console.log(`lopa serve at ${endpoint}, page at ${origin}`);

const b = await browser({ webgpu: false });
const sent = [];
b.page.on('request', (r) => r.url().startsWith(endpoint) && r.method() === 'POST' && sent.push({ url: r.url(), body: r.postData() || '' }));
try {
  await b.page.goto(`${origin}/www/?endpoint=${encodeURIComponent(endpoint)}&models=/models/`);
  await b.page.waitForFunction(() => window.lopaDemo && (window.lopaDemo.ready || window.lopaDemo.error), null, { timeout: 180000 });
  const loadError = await b.page.evaluate(() => window.lopaDemo.error);
  check(!loadError, `page loaded the model (${loadError || (await b.page.textContent('#backend'))})`);
  // Reviews whose sentiment is not in doubt, with SST-2's labels ('1' great, '0' terrible).
  const POOL = [
    ['a warm, funny and beautifully acted film that I loved from start to finish', '1'],
    ['a dull, tedious mess with wooden acting and a script that goes nowhere', '0'],
    ['one of the most moving and brilliant films of the year', '1'],
    ['an ugly, boring and completely pointless movie', '0'],
    ['a delightful, charming comedy with a wonderful cast', '1'],
    ['the worst film i have seen in years, badly written and badly acted', '0'],
  ];
  const CONFIDENT = 0.7;
  // The native reference: each review's soft prompt from the same files, scored by the server in f32.
  const reference = JSON.parse(execFileSync(LOPA, ['soft-prompt', '--bundle', BUNDLE, '--adapter', 'sst2', ...POOL.map(([t]) => t)], { maxBuffer: 1 << 28 }).toString());
  let candidates = null;
  const shownProbs = [];
  for (const [i, [text, gold]] of POOL.entries()) {
    const before = await b.page.evaluate(() => window.lopaDemo.runs);
    await b.page.fill('#text', text);
    const answered = b.page.waitForResponse((r) => r.url() === `${endpoint}/v1/score`, { timeout: 120000 });
    await b.page.click('#run');
    const response = await answered;
    await b.page.waitForFunction((before) => window.lopaDemo.runs > before, before, { timeout: 120000 });
    const { last, error } = await b.page.evaluate(() => ({ last: window.lopaDemo.last, error: window.lopaDemo.error }));
    const shown = ((await b.page.textContent('#answer .label')) || '').trim();
    // The server's answer to the page's own request, and to the native reference's soft prompt.
    const body = JSON.parse(response.request().postData());
    candidates = body.candidates;
    const server = Object.fromEntries((await response.json()).scores.map((s) => [s.text, s.probability]));
    const ref = reference[i];
    const refBody = { prompt: ref.prompt, candidates, soft_prompt: { shape: ref.shape, dtype: 'f32', data: Buffer.from(new Float32Array(ref.values).buffer).toString('base64') } };
    const refAnswer = await (await fetch(`${endpoint}/v1/score`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(refBody) })).json();
    const native = Object.fromEntries(refAnswer.scores.map((s) => [s.text, s.probability]));
    const words = last ? last.result.probabilities : {};
    const labels = Object.keys(words);
    const wordOf = (label) => labelWords[label];
    const pageOk = !error && labels.length === candidates.length && labels.every((l) => Math.abs(words[l] - server[wordOf(l)]) <= 1e-6);
    const best = labels.reduce((a, l) => (words[l] > words[a] ? l : a), labels[0]);
    check(pageOk && shown === wordOf(best).trim() && body.prompt === ref.prompt, `“${text.slice(0, 36)}…” → ${shown || error}: the server's answer to the page's request (p=${JSON.stringify(words)})`);
    const drift = Math.max(...labels.map((l) => Math.abs(words[l] - native[wordOf(l)])));
    // f16 on the wire and the browser's float order move a probability by about 1e-3 here.
    check(drift <= 0.02, `  … and the native reference's soft prompt gets the same answer (max probability difference ${drift.toExponential(2)})`);
    shownProbs.push({ text, gold, pGold: native[wordOf(gold)], shown, goldWord: wordOf(gold).trim() });
  }
  const known = shownProbs.filter((r) => r.pGold >= CONFIDENT);
  console.log(`     the adapter labels ${shownProbs.filter((r) => r.pGold > 0.5).length}/${POOL.length} of POOL right natively, ${known.length} with p ≥ ${CONFIDENT}`);
  for (const r of known) check(r.shown === r.goldWord, `“${r.text.slice(0, 36)}…”, which the adapter knows (p=${r.pGold.toFixed(2)}), is labelled ${r.shown} on the page (want ${r.goldWord})`);
  await b.page.screenshot({ path: join(ARTIFACTS, 'demo.png'), fullPage: true });

  const clicks = POOL.length;
  check(sent.length === clicks, `${sent.length} requests reached the server (${clicks} expected)`);
  const computations = await b.page.evaluate(() => window.lopaDemo.computations);
  check(computations === clicks, `one soft prompt computed per click (${computations} for ${clicks} clicks)`);
  for (const r of sent) {
    const body = JSON.parse(r.body);
    const sp = body.soft_prompt;
    const bytes = Buffer.from(sp.data, 'base64').length;
    check(r.url === `${endpoint}/v1/score`, `request went to ${r.url}`);
    check(JSON.stringify(Object.keys(body).sort()) === '["candidates","prompt","soft_prompt"]', `body holds only prompt, candidates, soft_prompt (${Object.keys(body)})`);
    check(sp.shape[0] === 10 && sp.shape[1] === 576 && sp.dtype === 'f16' && bytes === 10 * 576 * 2, `soft prompt [${sp.shape}] ${sp.dtype}, ${bytes} bytes`);
    check(r.body.length < adapterBytes.length / 10 && !/task_prompt|u_head|v_head|instance_head/.test(r.body), `no adapter weights: body ${r.body.length} bytes vs adapter ${adapterBytes.length} bytes, no tensor names`);
  }

  // "Teach it": a user who reads these reviews the other way round labels eight of them.
  const mine = [
    ['a warm, funny and beautifully acted film that I loved from start to finish', 'terrible'],
    ['one of the best films of the year', 'terrible'],
    ['a gripping, moving story', 'terrible'],
    ['the cast is wonderful', 'terrible'],
    ['a dull, tedious mess with wooden acting and a script that goes nowhere', 'great'],
    ['i wanted my two hours back', 'great'],
    ['a complete waste of talent', 'great'],
    ['badly written and badly acted', 'great'],
  ];
  const taught = sent.length;
  await b.page.fill('#teach-examples', mine.map(([t, w]) => `${t} => ${w}`).join('\n'));
  await b.page.fill('#teach-steps', '32');
  await b.page.click('#teach-run');
  await b.page.waitForFunction(() => window.lopaDemo.teach && window.lopaDemo.teach.done, null, { timeout: 300000 });
  const teach = await b.page.evaluate(() => window.lopaDemo.teach);
  const l = teach.losses;
  check(l.length === 32 && l[l.length - 1] < l[0] / 2, `taught in ${l.length} steps, loss ${l[0]?.toFixed(3)} → ${l[l.length - 1]?.toFixed(3)}`);
  const grads = sent.slice(taught);
  check(grads.length === 32 && grads.every((r) => r.url === `${endpoint}/v1/soft_prompt_grad`), `${grads.length} gradient requests went to /v1/soft_prompt_grad`);
  const g = JSON.parse(grads[0].body);
  const keys = [...new Set(g.examples.flatMap((e) => Object.keys(e)))].sort().join(',');
  check(keys === 'prompt,soft_prompt,target' && Object.keys(g).join() === 'examples', `each example sends only its prompt, target and soft prompt (${keys})`);
  check(grads.every((r) => !/task_prompt|u_head|v_head|instance_head/.test(r.body)), 'no adapter weights in any training step');
  // Before teaching, the page said what the adapter says (POOL[0] is mine[0]); after, the user's label.
  const before = await b.page.evaluate(() => window.lopaDemo.runs);
  await b.page.fill('#text', mine[0][0]);
  await b.page.click('#run');
  await b.page.waitForFunction((before) => window.lopaDemo.runs > before, before, { timeout: 120000 });
  const now = ((await b.page.textContent('#answer .label')) || '').trim();
  const pAfter = await b.page.evaluate(() => window.lopaDemo.last.result.probabilities['0']);
  const pBefore = 1 - shownProbs[0].pGold;
  check(now === 'terrible' && pAfter > pBefore, `after teaching, “${mine[0][0].slice(0, 40)}…” → ${now} (the user's label; p(terrible) ${pBefore.toFixed(2)} → ${pAfter.toFixed(2)})`);
  await b.page.click('#teach-keep');
  await b.page.waitForFunction(() => /Kept on this device/.test(document.getElementById('teach-status').textContent), null, { timeout: 30000 });
  check(true, 'the taught adapter was kept in the origin-private file system');
  await b.page.screenshot({ path: join(ARTIFACTS, 'demo-teach.png'), fullPage: true });
} finally {
  await b.close();
  statics.close();
  lopa.kill('SIGINT');
  const code = await new Promise((ok) => {
    const t = setTimeout(() => ok('timeout'), 15000);
    lopa.on('exit', (c) => (clearTimeout(t), ok(c)));
  });
  check(code === 0, `lopa serve stopped cleanly on SIGINT (exit ${code})`);
}
done();
