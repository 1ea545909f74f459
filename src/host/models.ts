// The host's state of each model folder: what lives only in memory (the report shown, the job running on it, a
// training run in progress, the worker's backend) with what the workspace remembers (the placement, finished runs,
// the newest report on disk). Commands change it; it fires `onDidChange`, and the heatmap panel of that model
// redraws from `state()`. It knows nothing of panels.
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { BackendInfo, Progress, ProbeReport, TrainCurvePoint } from '../protocol/messages';
import type { CheckView, ComparisonView, HeatmapReport, JobView, PanelState, Preset, RunView } from '../protocol/webview';
import { modelName, type Store } from './store';

/** The report without the per-record matrix, which the panel does not draw. */
function slimReport(r: ProbeReport): HeatmapReport {
  const { perRecordExpected: _unused, ...rest } = r;
  void _unused;
  return rest;
}

/** What lives only in memory for a model: the report shown, the job running on it, a training run in progress. */
interface ModelLive {
  report?: ProbeReport;
  reportPath?: string;
  job?: JobView;
  liveRun?: RunView;
  check?: CheckView;
  comparison?: ComparisonView;
}

/** A step of a live training run: appended to its curve without sending the whole state. */
export interface TrainPoint { modelDir: string; preset: Preset; point: TrainCurvePoint; total: number; etaSeconds?: number }

export class Models implements vscode.Disposable {
  private readonly live = new Map<string, ModelLive>();
  private backend?: BackendInfo;
  private readonly changed = new vscode.EventEmitter<string | undefined>();
  private readonly pointAdded = new vscode.EventEmitter<TrainPoint>();
  /** The state of a model changed (its folder, resolved), or of every model (undefined: the backend changed). */
  readonly onDidChange = this.changed.event;
  /** A live training run has a new point (the state holds it too). */
  readonly onDidAddPoint = this.pointAdded.event;

  /** `workerBackend`: the backend to show before this session's worker said which it chose. */
  constructor(private readonly store: Store, private readonly workerBackend: () => BackendInfo | undefined) {}

  setReport(modelDir: string, report: ProbeReport, reportPath: string): void {
    const live = this.liveOf(modelDir);
    live.report = report;
    live.reportPath = reportPath;
    this.fire(modelDir);
  }

  /** The report of a model: the one set in this session, else the newest on disk. */
  report(modelDir: string): { report: ProbeReport; path: string } | undefined {
    const live = this.liveOf(modelDir);
    if (live.report && live.reportPath) return { report: live.report, path: live.reportPath };
    const latest = this.store.latestReport(modelDir);
    if (latest) { live.report = latest.report; live.reportPath = latest.path; }
    return latest;
  }

  /** The module the adapter goes to: the user's placement if it exists in the report, else the dominant module. */
  placement(modelDir: string): { module?: string; isUserChoice: boolean } {
    const r = this.report(modelDir)?.report;
    const placed = this.store.placement(modelDir);
    if (placed && (!r || r.modules.some((m) => m.name === placed))) return { module: placed, isUserChoice: true };
    return { module: r?.dominant.name, isUserChoice: false };
  }

  async place(modelDir: string, module: string | undefined): Promise<void> {
    const r = this.report(modelDir)?.report;
    // Only a module of the report: the name comes from the webview, which may be sent anything.
    if (module && !r?.modules.some((m) => m.name === module)) return;
    // Placing on the dominant module is the default, so it is stored as "no choice".
    await this.store.setPlacement(modelDir, module && module !== r?.dominant.name ? module : undefined);
    this.fire(modelDir);
  }

  setJob(modelDir: string, job: JobView | undefined): void {
    this.liveOf(modelDir).job = job;
    this.fire(modelDir);
  }

  jobProgress(modelDir: string, progress: Progress): void {
    const live = this.liveOf(modelDir);
    if (!live.job) return;
    const phaseChanged = live.job.progress?.phase !== progress.phase;
    live.job = { ...live.job, progress };
    // Probe progress redraws the header line only; a whole state every record would be wasteful for big reports,
    // so only phase changes and every few records are sent.
    if (phaseChanged || progress.done === progress.total || progress.done % 4 === 0) this.fire(modelDir);
  }

