// The typed messages exchanged between the extension host, the worker process, the CLI and the webview: each worker
// method's params and result, progress, errors, and the report. Plain JSON types (and one pure helper on the
// report); this module imports nothing, so every side (node, browser) can share it.

/** The jobs the engine runs. Each request names one method with its parameters. */
export type Backend = 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
export type BackendChoice = Backend | 'auto';

export interface InfoParams { modelDir: string; rank?: number }
export interface EvalParams {
  modelDir: string; data: string; adapter?: string; seqLen?: number; maxSamples?: number; backend?: BackendChoice;
}
export interface ProbeParams {
  modelDir: string; data: string; samples?: number; seqLen?: number; rank?: number; alpha?: number; seed?: number;
  backend?: BackendChoice; out?: string; untilStable?: boolean; stabilityThreshold?: number; bootstrap?: number;
  sampling?: 'first' | 'random';
  /** Replace an existing report at `out`, when it is one DomLoRA wrote. */
  force?: boolean;
  /** Another report of the same model to compare with; the comparison goes into the report. */
  compare?: string;
}
export interface TrainParams {
  modelDir: string; data: string; targets?: string[]; fromReport?: string; preset?: 'domlora' | 'vanilla';
  rank?: number; alpha?: number; lr?: number; steps?: number; epochs?: number; batchSize?: number; gradAccum?: number;
  seqLen?: number; evalData?: string; evalSplit?: number; evalEvery?: number; seed?: number; out: string;
  resume?: string; force?: boolean; backend?: BackendChoice; checkpointEvery?: number; warmupSteps?: number;
  weightDecay?: number; maxSamples?: number;
  /** Keep checkpoint/ (optimizer state) in the finished adapter folder, so that the run can be extended later. */
  keepCheckpoint?: boolean;
  /** Keep the outputs of the frozen layers below the lowest adapter across epochs (default true). */
  cacheLowerLayers?: boolean;
}
export interface ExportParams {
  adapterDir: string; format: 'merged' | 'peft-config' | 'axolotl' | 'llamafactory' | 'mlx'; out: string;
  modelDir?: string; force?: boolean; gpus?: number;
}

/**
 * Every worker method with its parameters and its result, declared once: the worker's handler table, the host's
 * WorkerClient and Jobs, and the commands all take their types from here, so a changed shape fails to compile.
 */
export interface MethodMap {
  info: { params: InfoParams; result: InfoResult };
  eval: { params: EvalParams; result: EvalResult };
  probe: { params: ProbeParams; result: ProbeReport };
  train: { params: TrainParams; result: TrainResult };
  export: { params: ExportParams; result: ExportResult };
}
export type Method = keyof MethodMap;
export type MethodParams<M extends Method> = MethodMap[M]['params'];
export type MethodResult<M extends Method> = MethodMap[M]['result'];

/** A request of method M with its parameters. */
export interface WorkerRequestOf<M extends Method = Method> { kind: 'request'; id: number; method: M; params: MethodParams<M> }

/** Host -> worker. */
export type WorkerRequest = WorkerRequestOf | { kind: 'cancel'; id: number };

/** Progress of a running job; the same shape drives the status bar, the CLI and the webview. */
export interface Progress {
  phase: 'load' | 'tokenize' | 'probe' | 'train' | 'eval' | 'export' | 'save';
  done: number;
  total: number;
  /** Seconds left, estimated from the rate so far. */
  etaSeconds?: number;
  loss?: number;
  evalLoss?: number;
  lr?: number;
  tokensPerSecond?: number;
  message?: string;
}

/** Worker -> host. */
export type WorkerMessage =
  | { kind: 'ready'; backend: Backend; pid: number }
  | { kind: 'progress'; id: number; progress: Progress }
  | { kind: 'log'; id: number; level: 'info' | 'warn' | 'error'; message: string }
  /** The result of request `id`: of that request's method (the host knows which method it asked). */
  | { kind: 'result'; id: number; result: MethodResult<Method> }
  | { kind: 'error'; id: number; error: ErrorInfo };

