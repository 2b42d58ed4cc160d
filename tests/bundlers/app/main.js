// What an app does with the package: load a client and compute one soft prompt. The test reads
// window.lopaResult; ?backend=cpu|webgpu, ?worker=1|0 and ?threads=N choose where it runs (no
// worker parameter: the package's default, a worker for the threaded module).
import { LopaClient } from 'lopa';

const params = new URLSearchParams(location.search);
window.lopaResult = (async () => {
  const client = await LopaClient.load({
    encoder: '/models/encoder.safetensors',
    tokenizer: '/models/tokenizer.json',
    adapter: '/models/adapters/sst2.safetensors',
    backend: params.get('backend') || 'cpu',
    worker: params.has('worker') ? params.get('worker') === '1' : undefined,
    threads: params.has('threads') ? Number(params.get('threads')) : undefined,
  });
  const z = await client.softPrompt(params.get('text') || 'a gripping, funny and deeply moving film');
  const result = { backend: client.backend, threads: client.threads, worker: client.worker, shape: client.shape, data: Array.from(z.data) };
  await client.dispose();
  return result;
})().catch((e) => ({ error: String((e && e.message) || e) }));