  startRun(modelDir: string, run: RunView): void {
    this.liveOf(modelDir).liveRun = run;
    this.fire(modelDir);
  }

  /** A training progress event: extends the live curve and announces just the new point. */
  runProgress(modelDir: string, preset: Preset, p: Progress): void {
    const run = this.liveOf(modelDir).liveRun;
    if (!run || run.preset !== preset) return;
    if (p.phase !== 'train' && p.phase !== 'eval') return;
    const point: TrainCurvePoint = { step: p.done };
    if (p.loss !== undefined) point.loss = p.loss;
    if (p.evalLoss !== undefined) point.evalLoss = p.evalLoss;
    if (p.lr !== undefined) point.lr = p.lr;
    if (point.loss === undefined && point.evalLoss === undefined) return;
    if (p.phase === 'train') run.steps = p.total || run.steps;
    const last = run.curve[run.curve.length - 1];
    if (last && last.step === point.step) Object.assign(last, point);
    else run.curve.push(point);
    run.etaSeconds = p.etaSeconds;
    this.pointAdded.fire({ modelDir: path.resolve(modelDir), preset, point, total: run.steps, etaSeconds: p.etaSeconds });
  }

  async endRun(modelDir: string, run: RunView): Promise<void> {
    const live = this.liveOf(modelDir);
    live.liveRun = undefined;
    if (run.status === 'done') await this.store.setRun(modelDir, run);
    else live.liveRun = run; // a failed or cancelled run stays visible until the next one, but is not remembered
    this.fire(modelDir);
  }

  /** The model's placement check: the live one, else the last one remembered. */
  check(modelDir: string): CheckView | undefined {
    return this.liveOf(modelDir).check ?? this.store.lastCheck(modelDir);
  }

  /** A check starts, ends or stops: shown at once, and remembered unless it is still running. */
  async setCheck(modelDir: string, view: CheckView): Promise<void> {
    // A check that ended shows its result or its stop, never the last progress of its last run.
    this.liveOf(modelDir).check = view.status === 'running' ? { ...view } : { ...view, progress: undefined };
    if (view.status !== 'running') await this.store.setLastCheck(modelDir, view);
    this.fire(modelDir);
  }

  /** A running check's progress: redrawn when the run changes, and every few steps within one. */
  checkProgress(modelDir: string, p: Progress): void {
    const check = this.liveOf(modelDir).check;
    if (!check || check.status !== 'running') return;
    const prev = check.progress;
    this.liveOf(modelDir).check = { ...check, progress: p };
    const runChanged = prev?.placement?.index !== p.placement?.index || prev?.placement?.seed !== p.placement?.seed || prev?.phase !== p.phase;
    if (runChanged || p.done === p.total || p.done % 4 === 0) this.fire(modelDir);
  }

  setComparison(modelDir: string, view: ComparisonView | undefined): void {
    this.liveOf(modelDir).comparison = view;
    this.fire(modelDir);
  }

  setBackend(backend: BackendInfo): void {
    this.backend = backend;
    this.changed.fire(undefined);
  }

  /** Everything the panel of a model draws. */
  state(modelDir: string): PanelState {
    const key = path.resolve(modelDir);
    const live = this.liveOf(key);
    const rep = this.report(key);
    const placement = this.placement(key);
    const runs: Partial<Record<Preset, RunView>> = { ...this.store.runs(key) };
    if (live.liveRun) runs[live.liveRun.preset] = live.liveRun;
    return {
      modelDir: key,
      modelName: modelName(key),
      report: rep ? slimReport(rep.report) : undefined,
      reportPath: rep?.path,
      placement: placement.module,
      placementIsUserChoice: placement.isUserChoice,
      runs,
      job: live.job,
      backend: this.backend ?? this.workerBackend(),
      rank: rep?.report.config.rank,
      check: this.check(key),
      comparison: live.comparison,
    };
  }

  private fire(modelDir: string): void {
    this.changed.fire(path.resolve(modelDir));
  }

  private liveOf(modelDir: string): ModelLive {
    const key = path.resolve(modelDir);
    let live = this.live.get(key);
    if (!live) { live = {}; this.live.set(key, live); }
    return live;
  }

  dispose(): void {
    this.changed.dispose();
    this.pointAdded.dispose();
  }
}
