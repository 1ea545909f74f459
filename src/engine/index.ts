// The engine's one face: what the worker, the CLI, the demo and the bench call. Everything behind it is the library's
// own business (see the folders: arch/ hf/ model/ probe/ train/ data/ eval/ export/ runtime/).
export { modelInfo, openModelFolder, loadModel, summarise, type ModelFolder, type LoadedModel } from './hf/folder';
export { candidateModules, type ModuleSpec } from './hf/modules';
export { listModels, hubCacheDir } from './hf/cache';
export { writeSynthModel, synthDataset, synthTokenizer, synthLayout, DEMO_SHAPE } from './hf/synth';
export { SUPPORTED_MODEL_TYPES } from './arch/registry';
export type { SynthShape } from './arch/types';
export { runEval, runGenerate, evalRecords, type GenerateResult } from './eval/evaluate';
export { runProbe, PROBE_DEFAULTS, type ProbeOutcome } from './probe/probe';
export { compareReports, compareReportSet, runCompare, type Comparison } from './probe/compare';
export { runCheck, CHECK_DEFAULTS } from './check/check';
export { CHECK_PLACEMENTS } from './check/placements';
export { runTrain, TRAIN_DEFAULTS } from './train/loop';
export { runExport } from './export/exporters';
export { readDataset, type Dataset } from './data/read';
export { tokenizeDataset, type TokenizeResult } from './data/tokenize';
export { describeDataset, describeTokens, summariseData, announceData } from './data/summary';
export { initLoraA, loraScale, makeAdapter, disposeAdapter } from './model/lora';
export type { LoraAdapter, LoraGrads } from './model/types';
export { initBackend, describeBackend, type BackendReport } from './runtime/backend';
export { DomLoraError, CancelledError, badInput, toErrorInfo } from './runtime/errors';
export { runSteps, runStepsAsync, type JobHooks, type Steps } from './runtime/jobs';
export { claimOutput, whyNotOurs, type OutputKind } from './runtime/outputs';
export { Rng } from './runtime/rng';
