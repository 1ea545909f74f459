// Keeps the context key `domlora.modelFolders` (the paths of the workspace's folders that hold a Hugging Face
// `config.json`) up to date, so the Explorer offers "Run PAGE Probe" on model folders only. The commands still
// check the folder themselves: the palette and other extensions can pass any folder.
import * as path from 'node:path';
import * as vscode from 'vscode';

const EXCLUDE = '**/{node_modules,.git,.domlora,.vscode-test}/**';
const LIMIT = 2000;

/** True when the text of a config.json looks like a Hugging Face model config. */
export function looksLikeModelConfig(text: string): boolean {
  try {
    const c = JSON.parse(text) as Record<string, unknown>;
    return typeof c === 'object' && c !== null && (typeof c.model_type === 'string' || Array.isArray(c.architectures));
  } catch {
    return false;
  }
}

export class ModelFolders implements vscode.Disposable {
  private readonly folders = new Map<string, vscode.Uri>();
  private readonly disposables: vscode.Disposable[] = [];
  private refreshTimer?: NodeJS.Timeout;
  private readonly changed = new vscode.EventEmitter<void>();
  readonly ready: Promise<void>;
  /** The set of model folders was published again (after a scan or a config.json came, changed or went). */
  readonly onDidChange = this.changed.event;

  constructor() {
    const watcher = vscode.workspace.createFileSystemWatcher('**/config.json');
    this.disposables.push(watcher,
      watcher.onDidCreate((u) => void this.check(u).then(() => this.publish())),
      watcher.onDidChange((u) => void this.check(u).then(() => this.publish())),
      watcher.onDidDelete((u) => { this.folders.delete(dirKey(u)); this.publish(); }),
      vscode.workspace.onDidChangeWorkspaceFolders(() => this.scheduleRefresh()));
    this.ready = this.refresh();
  }

  /** Model folders found in the workspace, sorted by path. */
  list(): vscode.Uri[] {
    return [...this.folders.values()].sort((a, b) => a.path.localeCompare(b.path));
  }

  async refresh(): Promise<void> {
    const files = await vscode.workspace.findFiles('**/config.json', EXCLUDE, LIMIT);
    this.folders.clear();
    await Promise.all(files.map((f) => this.check(f)));
    await this.publish();
  }

  private scheduleRefresh(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => void this.refresh(), 500);
  }

  private async check(configUri: vscode.Uri): Promise<void> {
    if (/[\\/](node_modules|\.git|\.domlora)[\\/]/.test(configUri.path)) return;
    try {
      const bytes = await vscode.workspace.fs.readFile(configUri);
      if (bytes.byteLength < 1_000_000 && looksLikeModelConfig(new TextDecoder().decode(bytes))) {
        this.folders.set(dirKey(configUri), vscode.Uri.joinPath(configUri, '..'));
      } else {
        this.folders.delete(dirKey(configUri));
      }
    } catch {
      this.folders.delete(dirKey(configUri));
    }
  }

  private async publish(): Promise<void> {
    // The Explorer's `resourcePath` is the folder's fsPath; on Linux and macOS that equals its URI path, on Windows
    // it does not, so both forms go in.
    const keys = new Set<string>();
    for (const [key, uri] of this.folders) { keys.add(key); keys.add(uri.fsPath); }
    await vscode.commands.executeCommand('setContext', 'domlora.modelFolders', [...keys]);
    await vscode.commands.executeCommand('setContext', 'domlora.scanned', true);
    this.changed.fire();
  }

  dispose(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    for (const d of this.disposables.splice(0)) d.dispose();
    this.changed.dispose();
  }
}

/** The context-key form of a config.json's folder: its URI path, as the Explorer's `resourcePath` gives it. */
function dirKey(configUri: vscode.Uri): string {
  return path.posix.dirname(configUri.path);
}
