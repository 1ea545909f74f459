// The extension's context: the one owner of every disposable and every long-lived object (as rust-analyzer's
// ctx.ts). Commands are `(ctx) => handler` factories that receive it; `activate` builds it and nothing else.
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { Backend } from '../protocol/messages';
import { readSettings } from './config';
import { Jobs } from './jobs';
import { ModelFolders } from './modelFolders';
import { PanelManager } from './panel';
import { StatusBar } from './status';
import { Store } from './store';
import { WorkerClient } from './worker';

export type CommandFactory = (ctx: Ctx) => (...args: any[]) => unknown;

const BACKEND_KEY = 'domlora.lastBackend';

export class Ctx implements vscode.Disposable {
  readonly output: vscode.LogOutputChannel;
  readonly status: StatusBar;
  readonly worker: WorkerClient;
  readonly jobs: Jobs;
  readonly store: Store;
  readonly panels: PanelManager;
  readonly modelFolders: ModelFolders;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(readonly extension: vscode.ExtensionContext) {
    this.output = this.own(vscode.window.createOutputChannel('DomLoRA', { log: true }));
    this.status = this.own(new StatusBar());
    this.store = new Store(extension);
    this.worker = new WorkerClient({
      script: extension.asAbsolutePath(path.join('dist', 'worker.js')),
      log: (line) => this.output.info(line),
      backend: () => readSettings().backend,
    });
    this.own({ dispose: () => this.worker.dispose() });
    this.own(this.worker.onDidReady((info) => {
      void extension.globalState.update(BACKEND_KEY, info.backend);
      if (this.status.current.kind === 'idle') this.status.set({ ...this.status.current, backend: info.backend, backendIsRemembered: false });
      this.panels.setBackend(info.backend);
    }));
    this.own(this.worker.onDidExit((reason) => this.output.warn(`[host] ${reason}`)));
    this.jobs = this.own(new Jobs(this.worker, this.status, () => this.rememberedBackend()));
    this.panels = this.own(new PanelManager(this));
    this.modelFolders = this.own(new ModelFolders());
    this.status.set({ kind: 'idle', backend: this.rememberedBackend(), backendIsRemembered: true });
    this.status.show();
  }

  rememberedBackend(): Backend | undefined {
    return this.extension.globalState.get<Backend>(BACKEND_KEY);
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
