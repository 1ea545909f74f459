// The PAGE heatmap panels, one per model folder. The state they draw belongs to Models: a panel sends it whole when
// it changes, and sends each user action on, one message each; the webview only draws.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { TrainCurvePoint } from '../protocol/messages';
import {
  CancelCommand, CheckPlacementCommand, checkCommand, CloseComparisonCommand, CompareDatasetsCommand, ExportCommand, PlaceCommand,
  ReadyCommand, RerunProbeCommand, RevealCommand, RevealPlacementCommand, StateNotification, TrainCommand, TrainPointNotification,
  type PanelState, type Preset, type WebviewMessage, type WebviewPersistedState,
} from '../protocol/webview';
import type { Models } from './models';
import { isModelFolder, modelName, type Store } from './store';

export const VIEW_TYPE = 'domlora.heatmap';

/** What the panels need from the rest of the host, handed in by the context. */
export interface PanelDeps {
  extensionUri: vscode.Uri;
  models: Models;
  /** Remembers the model last looked at, so a restored panel knows its model. */
  store: Pick<Store, 'lastModel' | 'setLastModel'>;
  log(line: string): void;
  /** Workspace Trust: in Restricted Mode a panel is not restored on its own (it would read the model's reports). */
  isTrusted?: () => boolean;
}

export class HeatmapPanel implements vscode.Disposable {
  private readonly disposables: vscode.Disposable[] = [];
  private disposed = false;

  constructor(
    private readonly deps: PanelDeps,
    readonly panel: vscode.WebviewPanel,
    readonly modelDir: string,
    private readonly onDispose: () => void,
  ) {
    const ext = deps.extensionUri;
    panel.webview.options = {
      enableScripts: true,
      localResourceRoots: [vscode.Uri.joinPath(ext, 'dist'), vscode.Uri.joinPath(ext, 'media')],
    };
    panel.iconPath = {
      light: vscode.Uri.joinPath(ext, 'media', 'heatmap-light.svg'),
      dark: vscode.Uri.joinPath(ext, 'media', 'heatmap-dark.svg'),
    };
    panel.title = `PAGE · ${modelName(modelDir)}`;
    panel.webview.html = renderHtml(panel.webview, ext, modelDir);
    this.disposables.push(
      panel.webview.onDidReceiveMessage((m: unknown) => void this.receive(m)),
      panel.onDidDispose(() => this.dispose()),
      panel.onDidChangeViewState((e) => { if (e.webviewPanel.active) void deps.store.setLastModel(modelDir); }),
    );
  }

  post(state: PanelState): void {
    if (!this.disposed) void this.panel.webview.postMessage(StateNotification.make(state));
  }

  postPoint(preset: Preset, point: TrainCurvePoint, total: number, etaSeconds?: number): void {
    if (!this.disposed) void this.panel.webview.postMessage(TrainPointNotification.make({ preset, point, total, etaSeconds }));
  }

  /** A message from the webview: acted on only when it is a declared command with parameters of its type. */
  receive(raw: unknown): Promise<void> {
    const checked = checkCommand(raw);
    if (!checked.ok) {
      this.deps.log(`[panel] dropped a message from the webview: ${checked.why}`);
      return Promise.resolve();
    }
    return this.onMessage(checked.msg);
  }

  private async onMessage(m: WebviewMessage): Promise<void> {
    const uri = vscode.Uri.file(this.modelDir);
    try {
      if (ReadyCommand.is(m)) {
        this.post(this.deps.models.state(this.modelDir));
      } else if (PlaceCommand.is(m)) {
        await this.deps.models.place(this.modelDir, m.params.module);
      } else if (TrainCommand.is(m)) {
        await vscode.commands.executeCommand('domlora.train', uri, { preset: m.params.preset });
      } else if (ExportCommand.is(m)) {
        await vscode.commands.executeCommand('domlora.export', uri, { preset: m.params.preset });
      } else if (CancelCommand.is(m)) {
        await vscode.commands.executeCommand('domlora.cancel');
      } else if (RerunProbeCommand.is(m)) {
        await vscode.commands.executeCommand('domlora.runProbe', uri);
      } else if (CheckPlacementCommand.is(m)) {
        await vscode.commands.executeCommand('domlora.checkPlacement', uri, m.params?.resume === true ? { resume: true } : {});
      } else if (RevealPlacementCommand.is(m)) {
        await this.revealPlacement(m.params?.placement);
      } else if (CompareDatasetsCommand.is(m)) {
        await vscode.commands.executeCommand('domlora.compareDatasets', uri);
      } else if (CloseComparisonCommand.is(m)) {
        this.deps.models.setComparison(this.modelDir, undefined);
      } else if (RevealCommand.is(m)) {
        // The path is the host's own: the panel's report, or the adapter its run wrote.
        const state = this.deps.models.state(this.modelDir);
        const p = m.params.what === 'report' ? state.reportPath : state.runs[m.params.preset]?.result?.adapterDir;
        if (!p) { this.deps.log(`[panel] reveal: this model has no ${m.params.what === 'report' ? 'report' : `${m.params.preset} adapter`}`); return; }
        const target = vscode.Uri.file(p);
        const inWorkspace = vscode.workspace.getWorkspaceFolder(target);
        await vscode.commands.executeCommand(inWorkspace ? 'revealInExplorer' : 'revealFileInOS', target);
      }
    } catch (err) {
      this.deps.log(`[panel] ${m.method}: ${String(err)}`);
    }
  }

