/** A weight source: a URL (fetched with progress, kept in the Cache API) or the bytes themselves. */
export type Source = string | URL | Uint8Array | ArrayBuffer;

/** Download progress of one file. `total` is null when the server sends no Content-Length. */
export interface Progress {
  file: 'encoder' | 'tokenizer' | 'adapter';
  loaded: number;
  total: number | null;
  /** True when the bytes came from the Cache API (no download). */
  cached: boolean;
}

export interface LoadOptions {
  /** Encoder bundle written by `lopa export-web` (encoder.safetensors). */
  encoder: Source;
  /** The encoder's tokenizer.json. */
  tokenizer: Source;
  /** Adapter bundle written by `lopa export-web --adapter` (adapter.safetensors). */
  adapter: Source;
  /** 'auto' (default): WebGPU when it works, else the CPU. */
  backend?: 'auto' | 'webgpu' | 'cpu';
  /**
   * Threads of the CPU module: default the logical cores up to 8 where the page is cross-origin
   * isolated (the threaded module, `lopa_cpu_mt_bg.wasm`), else 1. 1 picks the single-threaded module.
   */
  threads?: number;
  onProgress?: (p: Progress) => void;
  /**
   * Run the model in a Web Worker so the page never blocks. The threaded CPU module always runs
   * in one (on a page it is the default there); `false` keeps one thread on the page.
   */
  worker?: boolean;
  /** Keep downloads in the Cache API (default true). */
  cache?: boolean;
  /** URLs of the three wasm modules (default: wasm/ next to this module). */
  wasm?: { cpu?: string | URL; cpuThreads?: string | URL; webgpu?: string | URL };
}

export interface SoftPrompt {
  /** Row-major [m, d]. */
  data: Float32Array;
  shape: [number, number];
}

/** Sentence embeddings, one row per text. */
export interface Embeddings {
  /** Row-major [n, h]. */
  data: Float32Array;
  shape: [number, number];
}

/** A text, or an object of the task's template fields (e.g. {sentence1, sentence2}). */
export type Input = string | Record<string, string>;

/** How a soft prompt's values travel. */
export type Dtype = 'f16' | 'f32';

export interface RequestOptions {
  /** Soft-prompt encoding on the wire: 'f16' (default) or 'f32'. */
  dtype?: Dtype;
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  seed?: number;
  stop?: string[];
  stream?: boolean;
}

export interface EncodedRequest {
  /** '/v1/score' (classification) or '/v1/completions' (generation). */
  path: string;
  kind: 'score' | 'completion';
  /** The exact bytes of the JSON body that leave the browser. */
  body: Uint8Array;
  /** The task template filled with the input: the query text the server sees. */
  prompt: string;
  /** The soft prompt as the body carries it: its values after the wire's dtype. */
  softPrompt: SoftPrompt & { dtype: Dtype };
}

export interface CompleteOptions extends RequestOptions {
  /** Stream a generation, one text piece at a time. */
  onToken?: (piece: string) => void;
  signal?: AbortSignal;
}

export type Completion =
  | { kind: 'classification'; label: string; labelWord: string; probabilities: Record<string, number>; request: { path: string; bytes: number } }
  | { kind: 'generation'; text: string; finishReason: 'stop' | 'length' | 'abort' | null; request: { path: string; bytes: number } };

export interface ModelIdentity {
  id: string;
  sha256: string;
  hidden_size: number;
}

/** A soft-prompt generator's sizes (`adapter.json`'s `generator`). */
export interface GeneratorConfig {
  method: 'lopa' | 'lopa-add' | 'lopa-max' | 'lopa-concat' | 'pt' | 'idpg';
  num_virtual_tokens: number;
  token_dim: number;
  encoder_dim: number;
  hidden_dim: number;
  rank: number;
  dropout: number;
  task_prompt_init_std: number;
}

/** A generation task's check: a literal compared as data, the row's function called on literal arguments, or a program. */
export type Check =
  | { literal: { expected: string } }
  | { call: { code: string; function: string; expected: string } }
  | { program: { template: string } };

