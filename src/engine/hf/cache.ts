// The Hugging Face hub cache, read: where it is, which model snapshots it holds, and for each of them (and for any
// folder given) what `domlora models` and the Models view show: repository, revision, architecture, parameters, size
// on disk, dtype, and whether DomLoRA can probe it or the one reason it cannot. Headers only: config.json, the
// safetensors headers and one stat per file, so a cache of hundreds of GB lists in a fraction of a second.
// Nothing here writes, in the cache or anywhere else.
//
// The cache's layout (huggingface_hub's file_download.py): `<cache>/models--ORG--NAME/` holds `blobs/` (the files,
// named by their hash; `<hash>.incomplete` while a download runs), `snapshots/<commit>/` (the repository's tree at
// that commit, every file a symbolic link into `../../blobs/`) and `refs/<ref>` (a file holding the commit `main`, a
// branch, a tag or `pr/N` points at). A file the download has not finished has no link in its snapshot yet.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { hfSnapshotOf, type ModelEntry, type ModelsParams, type ModelsResult } from '../../protocol/messages';
import { ARCHITECTURES, SUPPORTED_MODEL_TYPES } from '../arch/registry';
import { DomLoraError } from '../runtime/errors';
import { modelInfo } from './folder';
import { readHeader, type Dtype } from './safetensors';

type CacheFrom = NonNullable<ModelsResult['cache']>['from'];

/**
 * Where huggingface_hub keeps its cache, resolved as its constants.py does: $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE
 * (its older name), else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
 * A leading `~` is the home folder, as Python's expanduser makes it; an empty variable counts as unset.
 */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env, home = os.homedir()): { dir: string; from: CacheFrom } {
  const value = (key: string): string | undefined => {
    const v = env[key]?.trim();
    if (!v) return undefined;
    return path.resolve(/^~(?=$|[\\/])/.test(v) ? home + v.slice(1) : v);
  };
  for (const key of ['HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE'] as const) {
    const v = value(key);
    if (v) return { dir: v, from: key };
  }
  const hfHome = value('HF_HOME');
  if (hfHome) return { dir: path.join(hfHome, 'hub'), from: 'HF_HOME' };
  const xdg = value('XDG_CACHE_HOME');
  if (xdg) return { dir: path.join(xdg, 'huggingface', 'hub'), from: 'XDG_CACHE_HOME' };
  return { dir: path.join(home, '.cache', 'huggingface', 'hub'), from: 'default' };
}

/** Lists the model snapshots of the hub cache and the given folders (see ModelsParams). Reads headers only. */
export function listModels(params: ModelsParams = {}, env: NodeJS.ProcessEnv = process.env): ModelsResult {
  const t0 = performance.now();
  const models: ModelEntry[] = [];
  let cache: ModelsResult['cache'];
  if (!params.noCache) {
    const where = params.cacheDir ? { dir: path.resolve(params.cacheDir), from: 'option' as const } : hubCacheDir(env);
    const exists = isDir(where.dir);
    // Every file of every snapshot once (by device and inode): revisions share the blobs they have in common.
    const usage = new DiskUsage();
    let repos = 0;
    for (const name of exists ? sortedNames(where.dir) : []) {
      if (!name.startsWith('models--') || !isDir(path.join(where.dir, name))) continue;
      repos++;
      models.push(...scanRepo(path.join(where.dir, name), name.slice('models--'.length), usage));
    }
    cache = { ...where, exists, repos, diskBytes: usage.diskBytes };
  }
  const listed = new Set(models.map((m) => m.path));
  for (const folder of params.folders ?? []) {
    const dir = path.resolve(folder);
    if (listed.has(dir)) continue;
    listed.add(dir);
    const snap = hfSnapshotOf(dir);
    const base: Omit<ModelEntry, 'diskBytes' | 'bytes' | 'supported'> = {
      path: dir, source: 'folder', refs: [], current: true, ...(snap ? { repoId: snap.repoId, revision: snap.revision } : {}),
    };
    if (!isDir(dir)) {
      models.push({ ...base, diskBytes: 0, bytes: 0, supported: false, reason: fs.existsSync(dir) ? 'not a folder' : 'does not exist' });
      continue;
    }
    models.push(describeFolder(dir, base, new DiskUsage(), 0));
  }
  return { ...(cache ? { cache } : {}), models, seconds: (performance.now() - t0) / 1000 };
}

