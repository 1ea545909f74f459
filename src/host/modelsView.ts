// The DomLoRA Models view: the workspace's model folders and the Hugging Face cache's, grouped, each with its
// architecture, size and whether DomLoRA can probe it; "Run PAGE Probe" inline and the Explorer's actions in its
// context menu. The listing comes from the worker (the engine reads the headers; the host never does), and the
// "Probe a Model…" quick pick shows the same list. A repository of the cache shows the revision refs/main names (the
// one transformers loads by default); its other snapshots are its children.
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { formatBytes, formatParams, looksSparse } from '../protocol/format';
import type { ModelEntry, ModelsResult } from '../protocol/messages';
import { readSettings } from './config';
import type { ModelFolders } from './modelFolders';
import * as notify from './notify';
import type { WorkerClient } from './worker';

export const MODELS_VIEW = 'domlora.models';

type Group = 'workspace' | 'cache';

/** The view's elements; commands invoked from the view receive them. */
export type ModelsNode =
  | { kind: 'group'; group: Group }
  | { kind: 'model'; entry: ModelEntry; others: ModelEntry[] }
  | { kind: 'note'; group: Group; text: string; tooltip?: string };

/** The model folder a command was given: a URI (Explorer, palette, tests) or an element of the Models view. */
export function modelUriOf(arg: unknown): vscode.Uri | undefined {
  if (arg instanceof vscode.Uri) return arg;
  const node = arg as Partial<Extract<ModelsNode, { kind: 'model' }>> | undefined;
  if (node && node.kind === 'model' && typeof node.entry?.path === 'string') return vscode.Uri.file(node.entry.path);
  return undefined;
}

