// End to end: the demo page in headless Chromium against a real `lopa serve` started here.
// Loads the page, waits for the model, classifies a positive and a negative review through the
// server, checks every request that reaches the server (a soft prompt of the adapter's shape, no
// adapter weights), saves a screenshot, and stops the server with SIGINT.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { serve, browser, check, done, startLopaServe, BUNDLE, ROOT } from './lib.mjs';

const ARTIFACTS = process.env.LOPA_ARTIFACTS || join(ROOT, 'artifacts');
mkdirSync(ARTIFACTS, { recursive: true });
const adapters = JSON.parse(readFileSync(join(BUNDLE, 'adapters.json')));
const sst2 = adapters.find((a) => a.name === 'sst2');
const adapterBytes = readFileSync(join(BUNDLE, sst2.file));

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
  const reviews = [
    ['a warm, funny and beautifully acted film that I loved from start to finish', 'great'],
    ['a dull, tedious mess with wooden acting and a script that goes nowhere', 'terrible'],
  ];
  for (const [text, want] of reviews) {
    const before = await b.page.evaluate(() => window.lopaDemo.runs);
    await b.page.fill('#text', text);
    await b.page.click('#run');
    await b.page.waitForFunction((before) => window.lopaDemo.runs > before, before, { timeout: 120000 });
    const { last, error } = await b.page.evaluate(() => ({ last: window.lopaDemo.last, error: window.lopaDemo.error }));
    const shown = (await b.page.textContent('#answer .label')) || '';
    check(!error && shown === want, `“${text.slice(0, 40)}…” → ${shown || error} (want ${want}; p=${last ? JSON.stringify(last.result.probabilities) : '-'})`);
  }
  await b.page.screenshot({ path: join(ARTIFACTS, 'demo.png'), fullPage: true });

  check(sent.length === 2, `${sent.length} requests reached the server (2 expected)`);
  const computations = await b.page.evaluate(() => window.lopaDemo.computations);
  check(computations === 2, `one soft prompt computed per click (${computations} for 2 clicks)`);
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
  await b.page.fill('#teach-steps', '16');
  await b.page.click('#teach-run');
  await b.page.waitForFunction(() => window.lopaDemo.teach && window.lopaDemo.teach.done, null, { timeout: 300000 });
  const teach = await b.page.evaluate(() => window.lopaDemo.teach);
  const l = teach.losses;
  check(l.length === 16 && l[l.length - 1] < l[0] / 2, `taught in ${l.length} steps, loss ${l[0]?.toFixed(3)} → ${l[l.length - 1]?.toFixed(3)}`);
  const grads = sent.slice(taught);
  check(grads.length === 16 && grads.every((r) => r.url === `${endpoint}/v1/soft_prompt_grad`), `${grads.length} gradient requests went to /v1/soft_prompt_grad`);
  const g = JSON.parse(grads[0].body);
  const keys = [...new Set(g.examples.flatMap((e) => Object.keys(e)))].sort().join(',');
  check(keys === 'prompt,soft_prompt,target' && Object.keys(g).join() === 'examples', `each example sends only its prompt, target and soft prompt (${keys})`);
  check(grads.every((r) => !/task_prompt|u_head|v_head|instance_head/.test(r.body)), 'no adapter weights in any training step');
  const before = await b.page.evaluate(() => window.lopaDemo.runs);
  await b.page.fill('#text', mine[0][0]);
  await b.page.click('#run');
  await b.page.waitForFunction((before) => window.lopaDemo.runs > before, before, { timeout: 120000 });
  const now = (await b.page.textContent('#answer .label')) || '';
  check(now === 'terrible', `after teaching, “${mine[0][0].slice(0, 40)}…” → ${now} (the user's label)`);
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
