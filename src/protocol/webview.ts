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

// ---- Checking what the webview sends ---------------------------------------------------------------------------
// The webview draws data read from files DomLoRA did not write (a cloned repository's reports, model names), so the
// host treats its messages as untrusted: each webview -> host message is a CommandType, declared with a check of its
// parameters, and the host acts only on a message that passes its type's check (checkCommand). A message names a
// module, a preset or a kind of output, never a path: the host looks the path up in what it already knows.

/** A check that an untrusted value has the type P. */
export type Check<P> = (value: unknown) => value is P;

/** Every CommandType made so far, by method: a new one is checked by the host without being listed anywhere. */
const COMMANDS = new Map<string, CommandType<unknown>>();

/** A message from the webview to the host: a MessageType with the check the host runs before acting on it. */
export class CommandType<P> extends MessageType<P> {
  constructor(method: string, readonly check: Check<P>) {
    super(method);
    if (COMMANDS.has(method)) throw new Error(`two webview commands are named ${method}`);
    COMMANDS.set(method, this as CommandType<unknown>);
  }
}

/** The message when it is a known command whose parameters pass its check; otherwise why it is dropped. */
export function checkCommand(msg: unknown): { ok: true; msg: WebviewMessage } | { ok: false; why: string } {
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) return { ok: false, why: 'not an object' };
  const { method, params, ...rest } = msg as Record<string, unknown>;
  if (typeof method !== 'string') return { ok: false, why: 'no method' };
  const type = COMMANDS.get(method);
  if (!type) return { ok: false, why: `unknown method ${JSON.stringify(method.slice(0, 64))}` };
  if (Object.keys(rest).length) return { ok: false, why: `${method}: unexpected fields besides method and params` };
  if (!type.check(params)) return { ok: false, why: `${method}: the parameters do not have the declared type` };
  return { ok: true, msg: { method, params } };
}

/** Checks to declare commands with: plain objects with exactly the named fields, short names, choices. */
export const valid = {
  /** A plain object whose fields are exactly these (a missing optional one is fine, an extra one is not). */
  object<T>(fields: { [K in keyof T]-?: Check<T[K]> }): Check<T> {
    const checks = Object.entries(fields) as [string, Check<unknown>][];
    return (v: unknown): v is T => {
      if (typeof v !== 'object' || v === null || Array.isArray(v) || Object.getPrototypeOf(v) !== Object.prototype) return false;
      const o = v as Record<string, unknown>;
      if (Object.keys(o).some((k) => !Object.hasOwn(fields, k))) return false;
      return checks.every(([k, check]) => check(o[k]));
    };
  },
  optional<T>(check: Check<T>): Check<T | undefined> {
    return (v: unknown): v is T | undefined => v === undefined || check(v);
  },
  oneOf<const T extends string>(...values: T[]): Check<T> {
    return (v: unknown): v is T => typeof v === 'string' && (values as string[]).includes(v);
  },
  /** A name (of a module, a model): one line of printable text, at most 512 characters. */
  name(v: unknown): v is string {
    // eslint-disable-next-line no-control-regex
    return typeof v === 'string' && v.length > 0 && v.length <= 512 && !/[\u0000-\u001f\u007f]/.test(v);
  },
  /** A path the webview was given by the host and echoes back (the host does not act on it): at most 4096 characters. */
  echoedPath(v: unknown): v is string {
    return typeof v === 'string' && v.length <= 4096;
  },
};

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

const PRESET = valid.oneOf<Preset>('domlora', 'vanilla');

/** The webview has (re)loaded and asks for the state of its model (the host answers with its own panel's model). */
export const ReadyCommand = new CommandType<{ modelDir?: string }>('ready', valid.object({ modelDir: valid.optional(valid.echoedPath) }));
/** Place the adapter at a module of the model's report (undefined: back to the dominant module). */
export const PlaceCommand = new CommandType<{ module?: string }>('place', valid.object({ module: valid.optional(valid.name) }));
export const TrainCommand = new CommandType<{ preset: Preset }>('train', valid.object({ preset: PRESET }));
export const ExportCommand = new CommandType<{ preset?: Preset }>('export', valid.object({ preset: valid.optional(PRESET) }));
export const CancelCommand = new CommandType<Record<string, never>>('cancel', valid.object({}));
export const RerunProbeCommand = new CommandType<Record<string, never>>('probe', valid.object({}));
/** Reveal, in the explorer or the OS, the panel's report or the adapter its run of `preset` wrote: never a path. */
export const RevealCommand = new CommandType<{ what: 'report' } | { what: 'adapter'; preset: Preset }>('reveal',
  (v: unknown): v is { what: 'report' } | { what: 'adapter'; preset: Preset } =>
    valid.object({ what: valid.oneOf('report') })(v) || valid.object({ what: valid.oneOf('adapter'), preset: PRESET })(v));
/** Run the placement check for the report shown (or resume the one that stopped). */
export const CheckPlacementCommand = new CommandType<{ resume?: boolean }>('check',
  valid.object({ resume: valid.optional((v: unknown): v is boolean => typeof v === 'boolean') }));
/** Open the adapters of one placement of the check shown: named by its id, the host finds the folder. */
export const RevealPlacementCommand = new CommandType<{ placement: string }>('check/reveal', valid.object({ placement: valid.name }));
/** Pick reports of this model on other data and compare them (the Compare Datasets view). */
export const CompareDatasetsCommand = new CommandType<Record<string, never>>('compare', valid.object({}));
/** Close the comparison view. */
export const CloseComparisonCommand = new CommandType<Record<string, never>>('compare/close', valid.object({}));

/** The state the webview keeps with `setState`, so a hidden and restored panel redraws at once. */
export interface WebviewPersistedState {
  modelDir?: string;
  scale: 'linear' | 'log';
  focus?: { layer: number; kind: number };
  snapshot?: PanelState;
}