export type ErrorCode = 'bad-input' | 'cancelled' | 'out-of-memory' | 'internal';
export interface ErrorInfo { code: ErrorCode; message: string; file?: string }

// ---- Results -------------------------------------------------------------------------------------------------

export interface ModelSummary {
  path: string; modelType: string; layers: number; hiddenSize: number; intermediateSize: number;
  heads: number; kvHeads: number; headDim: number; vocabSize: number; parameters: number; tiedEmbeddings: boolean;
}

/** One candidate adapter position (a linear projection of one decoder layer). */
export interface ModuleInfo {
  /** Hugging Face module name, e.g. `model.layers.1.mlp.down_proj`. */
  name: string; layer: number; kind: string; dIn: number; dOut: number; adapterParams: number;
}

export interface InfoResult { model: ModelSummary; kinds: string[]; modules: ModuleInfo[]; rank: number; dtype: string }

export interface EvalResult {
  meanLoss: number; samples: number; tokens: number; skipped: number; backend: Backend; adapter?: string;
  /** Each record's mean token loss, in dataset order. */
  losses: number[];
}

/**
 * `layer 1 · down_proj`: a module by the layer and kind its report records (GPT-2's kinds keep their block:
 * `layer 2 · mlp.c_proj`), so no side parses a family's names. A name the report does not hold is shown whole.
 */
export function moduleLabel(name: string, report: { modules: readonly Pick<ModuleInfo, 'name' | 'layer' | 'kind'>[] } | undefined): string {
  const m = report?.modules.find((x) => x.name === name);
  return m ? `layer ${m.layer} · ${m.kind}` : name;
}

export interface ProbeModule extends ModuleInfo {
  pageSampled: number; pageExpected: number; share: number; rank: number;
}

export interface ProbeReport {
  tool: { name: 'domlora'; version: string };
  createdAt: string;
  model: ModelSummary;
  /** Column order of the heatmap: the module kinds of this architecture. */
  kinds: string[];
  config: {
    samples: number; requestedSamples: number; sampling: 'first' | 'random'; skipped: number; seqLen: number;
    rank: number; alpha: number; seed: number; backend: Backend; dataset: string; datasetSha256: string;
    datasetFormat: string; bootstrap: number; untilStable: boolean;
  };
  meanLoss: number;
  tokens: number;
  modules: ProbeModule[];
  dominant: {
    name: string; layer: number; kind: string; share: number; stability: number;
    runnerUp: { name: string; share: number; wins: number };
  };
  /** Per record: its loss and its share of each of the top modules' energy, to show whether one record dominates. */
  records: { index: number; line: number; tokens: number; loss: number; top: { name: string; pageExpected: number }[] }[];
  /** records x modules matrix of per-record expected PAGE (same module order as `modules`). */
  perRecordExpected: number[][];
  timings: { loadSeconds: number; probeSeconds: number };
  /** With --compare: how this report's module ordering compares with another report's. */
  comparison?: ReportComparison;
}

/** Two probe reports of the same model compared: same dominant module? how alike are the orderings? */
export interface ReportComparison {
  /** The other report's file. */
  other: string;
  sameDominant: boolean; otherDominant: string; spearman: number; top10Overlap: number; modules: number;
}

export interface TrainCurvePoint { step: number; loss?: number; evalLoss?: number; lr?: number }

export interface TrainResult {
  adapterDir: string; preset: 'domlora' | 'vanilla'; targets: string[]; rank: number; alpha: number;
  trainableParams: number; vanillaParams: number; ratioToVanilla: number;
  steps: number; evalLossBefore?: number; evalLossAfter?: number; trainLossFirst?: number; trainLossLast?: number;
  curve: TrainCurvePoint[]; backend: Backend; seconds: number;
}

export interface ExportResult {
  format: string; out: string;
  /** What was written, for the log and the CLI. */
  text: string;
  /** What downstream runtimes (vLLM, llama.cpp, Ollama) would refuse, found before anyone tries. */
  warnings: string[];
  loadCommands: string[];
}