/** One `models--ORG--NAME` folder: an entry per snapshot, the current one first, then the others newest first. */
function scanRepo(repoDir: string, folderName: string, usage: DiskUsage): ModelEntry[] {
  const repoId = folderName.split('--').join('/');
  const refs = readRefs(path.join(repoDir, 'refs'));
  const refsOf = (rev: string) => [...refs].filter(([, r]) => r === rev).map(([name]) => name).sort();
  const unfinished = countIncomplete(path.join(repoDir, 'blobs'));
  const snapshotsDir = path.join(repoDir, 'snapshots');
  const revisions = sortedNames(snapshotsDir).filter((r) => isDir(path.join(snapshotsDir, r)))
    .map((r) => ({ r, mtime: fs.statSync(path.join(snapshotsDir, r)).mtimeMs }));
  if (!revisions.length) {
    const main = refs.get('main');
    return [{
      path: repoDir, source: 'cache', repoId, ...(main ? { revision: main } : {}), refs: main ? refsOf(main) : [], current: true,
      diskBytes: 0, bytes: 0, supported: false, reason: `nothing downloaded yet: no snapshot${unfinishedNote(unfinished)}`,
    }];
  }
  // The current revision is the one refs/main names; without it (a download by commit hash), the newest snapshot.
  revisions.sort((a, b) => b.mtime - a.mtime);
  const main = refs.get('main');
  const current = revisions.some((x) => x.r === main) ? main! : revisions[0]!.r;
  revisions.sort((a, b) => (a.r === current ? -1 : b.r === current ? 1 : b.mtime - a.mtime));
  return revisions.map(({ r }) => describeFolder(path.join(snapshotsDir, r),
    { path: path.join(snapshotsDir, r), source: 'cache', repoId, revision: r, refs: refsOf(r), current: r === current }, usage, unfinished));
}

/** `refs/` as ref name (`main`, `pr/1`) -> commit. */
function readRefs(dir: string): Map<string, string> {
  const refs = new Map<string, string>();
  const visit = (sub: string, depth: number) => {
    for (const name of sortedNames(path.join(dir, sub))) {
      const rel = sub ? `${sub}/${name}` : name;
      const full = path.join(dir, rel);
      if (isDir(full)) { if (depth < 4) visit(rel, depth + 1); continue; }
      try {
        const commit = fs.readFileSync(full, 'utf8').trim();
        if (commit) refs.set(rel, commit);
      } catch { /* an unreadable ref names nothing */ }
    }
  };
  visit('', 0);
  return refs;
}

function countIncomplete(blobs: string): number {
  return sortedNames(blobs).filter((n) => n.endsWith('.incomplete')).length;
}

function unfinishedNote(n: number): string {
  return n ? ` (${n} unfinished download${n === 1 ? '' : 's'} in the repository's blobs/)` : '';
}

/** What a folder holds: its files (relative, `/`-separated, links followed), the links whose target is missing, sizes. */
interface FolderFiles { names: Set<string>; dangling: Set<string> }

/**
 * Sizes of files counted once each, by device and inode: a cache's revisions link to the same blobs. Size on disk
 * is the blocks allocated (what `du` counts, so a sparse file counts what it occupies), beside the apparent size.
 */
class DiskUsage {
  private readonly seen = new Set<string>();
  diskBytes = 0;
  bytes = 0;

  /** Adds a file; returns its [diskBytes, bytes] the first time it is seen, zeros after. */
  add(st: fs.Stats): [number, number] {
    const id = `${st.dev}:${st.ino}`;
    if (this.seen.has(id)) return [0, 0];
    this.seen.add(id);
    // Windows reports no blocks: there the length is the best figure there is.
    const disk = process.platform !== 'win32' && Number.isFinite(st.blocks) ? st.blocks * 512 : st.size;
    this.diskBytes += disk;
    this.bytes += st.size;
    return [disk, st.size];
  }
}

