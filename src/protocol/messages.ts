// The typed messages exchanged between the extension host, the worker process, the CLI and the webview: each worker
// method's params and result, progress, errors, and the report. Plain JSON types (and one pure helper on the
// report); this module imports nothing, so every side (node, browser) can share it.

/** The jobs the engine runs. Each request names one method with its parameters. */
export type Backend = 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
export type BackendChoice = Backend | 'auto';

/**
 * The backend a worker runs: `device` is the GPU adapter's short name on webgpu ("llvmpipe", "nvidia-h200"),
 * `detail` the worker's full description (with SIMD and threads on wasm, the adapter's driver on webgpu).
 */
export interface BackendInfo { backend: Backend; device?: string; detail?: string }

/** `webgpu (llvmpipe)`, `wasm`: what the status bar and the heatmap's chip show. */
export function backendLabel(b: BackendInfo): string {
  return b.device ? `${b.backend} (${b.device})` : b.backend;
}

export interface InfoParams { modelDir: string; rank?: number }
export interface EvalParams {
  modelDir: string; data: string; adapter?: string; seqLen?: number; maxSamples?: number; backend?: BackendChoice;
  /** The GPU memory budget in GiB (webgpu does not report it); the engine's default when absent. */
  gpuMemoryGiB?: number;
}
export interface ProbeParams {
  modelDir: string; data: string; samples?: number; seqLen?: number; rank?: number; alpha?: number; seed?: number;
  backend?: BackendChoice; gpuMemoryGiB?: number; out?: string; untilStable?: boolean; stabilityThreshold?: number; bootstrap?: number;
  sampling?: 'first' | 'random';
  /** Replace an existing report at `out`, when it is one DomLoRA wrote. */
  force?: boolean;
  /** Another report of the same model to compare with; the comparison goes into the report. */
  compare?: string;
  /**
   * The folder the user chose for the output (a workspace folder, the extension's storage, the adapter folder of the
   * setting): the output must lie inside it through real folders, no symbolic link and no `..` on the way. Unset (the
   * CLI's --out, a path the user typed), the path is taken as given.
   */
  outRoot?: string;
}
export interface TrainParams {
  modelDir: string; data: string; targets?: string[]; fromReport?: string; preset?: 'domlora' | 'vanilla';
  rank?: number; alpha?: number; lr?: number; steps?: number; epochs?: number; batchSize?: number; gradAccum?: number;
  seqLen?: number; evalData?: string; evalSplit?: number; evalEvery?: number; seed?: number; out: string;
  resume?: string; force?: boolean; backend?: BackendChoice; gpuMemoryGiB?: number; checkpointEvery?: number; warmupSteps?: number;
  weightDecay?: number; maxSamples?: number;
  /** Keep checkpoint/ (optimizer state) in the finished adapter folder, so that the run can be extended later. */
  keepCheckpoint?: boolean;
  /** Keep the outputs of the frozen layers below the lowest adapter across epochs (default true). */
  cacheLowerLayers?: boolean;
  /**
   * The seed that picks the held-out split (default: `seed`). The placement check holds it fixed while it varies
   * `seed`, so the runs of every seed are evaluated on the same records.
   */
  splitSeed?: number;
  /**
   * The folder the user chose for the output (a workspace folder, the extension's storage, the adapter folder of the
   * setting): the output must lie inside it through real folders, no symbolic link and no `..` on the way. Unset (the
   * CLI's --out, a path the user typed), the path is taken as given.
   */
  outRoot?: string;
}
/**
 * `check`: one adapter per placement, trained with the same budget and evaluated on the same held-out records.
 * Placements: `dominant`, `runner-up`, `lowest`, `random:K` (K modules of the dominant's kind), `vanilla` (every
 * module), or module names; the default list when absent (see CHECK_PLACEMENTS in src/engine/check/placements.ts).
 */
