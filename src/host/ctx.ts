// The extension's context: the one owner of every disposable and every long-lived object (as rust-analyzer's
// ctx.ts). Commands are `(ctx) => handler` factories that receive it; `activate` builds it and nothing else.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { Backend, BackendInfo } from '../protocol/messages';
import { readSettings } from './config';
import { Jobs } from './jobs';
import { ModelFolders } from './modelFolders';
import { Models } from './models';
import { MODELS_VIEW, ModelsView } from './modelsView';
import { onNotice, recentNotices, type Notice } from './notify';
import { PanelManager } from './panel';
import { StatusBar } from './status';
import { insideRoots, restrictedMessage, restrictedRoots } from './trust';
import { Store } from './store';
import { WorkerClient } from './worker';

/** A command: VS Code hands each handler what its caller passed (a URI from a menu, options from another command). */
export type CommandFactory = (ctx: Ctx) => (...args: never[]) => unknown;

/** The last worker's backend: a BackendInfo (older versions stored the bare backend name). */
const BACKEND_KEY = 'domlora.lastBackend';

export class Ctx implements vscode.Disposable {
  readonly output: vscode.LogOutputChannel;
  readonly status: StatusBar;
  readonly worker: WorkerClient;
  readonly jobs: Jobs;
  readonly store: Store;
  readonly models: Models;
  readonly panels: PanelManager;
  readonly modelFolders: ModelFolders;
  readonly modelsView: ModelsView;
  /** The worker script (dist/worker.js). */
  readonly workerScript: string;
  /** Where "DomLoRA: Install Native Backend…" installs tfjs-node; the worker loads it from there (DOMLORA_NATIVE_DIR). */
  readonly nativeDir: string;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(readonly extension: vscode.ExtensionContext) {
    this.output = this.own(vscode.window.createOutputChannel('DomLoRA', { log: true }));
    this.status = this.own(new StatusBar());
    this.store = new Store(extension);
    this.workerScript = extension.asAbsolutePath(path.join('dist', 'worker.js'));
    this.nativeDir = path.join(extension.globalStorageUri.fsPath, 'native-backend');
    this.worker = new WorkerClient({
      script: this.workerScript,
      log: (line) => this.log(line),
      backend: () => readSettings(undefined, this.isTrusted()).backend,
      env: (): Record<string, string> => (fs.existsSync(this.nativeDir) ? { DOMLORA_NATIVE_DIR: this.nativeDir } : {}),
    });
    this.own({ dispose: () => this.worker.dispose() });
    this.own(this.worker.onDidReady((info) => {
      const backend: BackendInfo = { backend: info.backend, device: info.device, detail: info.detail };
      void extension.globalState.update(BACKEND_KEY, backend);
      if (this.status.current.kind === 'idle') this.status.set({ ...this.status.current, backend, backendIsRemembered: false });
      this.models.setBackend(backend);
    }));
    this.own(this.worker.onDidExit((reason) => this.log(`[host] ${reason}`)));
    this.jobs = this.own(new Jobs(this.worker, this.status, () => this.rememberedBackend()));
    this.models = this.own(new Models(this.store, () => this.worker.backendInfo ?? this.rememberedBackend()));
    this.panels = this.own(new PanelManager({
      extensionUri: extension.extensionUri, models: this.models, store: this.store, log: (line) => this.log(line),
      isTrusted: () => this.isTrusted(),
    }));
    this.modelFolders = this.own(new ModelFolders());
    this.modelsView = this.own(new ModelsView(this.worker, this.modelFolders, (line) => this.log(line),
      { publishContext: true, isTrusted: () => this.isTrusted() }));
    // Trusted from now on: the view lists the cache too, and restored panels may read their reports.
    this.own(vscode.workspace.onDidGrantWorkspaceTrust(() => this.modelsView.refresh()));
    this.own(vscode.window.createTreeView(MODELS_VIEW, { treeDataProvider: this.modelsView, showCollapseAll: true }));
    onNotice((n) => this.log(`[${n.level === 'warning' ? 'warn' : n.level}] ${n.message}`));
    this.own({ dispose: () => onNotice(undefined) });
    this.status.set({ kind: 'idle', backend: this.rememberedBackend(), backendIsRemembered: true });
    this.status.show();
  }

  /** A line for the "DomLoRA" output channel (and DOMLORA_LOG_FILE, which the e2e driver sets to keep the log). */
  log(line: string): void {
    this.output.info(line);
    const file = process.env.DOMLORA_LOG_FILE;
    if (file) {
      try { fs.appendFileSync(file, `${new Date().toISOString()} ${line}\n`); } catch { /* the log file is a convenience */ }
    }
  }

  /** Workspace Trust: false in Restricted Mode. A property, so the host tests can play an untrusted workspace. */
  isTrusted: () => boolean = () => vscode.workspace.isTrusted;

  /**
   * Why `p` (described by `what`, such as "the dataset") may not be read or written: in Restricted Mode, when it lies
   * outside the workspace and the extension's storage (trust.ts). Undefined when it may.
   */
  restriction(p: string, what: string): string | undefined {
    if (this.isTrusted() || insideRoots(p, restrictedRoots(this.extension))) return undefined;
    return restrictedMessage(what, p);
  }

  /** The messages shown to the user, newest last (read by the host tests). */
  get notices(): readonly Notice[] { return recentNotices(); }

  rememberedBackend(): BackendInfo | undefined {
    const v = this.extension.globalState.get<BackendInfo | Backend>(BACKEND_KEY);
    return typeof v === 'string' ? { backend: v } : v;
  }

  own<T extends vscode.Disposable>(d: T): T {
    this.disposables.push(d);
    return d;
  }

  registerCommand(name: string, factory: CommandFactory): void {
    this.own(vscode.commands.registerCommand(`domlora.${name}`, factory(this)));
  }

  dispose(): void {
    for (const d of this.disposables.splice(0).reverse()) {
      try {
        d.dispose();
      } catch (err) {
        console.error('DomLoRA: dispose failed', err);
      }
    }
  }
}