function walk(dir: string, usage: DiskUsage, shared: DiskUsage): FolderFiles {
  const names = new Set<string>();
  const dangling = new Set<string>();
  const visit = (sub: string, depth: number) => {
    let entries: fs.Dirent[];
    try { entries = fs.readdirSync(path.join(dir, sub), { withFileTypes: true }); } catch { return; }
    for (const e of entries) {
      const rel = sub ? `${sub}/${e.name}` : e.name;
      const full = path.join(dir, rel);
      // Real subfolders are walked (a repository's tree); linked folders are not, so a loop cannot trap the scan.
      if (e.isDirectory()) { if (depth < 8) visit(rel, depth + 1); continue; }
      let st: fs.Stats;
      try { st = fs.statSync(full); } catch { if (e.isSymbolicLink()) dangling.add(rel); continue; }
      if (!st.isFile()) continue;
      names.add(rel);
      usage.add(st);
      shared.add(st);
    }
  };
  visit('', 0);
  return { names, dangling };
}

/** An error of the engine as one line about the folder: its file named relative to it. */
function reasonOf(err: unknown, dir: string): string {
  const message = err instanceof Error ? err.message : String(err);
  if (!(err instanceof DomLoraError) || !err.file) return message;
  const rel = path.relative(dir, err.file);
  const rest = message.startsWith(`${err.file}: `) ? message.slice(err.file.length + 2) : message;
  return rel && !rel.startsWith('..') ? `${rel.split(path.sep).join('/')}: ${rest}` : rest;
}

/** The weights' headers, read for any architecture: the dtype most tensors use, the element count, or what is wrong. */
function weightHeaders(dir: string, files: FolderFiles, unfinished: number): { dtype?: string; elements?: number; problem?: string } {
  const has = (n: string) => files.names.has(n);
  let shards: string[];
  let missing: string[] = [];
  if (has('model.safetensors')) {
    shards = ['model.safetensors'];
  } else if (has('model.safetensors.index.json')) {
    let weightMap: unknown;
    try {
      weightMap = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8')).weight_map;
    } catch (e) {
      return { problem: `model.safetensors.index.json is not valid JSON (${(e as Error).message})` };
    }
    if (!weightMap || typeof weightMap !== 'object') return { problem: 'model.safetensors.index.json has no "weight_map" object' };
    shards = [...new Set(Object.values(weightMap as Record<string, unknown>).map(String))].sort();
    missing = shards.filter((s) => !has(s));
    shards = shards.filter((s) => has(s));
  } else {
    const root = [...files.names].filter((n) => !n.includes('/'));
    const ggufs = root.filter((n) => /\.gguf$/i.test(n));
    const otherSafetensors = root.filter((n) => n.endsWith('.safetensors'));
    if (files.dangling.has('model.safetensors')) return { problem: `incomplete download: model.safetensors links to a missing blob${unfinishedNote(unfinished)}` };
    if (otherSafetensors.length) return { problem: `no model.safetensors or model.safetensors.index.json (it has ${listSome(otherSafetensors)})` };
    if (ggufs.length) return { problem: ggufOnly(ggufs) };
    if (root.some((n) => /^pytorch_model.*\.bin$|^pytorch_model\.bin\.index\.json$/.test(n))) {
      return { problem: 'PyTorch .bin weights only: DomLoRA reads safetensors (convert them, or download the safetensors revision)' };
    }
    return { problem: `no weights: no model.safetensors or model.safetensors.index.json${unfinishedNote(unfinished)}` };
  }
  const counts = new Map<Dtype, number>();
  let elements = 0;
  for (const shard of shards) {
    let h;
    try { h = readHeader(path.join(dir, shard)); } catch (e) { return { problem: reasonOf(e, dir) }; }
    for (const t of h.tensors.values()) {
      counts.set(t.dtype, (counts.get(t.dtype) ?? 0) + 1);
      elements += t.shape.reduce((a, b) => a * b, 1);
    }
  }
  const dtype = [...counts].sort((a, b) => b[1] - a[1])[0]?.[0];
  if (missing.length) {
    return {
      dtype,
      problem: `incomplete download: ${missing.length} of ${missing.length + shards.length} weight shards missing (${listSome(missing)})${unfinishedNote(unfinished)}`,
    };
  }
  return { dtype, elements };
}

