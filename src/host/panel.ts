// The PAGE heatmap panel, one per model folder. The host owns the state (report, placement, runs, job) and sends it
// whole; the webview only draws it and sends back the user's actions, one message each.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { Backend, Progress, ProbeReport, TrainCurvePoint } from '../protocol/messages';
import {
  CancelCommand, ExportCommand, PlaceCommand, ReadyCommand, RerunProbeCommand, RevealCommand, StateNotification,
  TrainCommand, TrainPointNotification,
  type HeatmapReport, type JobView, type PanelState, type Preset, type RunView, type WebviewMessage,
  type WebviewPersistedState,
} from '../protocol/webview';
import type { Ctx } from './ctx';


export const VIEW_TYPE = 'domlora.heatmap';

/** The report without the per-record matrix, which the panel does not draw. */
export function slimReport(r: ProbeReport): HeatmapReport {
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
}

export class HeatmapPanel implements vscode.Disposable {
  private readonly disposables: vscode.Disposable[] = [];
  private disposed = false;

  constructor(
    private readonly ctx: Ctx,
    readonly panel: vscode.WebviewPanel,
    readonly modelDir: string,
    private readonly onDispose: () => void,
  ) {
    const ext = ctx.extension.extensionUri;
    panel.webview.options = {
      enableScripts: true,
      localResourceRoots: [vscode.Uri.joinPath(ext, 'dist'), vscode.Uri.joinPath(ext, 'media')],
    };
    panel.iconPath = {
      light: vscode.Uri.joinPath(ext, 'media', 'heatmap-light.svg'),
      dark: vscode.Uri.joinPath(ext, 'media', 'heatmap-dark.svg'),
    };
    panel.title = `PAGE · ${path.basename(modelDir)}`;
    panel.webview.html = renderHtml(panel.webview, ext, modelDir);
    this.disposables.push(
      panel.webview.onDidReceiveMessage((m: WebviewMessage) => void this.onMessage(m)),
      panel.onDidDispose(() => this.dispose()),
      panel.onDidChangeViewState((e) => { if (e.webviewPanel.active) void ctx.store.setLastModel(modelDir); }),
    );
  }

  post(state: PanelState): void {
    if (!this.disposed) void this.panel.webview.postMessage(StateNotification.make(state));
  }

  postPoint(preset: Preset, point: TrainCurvePoint, total: number, etaSeconds?: number): void {
    if (!this.disposed) void this.panel.webview.postMessage(TrainPointNotification.make({ preset, point, total, etaSeconds }));
  }

  private async onMessage(m: WebviewMessage): Promise<void> {
    const uri = vscode.Uri.file(this.modelDir);
    try {
      if (ReadyCommand.is(m)) {
        this.ctx.panels.refresh(this.modelDir);
      } else if (PlaceCommand.is(m)) {
        await this.ctx.panels.place(this.modelDir, m.params.module);
      } else if (TrainCommand.is(m)) {
        await vscode.commands.executeCommand('domlora.train', uri, { preset: m.params.preset });
      } else if (ExportCommand.is(m)) {
        await vscode.commands.executeCommand('domlora.export', uri, { preset: m.params.preset });
      } else if (CancelCommand.is(m)) {
        await vscode.commands.executeCommand('domlora.cancel');
      } else if (RerunProbeCommand.is(m)) {
        await vscode.commands.executeCommand('domlora.runProbe', uri);
      } else if (RevealCommand.is(m)) {
        const target = vscode.Uri.file(m.params.path);
        const inWorkspace = vscode.workspace.getWorkspaceFolder(target);
        await vscode.commands.executeCommand(inWorkspace ? 'revealInExplorer' : 'revealFileInOS', target);
      }
    } catch (err) {
      this.ctx.log(`[panel] ${m.method}: ${String(err)}`);
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.onDispose();
    for (const d of this.disposables.splice(0)) d.dispose();
    this.panel.dispose();
  }
}

export class PanelManager implements vscode.Disposable {
  private readonly panels = new Map<string, HeatmapPanel>();
  private readonly live = new Map<string, ModelLive>();
  private backend?: Backend;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly ctx: Ctx) {
    // A panel restored after a reload: the webview's saved state names its model; the host sends the data again.
    this.disposables.push(vscode.window.registerWebviewPanelSerializer(VIEW_TYPE, {
      deserializeWebviewPanel: async (panel: vscode.WebviewPanel, state: unknown) => {
        const modelDir = (state as WebviewPersistedState | undefined)?.modelDir ?? ctx.store.lastModel();
        if (!modelDir || !fs.existsSync(modelDir)) { panel.dispose(); return; }
        this.adopt(panel, modelDir);
      },
    }));
  }

