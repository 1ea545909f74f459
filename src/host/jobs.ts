// Runs one worker job at a time and keeps the user informed: the status bar (from its one state value), a progress
// notification with a Cancel button, and the "DomLoRA" output channel.
import * as vscode from 'vscode';
import { DATA_PREFIX, type BackendInfo, type Method, type MethodParams, type MethodResult, type Progress } from '../protocol/messages';
import * as notify from './notify';
import type { Preset } from '../protocol/webview';
import { formatDuration, type JobKind, type StatusBar } from './status';
import { JobError, type WorkerClient } from './worker';

export interface JobSpec {
  kind: JobKind;
  preset?: Preset;
  /** The model folder's name, for messages. */
  model: string;
  /** The notification's title, e.g. "DomLoRA: PAGE probe of stories260K". */
  title: string;
}

interface Running { id: number; spec: JobSpec; cancelRequested: boolean }

/** The main phase of each job: the one whose done/total drives the notification's bar. */
const MAIN_PHASE: Record<JobKind, Progress['phase']> = { probe: 'probe', train: 'train', export: 'export', check: 'train' };

export class Jobs implements vscode.Disposable {
  private current?: Running;

  constructor(
    private readonly worker: WorkerClient,
    private readonly status: StatusBar,
    private readonly rememberedBackend: () => BackendInfo | undefined,
  ) {}

  get running(): JobSpec | undefined { return this.current?.spec; }

  /** Runs `method` in the worker; resolves with its result, rejects with a JobError (code 'cancelled' on cancel). */
  async run<M extends Method>(spec: JobSpec, method: M, params: MethodParams<M>,
    onProgress?: (p: Progress) => void): Promise<MethodResult<M>> {
    if (this.current) {
      throw new JobError('bad-input',
        `DomLoRA is already running a ${this.current.spec.kind} on ${this.current.spec.model}: wait for it to finish or run "DomLoRA: Cancel".`);
    }
    const startedAt = Date.now();
    this.status.set({ kind: 'running', job: spec.kind, preset: spec.preset, model: spec.model, startedAt });
    let reporter: vscode.Progress<{ message?: string; increment?: number }> | undefined;
    let reportedPercent = 0;
    const { id, result } = this.worker.request(method, params, {
      // The data line is in the output channel already (the worker's log goes there); what is wrong with the data
      // (mixed record shapes, records dropped for length) is worth a notification before the job's long work.
      onLog: (level, message) => {
        if (level === 'warn' && message.startsWith(DATA_PREFIX)) notify.warn(`DomLoRA: ${message.slice(DATA_PREFIX.length)}`);
      },
      onProgress: (p) => {
        if (!this.current || this.current.id !== id) return;
        this.status.set({ kind: 'running', job: spec.kind, preset: spec.preset, model: spec.model, startedAt, progress: p });
        if (reporter) {
          let increment: number | undefined;
          const fraction = jobFraction(spec.kind, p);
          if (fraction !== undefined) {
            const percent = Math.min(100, 100 * fraction);
            if (percent > reportedPercent) { increment = percent - reportedPercent; reportedPercent = percent; }
          }
          reporter.report({ message: describeProgress(p), increment });
        }
        onProgress?.(p);
      },
    });
    const running: Running = { id, spec, cancelRequested: false };
    this.current = running;
    void vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: spec.title, cancellable: true },
      (progress, token) => {
        reporter = progress;
        progress.report({ message: 'starting the worker…' });
        token.onCancellationRequested(() => this.cancel());
        return result.then(() => undefined, () => undefined);
      },
    );
    try {
      const value = await result;
      this.status.set({ kind: 'idle', backend: this.worker.backendInfo ?? this.rememberedBackend() });
      return value;
    } catch (err) {
      const e = err instanceof JobError ? err : new JobError('internal', String(err));
      this.status.set({
        kind: 'idle', backend: this.worker.backendInfo ?? this.rememberedBackend(),
        backendIsRemembered: !this.worker.backendInfo,
        // Only a failure of DomLoRA itself leaves a warning on the status bar; bad input is the user's to fix.
        lastError: e.code === 'internal' || e.code === 'out-of-memory' ? e.message : undefined,
      });
      throw running.cancelRequested && e.code !== 'bad-input' ? new JobError('cancelled', 'cancelled') : e;
    } finally {
      if (this.current === running) this.current = undefined;
    }
  }

  /** Cancels the running job; false when nothing runs. */
  cancel(): boolean {
    if (!this.current) return false;
    this.current.cancelRequested = true;
    this.worker.cancel(this.current.id);
    return true;
  }

  dispose(): void {
    this.cancel();
  }
}

/**
 * How far a job is, from 0 to 1, when its progress says: its main phase's done/total, and for a placement check the
 * runs finished plus the current run's share (its steps), so the bar moves across the whole check, not each run.
 */
export function jobFraction(kind: JobKind, p: Progress): number | undefined {
  const pl = p.placement;
  if (kind === 'check' && pl) {
    const runs = pl.count * pl.seeds;
    const before = (pl.index - 1) * pl.seeds + (pl.seedIndex - 1);
    const within = p.phase === 'train' && p.total > 0 ? p.done / p.total : 0;
    return (before + within) / runs;
  }
  return p.phase === MAIN_PHASE[kind] && p.total > 0 ? p.done / p.total : undefined;
}

/** "probe 12/32 · loss 2.31 · ETA 0:42", for the notification. */
export function describeProgress(p: Progress): string {
  const parts = [p.total > 0 ? `${p.phase} ${p.done}/${p.total}` : p.phase];
  if (p.loss !== undefined && Number.isFinite(p.loss)) parts.push(`loss ${p.loss.toFixed(3)}`);
  if (p.evalLoss !== undefined && Number.isFinite(p.evalLoss)) parts.push(`eval ${p.evalLoss.toFixed(3)}`);
  if (p.etaSeconds !== undefined && Number.isFinite(p.etaSeconds)) parts.push(`ETA ${formatDuration(p.etaSeconds)}`);
  if (p.message) parts.push(p.message);
  return parts.join(' · ');
}
