// Web Worker host: runs Core off the page's thread so the page never freezes. Messages are
// {id, method, args}; replies {id, result} or {id, error}; load progress as {progress}.
import { Core } from './core.js';

let core = null;

self.onmessage = async ({ data: { id, method, args } }) => {
  try {
    let result;
    let transfer = [];
    if (method === 'load') {
      core?.dispose();
      core = await Core.load({ ...args[0], onProgress: (p) => self.postMessage({ progress: p }) });
      result = core.info();
    } else if (!core) {
      throw new Error('lopa: the client is not loaded (or was disposed)');
    } else if (method === 'softPrompt') {
      result = await core.softPrompt(args[0]);
      transfer = [result.data.buffer];
    } else if (method === 'embed') {
      result = await core.embed(args[0]);
      transfer = [result.data.buffer];
    } else if (method === 'encodeRequest') {
      result = await core.encodeRequest(args[0], args[1]);
      transfer = [result.body.buffer];
    } else if (['readAnswer', 'readChunk', 'personalizeStart', 'personalizeRequest', 'personalizeApply', 'personalizeFinish', 'importAdapter'].includes(method)) {
      result = await core[method](...args);
    } else if (method === 'exportAdapter') {
      result = await core.exportAdapter();
      transfer = [result.buffer];
    } else if (method === 'info') {
      result = core.info();
    } else if (method === 'dispose') {
      core.dispose();
      core = null;
    } else {
      throw new Error(`lopa: unknown worker method \`${method}\``);
    }
    self.postMessage({ id, result }, transfer);
  } catch (e) {
    self.postMessage({ id, error: e && e.message ? e.message : String(e) });
  }
};
