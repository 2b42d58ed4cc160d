// Web Worker host: runs Core off the page's thread so the page never freezes. Messages are
// {id, method, args}; replies {id, result} or {id, error}; load progress as {progress}. Every
// method but the lifecycle's goes through Core.call, so a new one needs nothing here.
import { Core, transferables } from './core.js';

let core = null;

const LIFECYCLE = {
  async load(options) {
    core?.dispose();
    core = await Core.load({ ...options, onProgress: (p) => self.postMessage({ progress: p }) });
    return core.info();
  },
  info: () => live().info(),
  dispose() {
    core?.dispose();
    core = null;
  },
};

function live() {
  if (!core) throw new Error('lopa: the client is not loaded (or was disposed)');
  return core;
}

self.onmessage = async ({ data: { id, method, args } }) => {
  try {
    const result = Object.hasOwn(LIFECYCLE, method) ? await LIFECYCLE[method](...args) : await live().call(method, ...args);
    self.postMessage({ id, result }, transferables(result));
  } catch (e) {
    self.postMessage({ id, error: e && e.message ? e.message : String(e) });
  }
};
