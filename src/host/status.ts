// The status bar item, rendered from one state value (as rust-analyzer does): whatever changes, the host updates
// the state and calls `render`, so the item can never show a mix of two moments.
import * as vscode from 'vscode';
import { backendLabel, type BackendInfo, type Progress } from '../protocol/messages';
import type { Preset } from '../protocol/webview';

export type JobKind = 'probe' | 'train' | 'export' | 'check';

export type StatusState =
  | { kind: 'idle'; backend?: BackendInfo; backendIsRemembered?: boolean; lastError?: string }
  | { kind: 'running'; job: JobKind; preset?: Preset; model: string; progress?: Progress; startedAt: number };

export interface StatusView { text: string; tooltip: string; command: string }

/** `m:ss` (or `h:mm:ss`) for an ETA. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

function jobLabel(s: Extract<StatusState, { kind: 'running' }>): string {
  if (s.job === 'train') return s.preset === 'vanilla' ? 'train vanilla' : 'train';
  return s.job;
}

/** The one place that decides what the status bar says. Pure, so the host tests check it directly. */
export function renderStatus(s: StatusState): StatusView {
  if (s.kind === 'idle') {
    const backend = s.backend ? `: ${backendLabel(s.backend)}` : '';
    const tooltipBackend = s.backend
      ? `Backend: ${s.backend.detail ?? backendLabel(s.backend)}${s.backendIsRemembered ? ' (last used; chosen again when the next job starts)' : ''}`
      : 'Backend: chosen when the first job starts (setting domlora.backend)';
    return {
      text: s.lastError ? `$(warning) DomLoRA${backend}` : `$(circuit-board) DomLoRA${backend}`,
      tooltip: `DomLoRA is idle. ${tooltipBackend}.${s.lastError ? `\nLast job failed: ${s.lastError}` : ''}\nClick to show the PAGE heatmap.`,
      command: 'domlora.showHeatmap',
    };
  }
  const p = s.progress;
  const parts: string[] = [];
  // A placement check trains one run after another: which one first, then the run's own progress.
  const pl = p?.placement;
  if (pl) parts.push(`check ${pl.index}/${pl.count}${pl.seeds > 1 ? ` seed ${pl.seedIndex}/${pl.seeds}` : ''}`);
  const phase = p && p.phase !== s.job && !(s.job === 'train' && p.phase === 'train') ? p.phase : jobLabel(s);
  if (p && p.total > 0 && (p.phase === 'probe' || p.phase === 'train' || p.phase === 'eval' || p.phase === 'tokenize')) {
    parts.push(`${phase} ${p.done}/${p.total}`);
  } else {
    parts.push(`${phase}…`);
  }
  if (p?.loss !== undefined && Number.isFinite(p.loss)) parts.push(`loss ${p.loss.toFixed(2)}`);
  if (p?.etaSeconds !== undefined && Number.isFinite(p.etaSeconds)) parts.push(`ETA ${formatDuration(p.etaSeconds)}`);
  return {
    text: `$(sync~spin) DomLoRA: ${parts.join(' · ')}`,
    tooltip: `DomLoRA is running ${jobLabel(s)} on ${s.model}${p?.message ? `: ${p.message}` : ''}.\nClick to show the panel; "DomLoRA: Cancel" stops it.`,
    command: 'domlora.revealPanel',
  };
}

export class StatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private state: StatusState = { kind: 'idle' };
  private listeners = new Set<(s: StatusState) => void>();

  constructor() {
    this.item = vscode.window.createStatusBarItem('domlora.status', vscode.StatusBarAlignment.Left, 10);
    this.item.name = 'DomLoRA';
    this.render();
  }

  get current(): StatusState { return this.state; }

  set(state: StatusState): void {
    this.state = state;
    this.render();
    for (const l of this.listeners) l(state);
  }

  onDidChange(listener: (s: StatusState) => void): vscode.Disposable {
    this.listeners.add(listener);
    return new vscode.Disposable(() => this.listeners.delete(listener));
  }

  show(): void { this.item.show(); }

  private render(): void {
    const view = renderStatus(this.state);
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.command = view.command;
    this.item.backgroundColor = this.state.kind === 'idle' && this.state.lastError
      ? new vscode.ThemeColor('statusBarItem.warningBackground') : undefined;
  }

  dispose(): void {
    this.listeners.clear();
    this.item.dispose();
  }
}
