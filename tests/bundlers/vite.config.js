// The package's worker is an ES module that loads the wasm glue on demand: Vite must build
// workers as ES modules (its default, iife, cannot code-split).
export default {
  root: 'app',
  build: { outDir: '../dist-vite', emptyOutDir: true },
  worker: { format: 'es' },
};