  get(modelDir: string): HeatmapPanel | undefined { return this.panels.get(path.resolve(modelDir)); }

  /** Open panels' model folders, the active one first. */
  openModels(): string[] {
    const all = [...this.panels.values()];
    all.sort((a, b) => Number(b.panel.active) - Number(a.panel.active));
    return all.map((p) => p.modelDir);
  }

  /** The model of the panel the user looked at last (or any open one). */
  activeModel(): string | undefined {
    return this.openModels()[0];
  }

  /** Opens (or reveals) the panel of a model. */
  show(modelDir: string, preserveFocus = false): HeatmapPanel {
    const key = path.resolve(modelDir);
    const existing = this.panels.get(key);
    if (existing) {
      existing.panel.reveal(undefined, preserveFocus);
      this.refresh(key);
      return existing;
    }
    const panel = vscode.window.createWebviewPanel(VIEW_TYPE, `PAGE · ${path.basename(key)}`,
      { viewColumn: vscode.ViewColumn.Active, preserveFocus }, {
        enableScripts: true,
        localResourceRoots: [vscode.Uri.joinPath(this.ctx.extension.extensionUri, 'dist'),
          vscode.Uri.joinPath(this.ctx.extension.extensionUri, 'media')],
      });
    return this.adopt(panel, key);
  }

  private adopt(panel: vscode.WebviewPanel, modelDir: string): HeatmapPanel {
    const key = path.resolve(modelDir);
    const hp = new HeatmapPanel(this.ctx, panel, key, () => this.panels.delete(key));
    this.panels.set(key, hp);
    void this.ctx.store.setLastModel(key);
    return hp;
  }

  setReport(modelDir: string, report: ProbeReport, reportPath: string): void {
    const live = this.liveOf(modelDir);
    live.report = report;
    live.reportPath = reportPath;
    this.refresh(modelDir);
  }

  /** The report the panel shows: the one set in this session, else the newest on disk. */
  report(modelDir: string): { report: ProbeReport; path: string } | undefined {
    const live = this.liveOf(modelDir);
    if (live.report && live.reportPath) return { report: live.report, path: live.reportPath };
    const latest = this.ctx.store.latestReport(modelDir);
    if (latest) { live.report = latest.report; live.reportPath = latest.path; }
    return latest;
  }

  /** The module the adapter goes to: the user's placement if it exists in the report, else the dominant module. */
  placement(modelDir: string): { module?: string; isUserChoice: boolean } {
    const r = this.report(modelDir)?.report;
    const placed = this.ctx.store.placement(modelDir);
    if (placed && (!r || r.modules.some((m) => m.name === placed))) return { module: placed, isUserChoice: true };
    return { module: r?.dominant.name, isUserChoice: false };
  }

  async place(modelDir: string, module: string | undefined): Promise<void> {
    const r = this.report(modelDir)?.report;
    if (module && r && !r.modules.some((m) => m.name === module)) return;
    // Placing on the dominant module is the default, so it is stored as "no choice".
    await this.ctx.store.setPlacement(modelDir, module && module !== r?.dominant.name ? module : undefined);
    this.refresh(modelDir);
  }

  setJob(modelDir: string, job: JobView | undefined): void {
    this.liveOf(modelDir).job = job;
    this.refresh(modelDir);
  }