export interface CheckParams {
  modelDir: string; data: string;
  /** A probe report of this model; without one the check probes `data` first and keeps the report in its folder. */
  report?: string;
  placements?: string[];
  rank?: number; alpha?: number; lr?: number; steps?: number; batchSize?: number; gradAccum?: number; seqLen?: number;
  evalData?: string; evalSplit?: number; seed?: number;
  /** Runs per placement, with seeds seed, seed + 1, ...; more than one shows the spread. */
  seeds?: number;
  maxSamples?: number; warmupSteps?: number; weightDecay?: number;
  /** Records the probe averages over, when the check probes (no `report`). */
  samples?: number;
  /** The check's folder: check.json, check-state.json, report.json (when it probed) and adapters/<placement>/seed-<s>/. */
  out: string;
  /** The folder the user chose for `out` (see TrainParams.outRoot): the check's folder must lie inside it through real folders. */
  outRoot?: string;
  /** A check folder to continue: its placements already trained are kept, a placement cut short resumes from its checkpoint. */
  resume?: string;
  force?: boolean; backend?: BackendChoice; gpuMemoryGiB?: number;
}
/** `compare`: probe reports of one model (on different data), compared with each other. */
export interface CompareParams { reports: string[] }
/** `models`: the model folders of the Hugging Face cache and the given ones, from their headers alone. */
export interface ModelsParams {
  /** Model folders to list besides the cache's (the workspace's, or the CLI's arguments), in this order. */
  folders?: string[];
  /** The hub cache to scan instead of the environment's ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub). */
  cacheDir?: string;
  /** Leave the cache out: list the given folders only. */
  noCache?: boolean;
}
export interface ExportParams {
  adapterDir: string; format: 'merged' | 'peft-config' | 'axolotl' | 'llamafactory' | 'mlx'; out: string;
  modelDir?: string; force?: boolean; gpus?: number;
  /**
   * The folder the user chose for the output (a workspace folder, the extension's storage, the adapter folder of the
   * setting): the output must lie inside it through real folders, no symbolic link and no `..` on the way. Unset (the
   * CLI's --out, a path the user typed), the path is taken as given.
   */
  outRoot?: string;
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
  models: { params: ModelsParams; result: ModelsResult };
  check: { params: CheckParams; result: CheckResult };
  compare: { params: CompareParams; result: CompareResult };
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
  /** In a placement check: which placement (1-based of `count`) and which of its seeds is being trained. */
  placement?: { index: number; count: number; id: string; label: string; seed: number; seedIndex: number; seeds: number };
}

/** Worker -> host. */
export type WorkerMessage =
  | { kind: 'ready'; backend: Backend; device?: string; detail: string; pid: number }
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

/** One model folder of a `models` listing: a snapshot of the Hugging Face cache, or a folder that was given. */
export interface ModelEntry {
  /** The folder (a cache snapshot: `…/models--ORG--NAME/snapshots/REVISION`). */
  path: string;
  source: 'cache' | 'folder';
  /** `ORG/NAME` of a cache snapshot. */
  repoId?: string;
  /** The commit a cache snapshot holds. */
  revision?: string;
  /** The cache's refs naming this revision (`main`, `pr/1`, a tag). */
  refs: string[];
  /** The snapshot the cache considers current: the revision refs/main names, else the only or newest one. */
  current: boolean;
  /** config.json's `model_type` and first `architectures` entry, when it has them. */
  modelType?: string;
  architecture?: string;
  layers?: number;
  /** From the config for a supported model (as `info` counts them), else the elements of the safetensors headers. */
  parameters?: number;
  /** The storage dtype most weight tensors use. */
  dtype?: string;
  /** Size on disk: the blocks allocated to the folder's files (what `du` counts), each file or blob once. */
  diskBytes: number;
  /** Apparent size: the sum of the files' lengths (larger than diskBytes for sparse files). */
  bytes: number;
  supported: boolean;
  /** Why DomLoRA cannot probe it, in one line (only when not supported). */
  reason?: string;
}

export interface ModelsResult {
  /** The cache scanned, with where its location came from; absent when the cache was left out. */
  cache?: {
    dir: string; from: 'option' | 'HF_HUB_CACHE' | 'HUGGINGFACE_HUB_CACHE' | 'HF_HOME' | 'XDG_CACHE_HOME' | 'default';
    exists: boolean; repos: number;
    /** Size on disk of every model repository, blobs shared by several snapshots counted once. */
    diskBytes: number;
  };
  /** The cache's snapshots (by repository, the current revision first), then the given folders. */
  models: ModelEntry[];
  seconds: number;
}

/**
 * The repository and revision of a Hugging Face cache snapshot path (`<cache>/models--ORG--NAME/snapshots/REV`),
 * or undefined for any other path. Pure string work on either separator, so the host can name a cache model and
 * keep its reports out of the cache without asking the worker.
 */
export function hfSnapshotOf(folder: string): { cacheDir: string; repoId: string; folderName: string; revision: string } | undefined {
  const m = /^(.*)[\\/]models--([^\\/]+)[\\/]snapshots[\\/]([^\\/]+)[\\/]*$/.exec(folder);
  if (!m || !m[2] || m[2].split('--').some((part) => !part)) return undefined;
  return { cacheDir: m[1] || '/', folderName: m[2], repoId: m[2].split('--').join('/'), revision: m[3] };
}

/** How the line describing a job's data starts, and its warnings (the host shows those as notifications). */
export const DATA_PREFIX = 'data: ';