/** The reason up to its first detail: `GGUF only`, `incomplete download`, `model_type "t5" is not supported`. */
function shortReason(reason: string | undefined): string {
  return (reason ?? 'not supported').split(/: | \(/)[0]!;
}

/** `llama · 260K · 1.1 MB · F32`, or what it has and why it cannot be probed. */
export function describeEntry(e: ModelEntry): string {
  const parts: string[] = [];
  const arch = e.modelType ?? e.architecture;
  if (arch) parts.push(arch);
  if (e.parameters !== undefined) parts.push(formatParams(e.parameters));
  parts.push(formatBytes(e.diskBytes));
  if (e.supported) { if (e.dtype) parts.push(e.dtype); } else parts.push(shortReason(e.reason));
  return parts.join(' · ');
}

function tildify(p: string): string {
  const home = os.homedir();
  return p === home || p.startsWith(home + path.sep) ? `~${p.slice(home.length)}` : p;
}

function revisionLabel(e: ModelEntry): string {
  return `${(e.revision ?? '').slice(0, 7)}${e.refs.length ? ` (${e.refs.join(', ')})` : ''}`;
}

/** The name of an entry: its repository, else its path relative to the workspace. */
export function entryName(e: ModelEntry): string {
  return e.repoId && e.source === 'cache' ? e.repoId : vscode.workspace.asRelativePath(e.path, false);
}

function tooltip(e: ModelEntry): vscode.MarkdownString {
  const md = new vscode.MarkdownString('', true);
  const row = (k: string, v: string | undefined) => { if (v) md.appendMarkdown(`| ${k} | ${v.replace(/\|/g, '\\|')} |\n`); };
  md.appendMarkdown(`**${entryName(e)}**\n\n| | |\n|---|---|\n`);
  row('revision', e.revision ? `\`${e.revision}\`${e.refs.length ? ` (${e.refs.join(', ')})` : ''}` : undefined);
  row('architecture', [e.modelType, e.architecture].filter(Boolean).join(' · ') || undefined);
  row('layers', e.layers !== undefined ? String(e.layers) : undefined);
  row('parameters', e.parameters !== undefined ? e.parameters.toLocaleString('en-US') : undefined);
  row('dtype', e.dtype);
  row('size on disk', `${formatBytes(e.diskBytes)}${looksSparse(e) ? ` (${formatBytes(e.bytes)} apparent: sparse files)` : ''}`);
  row('folder', tildify(e.path));
  md.appendMarkdown(`\n${e.supported ? '$(check) DomLoRA can probe it.' : `$(warning) Not supported: ${e.reason ?? 'unknown reason'}`}`);
  return md;
}

interface Listing { result?: ModelsResult; error?: string }

/** What the view needs from the workspace scan (ModelFolders), so a test can hand it another. */
export type FolderSource = Pick<ModelFolders, 'ready' | 'list' | 'onDidChange'>;

export interface ModelsViewOptions {
  /** Publish the cache's state as the context key `domlora.models.cache` (the welcome content reads it). */
  publishContext?: boolean;
  /**
   * Workspace Trust (the context's). Untrusted, the view reads no model's files until the user asks (its refresh
   * button, or the note it shows), and lists the workspace only: the cache lies outside it.
   */
  isTrusted?: () => boolean;
}

/** Where the cache stands after a listing: what the welcome content is chosen by. */
export type CacheState = 'missing' | 'empty' | 'found';

export class ModelsView implements vscode.TreeDataProvider<ModelsNode>, vscode.Disposable {
  private listing?: Promise<Listing>;
  /** The last listing that arrived, for getTreeItem (which cannot wait). */
  private latest?: ModelsResult;
  private refreshTimer?: NodeJS.Timeout;
  private readonly changed = new vscode.EventEmitter<ModelsNode | undefined>();
  private readonly disposables: vscode.Disposable[] = [];
  readonly onDidChangeTreeData = this.changed.event;
  /** After the last listing: whether the cache was missing, empty or held models. */
  cacheState?: CacheState;
  /** In Restricted Mode: whether the user asked for the listing. */
  private asked = false;

  constructor(private readonly worker: Pick<WorkerClient, 'request'>, private readonly folders: FolderSource,
    private readonly log: (line: string) => void, private readonly options: ModelsViewOptions = {}) {
    this.disposables.push(this.changed,
      folders.onDidChange(() => this.scheduleRefresh()),
      vscode.workspace.onDidChangeConfiguration((e) => { if (e.affectsConfiguration('domlora.huggingFaceCache')) this.refresh(); }));
  }

  /** Lists again: the workspace's model folders and the cache, through the worker. `asked`: the user asked for it
   * (in Restricted Mode nothing is read before that). */
  refresh(asked = false): void {
    if (asked) this.asked = true;
    this.listing = undefined;
    this.changed.fire(undefined);
  }

  private scheduleRefresh(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.refresh(), 300);
  }

  /** The listing this view shows (asked once per refresh). */
  list(): Promise<Listing> {
    this.listing ??= this.load();
    return this.listing;
  }

  private trusted(): boolean {
    return this.options.isTrusted?.() ?? vscode.workspace.isTrusted;
  }

  private async load(): Promise<Listing> {
    await this.folders.ready;
    const folders = this.folders.list().filter((u) => u.scheme === 'file').map((u) => u.fsPath);
    const trusted = this.trusted();
    const cacheDir = readSettings(undefined, trusted).huggingFaceCache;
    const work = (async (): Promise<Listing> => {
      try {
        const result = await this.worker.request('models', { folders, ...(!trusted ? { noCache: true } : cacheDir ? { cacheDir } : {}) }).result;
        const cache = result.cache;
        this.log(`[host] models: ${result.models.length} folders (${cache ? `cache ${cache.dir} from ${cache.from}${cache.exists ? '' : ', missing'}` : 'no cache'}) in ${result.seconds.toFixed(3)} s`);
        return { result };
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        this.log(`[host] models: the listing failed: ${message}`);
        return { error: message };
      }
    })();
    void vscode.window.withProgress({ location: { viewId: MODELS_VIEW } }, () => work);
    const listing = await work;
    const r = listing.result;
    this.latest = r;
    this.cacheState = !r?.cache?.exists ? 'missing' : r.models.some((m) => m.source === 'cache') ? 'found' : 'empty';
    if (this.options.publishContext) await vscode.commands.executeCommand('setContext', 'domlora.models.cache', this.cacheState);
    return listing;
  }

  async getChildren(node?: ModelsNode): Promise<ModelsNode[]> {
    if (!node && !this.trusted() && !this.asked) {
      return [{ kind: 'note', group: 'workspace', text: 'Restricted Mode: list this workspace\'s models',
        tooltip: 'In Restricted Mode DomLoRA reads a model\'s files only when you ask, and lists the workspace only (the '
          + 'Hugging Face cache is outside it). Click to list the workspace\'s model folders, or trust the workspace.' }];
    }
    const { result, error } = await this.list();
    if (!node) {
      if (error || !result) return [{ kind: 'note', group: 'cache', text: `The listing failed: ${error ?? 'no answer'}`, tooltip: error }];
      const workspace = result.models.filter((m) => m.source === 'folder');
      const cached = result.models.filter((m) => m.source === 'cache');
      // Nothing anywhere: the welcome content says what to do.
      if (!workspace.length && !cached.length) return [];
      return [...(workspace.length ? [{ kind: 'group', group: 'workspace' } as const] : []), { kind: 'group', group: 'cache' }];
    }
    if (node.kind === 'group' && result) {
      if (node.group === 'workspace') return result.models.filter((m) => m.source === 'folder').map((entry) => ({ kind: 'model', entry, others: [] }));
      const cached = result.models.filter((m) => m.source === 'cache');
      if (!cached.length) {
        const dir = result.cache ? tildify(result.cache.dir) : 'the Hugging Face cache';
        return [{
          kind: 'note', group: 'cache',
          text: result.cache?.exists ? `No models in ${dir} yet` : `No Hugging Face cache at ${dir}`,
          tooltip: 'Models that huggingface-cli download, transformers or vLLM fetch appear here. DomLoRA looks in $HF_HUB_CACHE, '
            + 'else $HF_HOME/hub, else ~/.cache/huggingface/hub; the setting domlora.huggingFaceCache names another folder.',
        }];
      }
      // One element per repository, showing its current revision; the others hang below it.
      const byRepo = new Map<string, ModelEntry[]>();
      for (const m of cached) byRepo.set(m.repoId ?? m.path, [...(byRepo.get(m.repoId ?? m.path) ?? []), m]);
      return [...byRepo.values()].map((entries) => {
        const current = entries.find((e) => e.current) ?? entries[0]!;
        return { kind: 'model', entry: current, others: entries.filter((e) => e !== current) };
      });
    }
    if (node.kind === 'model') return node.others.map((entry) => ({ kind: 'model', entry, others: [] }));
    return [];
  }

  getTreeItem(node: ModelsNode): vscode.TreeItem {
    if (node.kind === 'group') {
      const item = new vscode.TreeItem(node.group === 'workspace' ? 'Workspace' : 'Hugging Face cache', vscode.TreeItemCollapsibleState.Expanded);
      item.id = `group:${node.group}`;
      item.contextValue = `domlora.group.${node.group}`;
      item.iconPath = new vscode.ThemeIcon(node.group === 'workspace' ? 'root-folder' : 'library');
      return this.describeGroup(item, node.group);
    }
    if (node.kind === 'note') {
      const item = new vscode.TreeItem(node.text, vscode.TreeItemCollapsibleState.None);
      item.id = `note:${node.group}`;
      item.iconPath = new vscode.ThemeIcon('info');
      item.tooltip = node.tooltip;
      if (!this.trusted() && !this.asked) {
        item.iconPath = new vscode.ThemeIcon('shield');
        item.command = { command: 'domlora.refreshModels', title: 'List the workspace\'s models' };
      }
      return item;
    }
    const e = node.entry;
    const isRevision = e.source === 'cache' && !e.current;
    const item = new vscode.TreeItem(isRevision ? revisionLabel(e) : entryName(e),
      node.others.length ? vscode.TreeItemCollapsibleState.Collapsed : vscode.TreeItemCollapsibleState.None);
    item.id = `model:${e.path}`;
    item.description = describeEntry(e);
    item.tooltip = tooltip(e);
    item.contextValue = e.supported ? 'domlora.model.supported' : 'domlora.model.unsupported';
    item.iconPath = e.supported
      ? new vscode.ThemeIcon(isRevision ? 'git-commit' : e.source === 'cache' ? 'package' : 'folder')
      : new vscode.ThemeIcon('warning', new vscode.ThemeColor('list.warningForeground'));
    item.accessibilityInformation = { label: `${entryName(e)}${isRevision ? ` revision ${revisionLabel(e)}` : ''}: ${item.description}` };
    return item;
  }

  private describeGroup(item: vscode.TreeItem, group: Group): vscode.TreeItem {
    const r = this.latest;
    if (group === 'workspace') {
      const n = r?.models.filter((m) => m.source === 'folder').length ?? 0;
      item.description = `${n} model${n === 1 ? '' : 's'}`;
      item.tooltip = 'Folders of this workspace that hold a Hugging Face config.json';
    } else if (r?.cache) {
      item.description = tildify(r.cache.dir);
      const repos = r.cache.repos;
      item.tooltip = `${r.cache.dir} (${r.cache.from === 'option' ? 'the setting domlora.huggingFaceCache'
        : r.cache.from === 'default' ? 'the default location' : `from $${r.cache.from}`})\n`
        + `${repos} model repositor${repos === 1 ? 'y' : 'ies'}, ${formatBytes(r.cache.diskBytes)} on disk. DomLoRA only reads it.`;
    }
    return item;
  }

  dispose(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    for (const d of this.disposables.splice(0)) d.dispose();
  }
}