  jobProgress(modelDir: string, progress: Progress): void {
    const live = this.liveOf(modelDir);
    if (!live.job) return;
    const phaseChanged = live.job.progress?.phase !== progress.phase;
    live.job = { ...live.job, progress };
    // Probe progress redraws the header line only; a whole state every record would be wasteful for big reports,
    // so only phase changes and every few records are sent.
    if (phaseChanged || progress.done === progress.total || progress.done % 4 === 0) this.refresh(modelDir);
  }

  startRun(modelDir: string, run: RunView): void {
    this.liveOf(modelDir).liveRun = run;
    this.refresh(modelDir);
  }

  /** A training progress event: extends the live curve and sends just the new point. */
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
    this.get(modelDir)?.postPoint(preset, point, run.steps, p.etaSeconds);
  }

  async endRun(modelDir: string, run: RunView): Promise<void> {
    const live = this.liveOf(modelDir);
    live.liveRun = undefined;
    if (run.status === 'done') await this.ctx.store.setRun(modelDir, run);
    else live.liveRun = run; // a failed or cancelled run stays visible until the next one, but is not remembered
    this.refresh(modelDir);
  }

  setBackend(backend: Backend): void {
    this.backend = backend;
    for (const key of this.panels.keys()) this.refresh(key);
  }

  state(modelDir: string): PanelState {
    const key = path.resolve(modelDir);
    const live = this.liveOf(key);
    const rep = this.report(key);
    const placement = this.placement(key);
    const runs: Partial<Record<Preset, RunView>> = { ...this.ctx.store.runs(key) };
    if (live.liveRun) runs[live.liveRun.preset] = live.liveRun;
    return {
      modelDir: key,
      modelName: path.basename(key),
      report: rep ? slimReport(rep.report) : undefined,
      reportPath: rep?.path,
      placement: placement.module,
      placementIsUserChoice: placement.isUserChoice,
      runs,
      job: live.job,
      backend: this.backend ?? this.ctx.worker.backend ?? this.ctx.rememberedBackend(),
      rank: rep?.report.config.rank,
    };
  }

  refresh(modelDir: string): void {
    const panel = this.get(modelDir);
    if (panel) panel.post(this.state(modelDir));
  }

  /** Forgets a cached report (e.g. after it was deleted on disk). */
  forgetReport(modelDir: string): void {
    const live = this.liveOf(modelDir);
    live.report = undefined;
    live.reportPath = undefined;
  }

  private liveOf(modelDir: string): ModelLive {
    const key = path.resolve(modelDir);
    let live = this.live.get(key);
    if (!live) { live = {}; this.live.set(key, live); }
    return live;
  }

  dispose(): void {
    for (const p of [...this.panels.values()]) p.dispose();
    for (const d of this.disposables.splice(0)) d.dispose();
  }
}

export function nonce(): string {
  return crypto.randomBytes(18).toString('base64').replace(/[^A-Za-z0-9]/g, '');
}

function renderHtml(webview: vscode.Webview, ext: vscode.Uri, modelDir: string): string {
  const n = nonce();
  const asset = (...p: string[]) => webview.asWebviewUri(vscode.Uri.joinPath(ext, ...p)).toString();
  // No inline script or style: every script and stylesheet is one of ours, named by the nonce. Styles set from
  // script go through the CSSOM (element.style), which CSP allows.
  const csp = [
    "default-src 'none'",
    `img-src ${webview.cspSource} data:`,
    `style-src ${webview.cspSource} 'nonce-${n}'`,
    `font-src ${webview.cspSource}`,
    `script-src 'nonce-${n}'`,
  ].join('; ');
  const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]!));
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" nonce="${n}" href="${asset('dist', 'codicon.css')}" id="vscode-codicon-stylesheet">
<link rel="stylesheet" nonce="${n}" href="${asset('media', 'heatmap.css')}">
<title>PAGE · ${esc(path.basename(modelDir))}</title>
</head>
<body data-model-dir="${esc(modelDir)}">
<main id="app" aria-live="polite"><p class="loading">Loading the PAGE report…</p></main>
<script type="module" nonce="${n}" src="${asset('dist', 'vscode-elements.js')}"></script>
<script type="module" nonce="${n}" src="${asset('dist', 'webview.js')}"></script>
</body>
</html>`;
}


