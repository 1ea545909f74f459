// The messages between the extension host and the heatmap webview, each declared once as a typed descriptor that
// both sides import (the pattern of GitLens's webviews/protocol.ts). Plain JSON only; imports nothing but types.
import type { BackendInfo, CheckResult, CompareResult, Progress, ProbeReport, TrainCurvePoint, TrainResult } from './messages';

/** What travels through `postMessage` in both directions. */
export interface WebviewMessage<P = unknown> {
  method: string;
  params: P;
}

/** A message type: its method name, with the parameter type carried for the compiler only. */
export class MessageType<P> {
  declare readonly _params?: P;
  constructor(readonly method: string) {}
  is(msg: unknown): msg is WebviewMessage<P> {
    return typeof msg === 'object' && msg !== null && (msg as WebviewMessage).method === this.method;
  }
  make(params: P): WebviewMessage<P> {
    return { method: this.method, params };
  }
}

export type ParamsOf<T> = T extends MessageType<infer P> ? P : never;

// ---- What the panel shows -------------------------------------------------------------------------------------

export type Preset = 'domlora' | 'vanilla';

/** The probe report as the panel needs it: the per-record matrix is left out (it can be large and is not drawn). */
export type HeatmapReport = Omit<ProbeReport, 'perRecordExpected'>;

/** One training run shown in the panel: live while it runs, final once the worker returns its result. */
export interface RunView {
  preset: Preset;
  status: 'running' | 'done' | 'failed' | 'cancelled';
  targets: string[];
  steps: number;
  startedAt: string;
  curve: TrainCurvePoint[];
  /** Trainable parameters, known before training from the module shapes (DomLoRA) or from the result. */
  trainableParams?: number;
  etaSeconds?: number;
  result?: TrainResult;
  error?: string;
}

export interface JobView {
  kind: 'probe' | 'train' | 'export' | 'check';
  preset?: Preset;
  progress?: Progress;
}

/** The placement check of this model shown in the panel: live while it runs, its result once done. */
export interface CheckView {
  status: 'running' | 'done' | 'failed' | 'cancelled';
  /** The check's folder (its adapters are opened by placement, through the host, never by a path from the webview). */
  dir: string;
  seeds: number;
  startedAt: string;
  progress?: Progress;
  result?: CheckResult;
  error?: string;
  /** Runs finished and planned, when a check stopped before its end: it can be resumed. */
  finishedRuns?: number;
  totalRuns?: number;
}

/** Several probe reports of this model compared (Compare Datasets): the matrix, and each report's shares to draw. */
export interface ComparisonView {
  result: CompareResult;
  /** The heatmap's layout (the reports are of one model). */
  kinds: string[];
  layers: number;
  /** Per report, in the result's order: a short label and the shares in layer-major, kind order (0 where absent). */
  grids: { label: string; shares: number[] }[];
}

/** Everything the panel draws, sent whole whenever it changes (it is small next to a redraw). */
export interface PanelState {
  modelDir: string;
  modelName: string;
  report?: HeatmapReport;
  reportPath?: string;
  /** Module name where the adapter goes: the user's pick, else the report's dominant module. */
  placement?: string;
  placementIsUserChoice: boolean;
  runs: Partial<Record<Preset, RunView>>;
  job?: JobView;
  backend?: BackendInfo;
  /** Rank used for the parameter counts of the cells (the probe's rank). */
  rank?: number;
  check?: CheckView;
  comparison?: ComparisonView;
}

// ---- Host -> webview ------------------------------------------------------------------------------------------

/** The whole panel state. */
export const StateNotification = new MessageType<PanelState>('state');
/** A training step: appended to the live loss curve without resending the state. */
export const TrainPointNotification = new MessageType<{ preset: Preset; point: TrainCurvePoint; total: number; etaSeconds?: number }>('train/point');

// ---- Webview -> host ------------------------------------------------------------------------------------------

/** The webview has (re)loaded and asks for the state of its model. */
export const ReadyCommand = new MessageType<{ modelDir?: string }>('ready');
/** Place the adapter at a module (undefined: back to the dominant module). */
export const PlaceCommand = new MessageType<{ module?: string }>('place');
export const TrainCommand = new MessageType<{ preset: Preset }>('train');
export const ExportCommand = new MessageType<{ preset?: Preset }>('export');
export const CancelCommand = new MessageType<Record<string, never>>('cancel');
export const RerunProbeCommand = new MessageType<Record<string, never>>('probe');
/** Reveal a file or folder (an adapter, the report) in the OS / the explorer. */
export const RevealCommand = new MessageType<{ path: string }>('reveal');
/** Run the placement check for the report shown (or resume the one that stopped). */
export const CheckPlacementCommand = new MessageType<{ resume?: boolean }>('check');
/** Open the adapters of one placement of the check shown: named by its id, the host finds the folder. */
export const RevealPlacementCommand = new MessageType<{ placement: string }>('check/reveal');
/** Pick reports of this model on other data and compare them (the Compare Datasets view). */
export const CompareDatasetsCommand = new MessageType<Record<string, never>>('compare');
/** Close the comparison view. */
export const CloseComparisonCommand = new MessageType<Record<string, never>>('compare/close');

/** The state the webview keeps with `setState`, so a hidden and restored panel redraws at once. */
export interface WebviewPersistedState {
  modelDir?: string;
  scale: 'linear' | 'log';
  focus?: { layer: number; kind: number };
  snapshot?: PanelState;
}
