// Nothing package-specific: webpack 5 emits the .wasm files and the worker from the package's
// `new URL('…', import.meta.url)` references.
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
export default {
  mode: 'production',
  entry: join(here, 'app/main.js'),
  output: { path: join(here, 'dist-webpack'), filename: 'main.js', publicPath: 'auto', clean: true },
};
