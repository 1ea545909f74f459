// Where DomLoRA keeps things for a model folder: probe reports and adapters in `<workspace>/.domlora/<model>/`
// (or the extension's global storage for a model outside every workspace folder; adapters go to the folder of the
// `domlora.adapterDirectory` setting instead when it names one), and what it remembers per model
// (the dataset last used, the adapter placement, the latest runs) in the workspace state. A snapshot of the Hugging
// Face cache is `<workspace>/.domlora/ORG--NAME/`: DomLoRA only reads the cache, it never writes there.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { hfSnapshotOf, type ProbeReport } from '../protocol/messages';
import type { CheckView, Preset, RunView } from '../protocol/webview';

/** Folders the host creates: the umask's mode, never writable by others (as the engine's, runtime/atomic.ts). */
const DIR_MODE = 0o775;

/** `20261129-011900`: sortable, readable, and safe in file names on every OS. */
export function timestamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** A path inside `dir` named `<prefix><timestamp><suffix>` that does not exist yet. */
export function freshPath(dir: string, prefix: string, suffix = ''): string {
  const base = `${prefix}${timestamp()}`;
  let candidate = path.join(dir, `${base}${suffix}`);
  for (let i = 2; fs.existsSync(candidate); i++) candidate = path.join(dir, `${base}-${i}${suffix}`);
  return candidate;
}

/**
 * Like freshPath, but creates the (empty) folder, so that another window training a model of the same folder name
 * into the same shared folder in the same second gets another name instead of the same one.
 */