function ggufOnly(ggufs: string[]): string {
  return `GGUF only (${listSome(ggufs)}): that is llama.cpp's format; DomLoRA reads transformers folders (config.json, safetensors, tokenizer.json)`;
}

function listSome(names: string[]): string {
  return names.length <= 3 ? names.join(', ') : `${names.slice(0, 3).join(', ')} and ${names.length - 3} more`;
}

/** A model folder's entry: sizes, what the config and the headers say, and the first reason it cannot be probed. */
function describeFolder(dir: string, base: Omit<ModelEntry, 'diskBytes' | 'bytes' | 'supported'>, shared: DiskUsage, unfinished: number): ModelEntry {
  const usage = new DiskUsage();
  const files = walk(dir, usage, shared);
  const entry: ModelEntry = { ...base, diskBytes: usage.diskBytes, bytes: usage.bytes, supported: false };
  const notSupported = (reason: string): ModelEntry => ({ ...entry, reason });
  const has = (n: string) => files.names.has(n);

  if (!has('config.json')) {
    const ggufs = [...files.names].filter((n) => /\.gguf$/i.test(n));
    if (files.dangling.has('config.json')) return notSupported(`incomplete download: config.json links to a missing blob${unfinishedNote(unfinished)}`);
    if (ggufs.length) return notSupported(ggufOnly(ggufs));
    if (has('adapter_config.json')) return notSupported('a LoRA adapter (adapter_config.json), not a base model: list the model it was trained on');
    return notSupported(`no config.json: not a transformers model folder${unfinishedNote(unfinished)}`);
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return notSupported('config.json is not a JSON object');
  } catch (e) {
    return notSupported(`config.json is not valid JSON (${(e as Error).message})`);
  }
  if (typeof raw.model_type === 'string') entry.modelType = raw.model_type;
  if (Array.isArray(raw.architectures) && typeof raw.architectures[0] === 'string') entry.architecture = raw.architectures[0];
  if (typeof raw.num_hidden_layers === 'number') entry.layers = raw.num_hidden_layers;
  const weights = weightHeaders(dir, files, unfinished);
  if (weights.dtype) entry.dtype = weights.dtype;
  if (weights.elements) entry.parameters = weights.elements;

  if (entry.modelType === undefined) return notSupported(`config.json has no "model_type" (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`);
  if (!Object.hasOwn(ARCHITECTURES, entry.modelType)) {
    return notSupported(`model_type "${entry.modelType}" is not supported (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`);
  }
  if (weights.problem) return notSupported(weights.problem);
  // The engine's own check, still from headers alone: the config normalises and every candidate weight has the
  // shape it implies (a head_dim that is not hidden_size / heads shows here when the config is wrong about it).
  try {
    const info = modelInfo(dir);
    entry.parameters = info.model.parameters;
    entry.layers = info.model.layers;
    entry.dtype = info.dtype;
  } catch (e) {
    return notSupported(reasonOf(e, dir));
  }
  if (!has('tokenizer.json')) {
    if (files.dangling.has('tokenizer.json')) return notSupported(`incomplete download: tokenizer.json links to a missing blob${unfinishedNote(unfinished)}`);
    return notSupported(has('tokenizer.model')
      ? "no tokenizer.json: only SentencePiece's tokenizer.model, and DomLoRA reads the fast-tokenizer file transformers saves"
      : 'no tokenizer.json (the fast-tokenizer file transformers saves)');
  }
  return { ...entry, supported: true };
}

function isDir(p: string): boolean {
  try { return fs.statSync(p).isDirectory(); } catch { return false; }
}

function sortedNames(dir: string): string[] {
  try { return fs.readdirSync(dir).sort((a, b) => a.localeCompare(b, 'en', { sensitivity: 'base' })); } catch { return []; }
}