/** "DomLoRA: Probe a Model…": the same list as the view, in a quick pick; the pick is probed. */
export async function pickAndProbe(view: ModelsView, opts?: unknown): Promise<unknown> {
  type Item = vscode.QuickPickItem & { entry?: ModelEntry };
  const listing = view.list();
  const qp = vscode.window.createQuickPick<Item>();
  qp.title = 'DomLoRA: Probe a Model…';
  qp.placeholder = 'The workspace\'s model folders and the Hugging Face cache\'s';
  qp.matchOnDescription = true;
  qp.matchOnDetail = true;
  qp.busy = true;
  qp.show();
  const { result, error } = await listing;
  qp.busy = false;
  if (!result) {
    qp.dispose();
    notify.error(`DomLoRA could not list the models: ${error ?? 'no answer from the worker'}`);
    return undefined;
  }
  const items: Item[] = [];
  const section = (label: string, entries: ModelEntry[]) => {
    if (!entries.length) return;
    items.push({ label, kind: vscode.QuickPickItemKind.Separator });
    // Supported first; a model DomLoRA cannot probe is listed with its reason, so the user learns why it is there.
    for (const e of [...entries.filter((x) => x.supported), ...entries.filter((x) => !x.supported)]) {
      const revision = e.source === 'cache' && !e.current ? ` @ ${revisionLabel(e)}` : '';
      items.push({
        label: `${e.supported ? '$(package)' : '$(warning)'} ${entryName(e)}${revision}`,
        description: describeEntry(e),
        detail: e.supported ? tildify(e.path) : `Not supported: ${e.reason}`,
        entry: e,
      });
    }
  };
  section('Workspace', result.models.filter((m) => m.source === 'folder'));
  section('Hugging Face cache', result.models.filter((m) => m.source === 'cache'));
  if (!items.length) {
    qp.dispose();
    notify.info('DomLoRA found no model folder in this workspace and none in the Hugging Face cache. '
      + 'Download one with huggingface-cli download ORG/NAME, or open a folder holding config.json, model.safetensors and tokenizer.json.');
    return undefined;
  }
  qp.items = items;
  const picked = await new Promise<Item | undefined>((resolve) => {
    qp.onDidAccept(() => resolve(qp.selectedItems[0]));
    qp.onDidHide(() => resolve(undefined));
  });
  qp.dispose();
  const e = picked?.entry;
  if (!e) return undefined;
  if (!e.supported) {
    notify.error(`DomLoRA cannot probe ${entryName(e)}: ${e.reason ?? 'it is not supported'}.`);
    return undefined;
  }
  return vscode.commands.executeCommand('domlora.runProbe', vscode.Uri.file(e.path), opts);
}