export function reserveFolder(dir: string, prefix: string): string {
  const base = `${prefix}${timestamp()}`;
  for (let i = 1; ; i++) {
    const candidate = path.join(dir, i === 1 ? base : `${base}-${i}`);
    try {
      fs.mkdirSync(candidate, { mode: DIR_MODE });
      return candidate;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

/** Makes `dir` a folder (creating it and its parents); returns why it cannot be one, or undefined when it is. */
export function ensureFolder(dir: string): string | undefined {
  let error: string;
  try {
    fs.mkdirSync(dir, { recursive: true, mode: DIR_MODE });
    if (fs.statSync(dir).isDirectory()) {
      // A folder we cannot write to would fail only at the first checkpoint: try now (access() misses Windows ACLs).
      const probe = path.join(dir, `.domlora-write-test.${process.pid}`);
      try {
        fs.closeSync(fs.openSync(probe, 'wx', 0o600));
        fs.rmSync(probe, { force: true });
        return undefined;
      } catch (err) {
        return `it is not writable (${err instanceof Error ? err.message : String(err)})`;
      }
    }
    error = 'it is not a folder';
  } catch (err) {
    error = err instanceof Error ? err.message : String(err);
  }
  // Usually a file where a folder must be: name it, whether it is the folder itself or one of its parents.
  for (let p = dir; path.dirname(p) !== p; p = path.dirname(p)) {
    let isDir: boolean;
    try { isDir = fs.statSync(p).isDirectory(); } catch { continue; }
    if (!isDir) return p === dir ? 'a file exists at that path' : `${p} is a file, not a folder`;
    break;
  }
  return error;
}

/** The name a model goes by in titles and messages: `ORG/NAME` for a snapshot of the Hugging Face cache, else its folder's name. */
export function modelName(modelDir: string): string {
  return hfSnapshotOf(path.resolve(modelDir))?.repoId ?? path.basename(modelDir);
}

/** The name of a model's data folder: `ORG--NAME` for a snapshot of the Hugging Face cache (not its commit), else its folder's name. */
export function modelFolderName(modelDir: string): string {
  return hfSnapshotOf(path.resolve(modelDir))?.folderName ?? path.basename(modelDir);
}

/** True when some folder from `root` (excluded) down to `dir` is a symbolic link, or is not a folder. */
export function linkOnTheWay(dir: string, root: string): boolean {
  const rel = path.relative(root, dir);
  if (rel.startsWith('..') || path.isAbsolute(rel)) return true;
  let p = root;
  for (const part of rel.split(path.sep).filter(Boolean)) {
    p = path.join(p, part);
    try {
      const st = fs.lstatSync(p);
      if (st.isSymbolicLink() || !st.isDirectory()) return true;
    } catch {
      return false;
    }
  }
  return false;
}

function isPlainFile(p: string): boolean {
  try { return fs.lstatSync(p).isFile(); } catch { return false; }
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

export function isModelFolder(dir: string): boolean {
  try {
    return fs.statSync(path.join(dir, 'config.json')).isFile();
  } catch {
    return false;
  }
}

export class Store {
  constructor(private readonly context: vscode.ExtensionContext) {}

  /**
   * The folder a model's reports and adapters are written under, and must stay inside (the engine's outRoot): the
   * workspace folder that holds the model (for a snapshot of the cache, the first one outside the cache), else the
   * extension's global storage.
   */
  dataRoot(modelDir: string): string {
    const snapshot = hfSnapshotOf(path.resolve(modelDir));
    if (snapshot) {
      // The cache is read, never written: the first workspace folder that does not lie inside the cache holds it.
      const home = vscode.workspace.workspaceFolders?.find((f) => f.uri.scheme === 'file' && !isInside(f.uri.fsPath, snapshot.cacheDir));
      return home ? home.uri.fsPath : this.context.globalStorageUri.fsPath;
    }
    const folder = vscode.workspace.getWorkspaceFolder(vscode.Uri.file(modelDir));
    return folder && folder.uri.scheme === 'file' ? folder.uri.fsPath : this.context.globalStorageUri.fsPath;
  }

  /** The folder holding a model's reports and adapters: `<dataRoot>/.domlora/<model>`, or `<storage>/models/<model>`. */
  modelDataDir(modelDir: string): string {
    const root = this.dataRoot(modelDir);
    const snapshot = hfSnapshotOf(path.resolve(modelDir));
    const inStorage = root === this.context.globalStorageUri.fsPath;
    if (snapshot) return inStorage ? path.join(root, 'models', snapshot.folderName) : path.join(root, '.domlora', snapshot.folderName);
    const name = path.basename(modelDir);
    if (!inStorage) return path.join(root, '.domlora', name);
    // Outside the workspace two models may share a folder name: a short hash of the path keeps them apart.
    const hash = crypto.createHash('sha256').update(path.resolve(modelDir)).digest('hex').slice(0, 8);
    return path.join(root, 'models', `${name}-${hash}`);
  }

  newReportPath(modelDir: string): string {
    return freshPath(this.modelDataDir(modelDir), 'probe-', '.json');
  }

  /** A new adapter folder: `<adapterDirectory>/<model>-<preset>-<timestamp>` when the setting names a folder, else
   * `adapter-<preset>-<timestamp>` in the model's data folder. */
  newAdapterDir(modelDir: string, preset: Preset, adapterDirectory?: string): string {
    if (adapterDirectory) return reserveFolder(adapterDirectory, `${modelFolderName(modelDir)}-${preset}-`);
    return freshPath(this.modelDataDir(modelDir), `adapter-${preset}-`);
  }

  /** A new placement check folder: `check-<timestamp>` in the model's data folder. */
  newCheckDir(modelDir: string): string {
    return freshPath(this.modelDataDir(modelDir), 'check-');
  }

  /** Probe reports of a model, newest first: plain files in its data folder, which is reached through no link (see
   * escapeProblem in the engine's atomic.ts: a link planted in a cloned `.domlora/` does not make DomLoRA read elsewhere). */
  listReports(modelDir: string): string[] {
    const dir = this.modelDataDir(modelDir);
    if (linkOnTheWay(dir, this.dataRoot(modelDir))) return [];
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return [];
    }
    return names.filter((n) => /^probe-.*\.json$/.test(n) && isPlainFile(path.join(dir, n))).sort().reverse().map((n) => path.join(dir, n));
  }

  /** The newest report that parses, with its path. The revisions of a cache model share a data folder: a report
   * counts for the snapshot it was measured on only. */
  latestReport(modelDir: string): { path: string; report: ProbeReport } | undefined {
    const snapshot = hfSnapshotOf(path.resolve(modelDir));
    for (const file of this.listReports(modelDir)) {
      const report = readReport(file);
      if (report && (!snapshot || path.resolve(report.model.path) === path.resolve(modelDir))) return { path: file, report };
    }
    return undefined;
  }

  // ---- Memory per model (workspace state) ----

  private key(kind: string, modelDir: string): string {
    return `domlora.${kind}:${path.resolve(modelDir)}`;
  }

  lastDataset(modelDir: string): string | undefined {
    return this.context.workspaceState.get<string>(this.key('dataset', modelDir));
  }

  setLastDataset(modelDir: string, file: string): Thenable<void> {
    return this.context.workspaceState.update(this.key('dataset', modelDir), file);
  }

  placement(modelDir: string): string | undefined {
    return this.context.workspaceState.get<string>(this.key('placement', modelDir));
  }

  setPlacement(modelDir: string, module: string | undefined): Thenable<void> {
    return this.context.workspaceState.update(this.key('placement', modelDir), module);
  }

  runs(modelDir: string): Partial<Record<Preset, RunView>> {
    return this.context.workspaceState.get<Partial<Record<Preset, RunView>>>(this.key('runs', modelDir)) ?? {};
  }

  setRun(modelDir: string, run: RunView): Thenable<void> {
    const runs = { ...this.runs(modelDir), [run.preset]: run };
    return this.context.workspaceState.update(this.key('runs', modelDir), runs);
  }

  /** The last placement check of a model (finished, or stopped and resumable), without its live progress. */
  lastCheck(modelDir: string): CheckView | undefined {
    return this.context.workspaceState.get<CheckView>(this.key('check', modelDir));
  }

  setLastCheck(modelDir: string, view: CheckView | undefined): Thenable<void> {
    return this.context.workspaceState.update(this.key('check', modelDir), view ? { ...view, progress: undefined } : undefined);
  }

  /** Models whose panel was open, so a reload can say which model a restored panel shows. */
  lastModel(): string | undefined {
    return this.context.workspaceState.get<string>('domlora.lastModel');
  }

  setLastModel(modelDir: string): Thenable<void> {
    return this.context.workspaceState.update('domlora.lastModel', modelDir);
  }
}

export function readReport(file: string): ProbeReport | undefined {
  try {
    const r = JSON.parse(fs.readFileSync(file, 'utf8')) as ProbeReport;
    if (!r || !Array.isArray(r.modules) || !Array.isArray(r.kinds) || !r.dominant) return undefined;
    return r;
  } catch {
    return undefined;
  }
}