/** The task an adapter was trained for. */
export interface TaskSpec {
  name: string;
  kind: 'classification' | 'generation';
  template: string;
  encoder_template: string;
  label_column: string;
  label_words: Record<string, string>;
  metric: 'accuracy' | 'f1' | 'exact_match' | 'pass@1';
  positive_label: string | null;
  answer_template: string | null;
  /** How a generated answer is judged (`pass@1`); templates over the row's fields. */
  check: Check | null;
  train_rows: [number, number] | null;
  dev_rows: [number, number] | null;
}

/** `adapter.json` of a soft-prompt adapter (the only kind that runs in the browser). */
export interface AdapterInfo {
  format: string;
  lopa_version: string;
  generator: GeneratorConfig;
  task: TaskSpec;
  foundation_model: ModelIdentity;
  encoder: ModelIdentity | null;
  encoder_pooling: 'mean' | 'first_token' | 'pooler' | null;
  encoder_normalize: boolean;
}

export declare class LopaClient {
  static load(options: LoadOptions): Promise<LopaClient>;
  /** The backend that actually runs. */
  readonly backend: 'webgpu' | 'cpu';
  /** Why 'auto' fell back to the CPU, or null. */
  readonly fallbackReason: string | null;
  /** Threads computing on the CPU: the threaded module's pool, else 1. */
  readonly threads: number;
  /** Whether the model runs in a Web Worker. */
  readonly worker: boolean;
  /** [m, d] of every soft prompt. */
  readonly shape: [number, number];
  readonly adapter: AdapterInfo;
  softPrompt(input: Input): Promise<SoftPrompt>;
  /** Sentence embeddings from the encoder alone; a list runs as one batch. */
  embed(texts: string | string[]): Promise<Embeddings>;
  encodeRequest(input: Input, options?: RequestOptions): Promise<EncodedRequest>;
  complete(endpointUrl: string, input: Input, options?: CompleteOptions): Promise<Completion>;
  /** Send a request from encodeRequest and read its answer (the soft prompt is not computed again). */
  send(endpointUrl: string, request: EncodedRequest, options?: CompleteOptions): Promise<Completion>;
  /** Soft prompts computed so far (by softPrompt, encodeRequest and complete). */
  readonly computations: number;
  /**
   * Personalise this client's adapter on the user's own examples: the generator trains here and
   * `lopa serve` answers only dLoss/dZ. Afterwards soft prompts come from the personalised adapter.
   */
  personalize(endpointUrl: string, examples: LabelledInput[], options?: PersonalizeOptions): Promise<{ steps: number; loss: number | null }>;
  /** Replace this client's adapter with one file of that format; another encoder's is refused. */
  importAdapter(bytes: Uint8Array): Promise<void>;
  /** This client's adapter as one file, in the format `lopa export-web` writes. */
  exportAdapter(): Promise<Uint8Array>;
  /** Free the model (GPU memory included) and stop the worker. */
  dispose(): Promise<void>;
}

/** One of the user's examples: a label value of a classifier, or the answer text of a generation task. */
export interface LabelledInput {
  input: Input;
  label: string;
}

export interface PersonalizeOptions {
  /** Optimizer steps (default 32). */
  steps?: number;
  /** 'adamw' (default) or 'sgd' (plain gradient descent). */
  optimizer?: 'adamw' | 'sgd';
  /** Default 1e-3. */
  learningRate?: number;
  /** Examples per step (default 8). */
  batchSize?: number;
  /** Default 0. */
  weightDecay?: number;
  /** AdamW's ε (default 1e-5): a coordinate whose gradient is far below it moves by learningRate × gradient / ε. */
  epsilon?: number;
  /** Example order, and the weights when starting from scratch (default 0). */
  seed?: number;
  /** Start from fresh weights of the adapter's shape instead of its trained ones. */
  fromScratch?: boolean;
  onStep?: (s: { step: number; loss: number; seconds: number }) => void;
  /** Stops between steps; the steps done are kept. */
  signal?: AbortSignal;
}

/** Keep an adapter file in this origin's private file system. */
export declare function saveAdapter(name: string, bytes: Uint8Array): Promise<void>;
/** An adapter file kept by saveAdapter, or null. */
export declare function loadSavedAdapter(name: string): Promise<Uint8Array | null>;

