// What an app does with the package: load a client and compute one soft prompt. The test reads
// window.lopaResult; ?backend=cpu|webgpu and ?worker=1 choose where it runs.
import { LopaClient } from 'lopa';

const params = new URLSearchParams(location.search);
window.lopaResult = (async () => {
  const client = await LopaClient.load({
    encoder: '/models/encoder.safetensors',
    tokenizer: '/models/tokenizer.json',
    adapter: '/models/adapters/sst2.safetensors',
    backend: params.get('backend') || 'cpu',
    worker: params.get('worker') === '1',
  });
  const z = await client.softPrompt(params.get('text') || 'a gripping, funny and deeply moving film');
  const result = { backend: client.backend, shape: client.shape, data: Array.from(z.data) };
  await client.dispose();
  return result;
})().catch((e) => ({ error: String((e && e.message) || e) }));
