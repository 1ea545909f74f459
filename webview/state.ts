// What the webview shows: the host's last PanelState, and what the webview keeps itself across hide and restore
// (the colour scale, the focused cell, a snapshot to redraw at once). Every change goes through a function here,
// which saves it and tells the view what to redraw.
import type { TrainCurvePoint } from '../src/protocol/messages';
import type { PanelState, Preset, WebviewPersistedState } from '../src/protocol/webview';
import { vscodeApi } from './api';

/** What to redraw: everything, what a new placement changes, or the training runs. */
export type Change = 'all' | 'placement' | 'runs';

const persisted: WebviewPersistedState = { scale: 'linear', ...(vscodeApi.getState() as Partial<WebviewPersistedState> | undefined) };
let current: PanelState | undefined = persisted.snapshot;
let listener: ((change: Change) => void) | undefined;

/** The view's redraw: one listener, the entry module's. */
export function onChange(l: (change: Change) => void): void {
  listener = l;
}

/** The state the host sent last (or the snapshot saved before the panel was hidden). */
export function panelState(): PanelState | undefined {
  return current;
}

export function jobRunning(): boolean {
  return !!current?.job;
}

export function scale(): 'linear' | 'log' {
  return persisted.scale;
}

/** The cell last focused in the grid, kept so a redraw puts the tab stop back. */
export function focus(): { layer: number; kind: number } | undefined {
  return persisted.focus;
}

/** The model this webview shows, once it was told (a restored panel knows it before the host says anything). */
export function modelDir(): string | undefined {
  return persisted.modelDir;
}

function save(): void {
  vscodeApi.setState(persisted);
}

/** The host sent the whole state. */
export function receive(s: PanelState): void {
  current = s;
  persisted.modelDir = s.modelDir;
  persisted.snapshot = s;
  save();
  listener?.('all');
}

/** A step of a live training run, appended to its curve. */
export function addPoint(p: { preset: Preset; point: TrainCurvePoint; total: number; etaSeconds?: number }): void {
  const run = current?.runs[p.preset];
  if (!run || run.status !== 'running') return;
  const last = run.curve[run.curve.length - 1];
  if (last && last.step === p.point.step) Object.assign(last, p.point);
  else run.curve.push(p.point);
  run.steps = p.total;
  run.etaSeconds = p.etaSeconds;
  listener?.('runs');
}

/** Moves the placement at once, before the host confirms it (undefined: the dominant module); false with no state. */
export function place(module: string | undefined): boolean {
  if (!current) return false;
  const dominant = current.report?.dominant.name;
  current.placement = module ?? dominant;
  current.placementIsUserChoice = !!module && module !== dominant;
  persisted.snapshot = current;
  save();
  listener?.('placement');
  return true;
}

export function setScale(next: 'linear' | 'log'): void {
  if (next === persisted.scale) return;
  persisted.scale = next;
  save();
  listener?.('all');
}

export function setFocus(f: { layer: number; kind: number }): void {
  persisted.focus = f;
  save();
}