/** What a job read from its data: said before the work (`line`, then each warning) and returned with the result. */
export interface DataSummary {
  /** The file as given. */
  file: string;
  compression?: 'gzip';
  /** Records in the file; of them, those used (after --max-samples or --samples, and records dropped for length). */
  records: number; used: number; skipped: number;
  /** Each record shape found, most common first, with the keys it is recognised by. */
  shapes: { format: string; keys: string; count: number }[];
  /** Tokens in the records used, and of them the supervised ones (what the loss and PAGE are computed on). */
  tokens: number; supervisedTokens: number;
  /** Mixed record shapes, records dropped for length: one sentence each, naming the file. */
  warnings: string[];
  /** `data: FILE — 120 records, shape alpaca {instruction, input?, output}, 8,412 supervised tokens of 30,100`. */
  line: string;
}

export interface EvalResult {
  meanLoss: number; samples: number; tokens: number; skipped: number; backend: Backend; adapter?: string;
  data: DataSummary;
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
    /** The GPU adapter the probe ran on (webgpu), as in BackendInfo. */
    backendDevice?: string;
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
  /** The data probed on (absent from reports written before it was recorded). */
  data?: DataSummary;
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
  /** The training data (all of it, before the eval split), and --eval-data when given. */
  data: DataSummary; evalData?: DataSummary;
}

export interface ExportResult {
  format: string; out: string;
  /** What was written, for the log and the CLI. */
  text: string;
  /** What downstream runtimes (vLLM, llama.cpp, Ollama) would refuse, found before anyone tries. */
  warnings: string[];
  loadCommands: string[];
}

// ---- The placement check and the comparison of reports -------------------------------------------------------------

/** Mean, spread and range of one figure over a placement's seeds (`sd` only with two or more). */
export interface Spread { mean: number; sd?: number; min: number; max: number; n: number }

/** One trained adapter of a check: a placement at one seed. */
export interface CheckRun {
  seed: number; evalLossBefore: number; evalLossAfter: number;
  /** evalLossBefore - evalLossAfter: how much the adapter lowered the held-out loss. */
  reduction: number;
  seconds: number; adapterDir: string;
}

export type PlacementKind = 'dominant' | 'runner-up' | 'lowest' | 'random' | 'vanilla' | 'module';

export interface CheckPlacement {
  /** `dominant`, `runner-up`, `lowest`, `random-1`, `vanilla`, or the module's name: its folder under adapters/. */
  id: string;
  /** The placement as the user asked for it (`random:2`, a module name). */
  spec: string;
  kind: PlacementKind;
  /** `dominant (layer 1 · down_proj)`, `vanilla (all 35 modules)`. */
  label: string;
  modules: string[];
  trainableParams: number;
  /** Share of PAGE of its modules in the report (1 for vanilla). */
  share: number;
  /** Its module's rank by PAGE in the report (single placements). */
  pageRank?: number;
  runs: CheckRun[];
  evalLossBefore: number;
  evalLossAfter: Spread;
  reduction: Spread;
  /** Among the single placements, 1 = the largest mean loss reduction (vanilla has none). */
  reductionRank?: number;
  seconds: number;
}

export interface CheckResult {
  tool: { name: 'domlora'; version: string };
  kind: 'placement-check';
  createdAt: string;
  /** The check's folder. */
  dir: string;
  model: ModelSummary;
  /** The report whose shares and dominant module the check tests (its own report.json when it probed). */
  report: { path: string; dominant: string; probed: boolean; dataset: string };
  data: string; dataSha256: string; evalData?: string;
  trainRecords: number; evalRecords: number;
  config: {
    steps: number; lr: number; rank: number; alpha: number; batchSize: number; gradAccum: number; seqLen: number;
    evalSplit: number; seeds: number[]; warmupSteps?: number; weightDecay: number; maxSamples?: number;
  };
  vanillaParams: number;
  placements: CheckPlacement[];
  /** Over the single placements: Spearman's rank correlation of PAGE share and mean loss reduction (null below 3). */
  correlation: { spearman: number | null; singles: number; dominantRank?: number };
  /** What the numbers say, in sentences, including when differences are inside the spread over seeds. */
  findings: string[];
  backend: Backend;
  seconds: number;
}

/** Probe reports of one model, pairwise: do they agree on the dominant module and its layer, and on the ordering? */
export interface CompareResult {
  reports: { file: string; dataset: string; samples: number; dominant: { name: string; layer: number; kind: string; share: number; stability: number } }[];
  /** Spearman's rank correlation of the module orderings (by expected PAGE), report by report. */
  spearman: number[][];
  /** How many of each pair's top-10 modules are the same. */
  top10Overlap: number[][];
  sameDominant: boolean;
  sameDominantLayer: boolean;
  modules: number;
  /** The comparison in sentences. */
  findings: string[];
}