  /**
   * Opens the adapters of one placement of the check shown: the webview names the placement, and the folder is the
   * one the check's own result gives for it, so no path from the webview is ever opened.
   */
  private async revealPlacement(id: unknown): Promise<void> {
    const result = this.deps.models.check(this.modelDir)?.result;
    const placement = typeof id === 'string' ? result?.placements.find((p) => p.id === id) : undefined;
    if (!placement || !placement.runs.length) {
      this.deps.log(`[panel] check/reveal: no placement ${JSON.stringify(id)} in the check shown`);
      return;
    }
    // All its seeds: the placement's folder; one seed: that run's adapter.
    const folder = placement.runs.length > 1 ? path.dirname(placement.runs[0].adapterDir) : placement.runs[0].adapterDir;
    if (!fs.existsSync(folder)) {
      void vscode.window.showWarningMessage(`DomLoRA: the adapters of ${placement.label} are no longer in ${folder}.`);
      return;
    }
    const target = vscode.Uri.file(folder);
    this.deps.log(`[panel] revealing the adapters of ${placement.id}: ${folder}`);
    await vscode.commands.executeCommand(vscode.workspace.getWorkspaceFolder(target) ? 'revealInExplorer' : 'revealFileInOS', target);
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
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly deps: PanelDeps) {
    const { models, store } = deps;
    this.disposables.push(
      // A panel restored after a reload: the webview's saved state names its model; the host sends the data again.
      vscode.window.registerWebviewPanelSerializer(VIEW_TYPE, {
        deserializeWebviewPanel: async (panel: vscode.WebviewPanel, state: unknown) => {
          const saved = (state as WebviewPersistedState | undefined)?.modelDir;
          // The saved state comes from the webview: only a model folder, and nothing read before the user asks in Restricted Mode.
          const modelDir = typeof saved === 'string' ? saved : store.lastModel();
          if (!modelDir || !isModelFolder(modelDir) || deps.isTrusted?.() === false) { panel.dispose(); return; }
          this.adopt(panel, modelDir);
        },
      }),
      models.onDidChange((modelDir) => {
        for (const key of modelDir === undefined ? [...this.panels.keys()] : [modelDir]) this.refresh(key);
      }),
      models.onDidAddPoint((p) => this.get(p.modelDir)?.postPoint(p.preset, p.point, p.total, p.etaSeconds)),
    );
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
    const panel = vscode.window.createWebviewPanel(VIEW_TYPE, `PAGE · ${modelName(key)}`,
      { viewColumn: vscode.ViewColumn.Active, preserveFocus }, {
        enableScripts: true,
        localResourceRoots: [vscode.Uri.joinPath(this.deps.extensionUri, 'dist'),
          vscode.Uri.joinPath(this.deps.extensionUri, 'media')],
      });
    return this.adopt(panel, key);
  }

  private adopt(panel: vscode.WebviewPanel, modelDir: string): HeatmapPanel {
    const key = path.resolve(modelDir);
    const hp = new HeatmapPanel(this.deps, panel, key, () => this.panels.delete(key));
    this.panels.set(key, hp);
    void this.deps.store.setLastModel(key);
    return hp;
  }

  /** Sends the model's state to its panel, if one is open. */
  private refresh(modelDir: string): void {
    this.get(modelDir)?.post(this.deps.models.state(modelDir));
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
<title>PAGE · ${esc(modelName(modelDir))}</title>
</head>
<body data-model-dir="${esc(modelDir)}">
<main id="app" aria-live="polite"><p class="loading">Loading the PAGE report…</p></main>
<script type="module" nonce="${n}" src="${asset('dist', 'vscode-elements.js')}"></script>
<script type="module" nonce="${n}" src="${asset('dist', 'webview.js')}"></script>
</body>
</html>`;
}
