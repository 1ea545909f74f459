// Every output of a job (a probe report, an adapter folder, a merged model, a trainer config) is checked and its
// place made ready before the job starts, so a bad --out costs nothing: not a trained run that fails at its last
// rename, nor a hang (Node's recursive mkdir loops under /proc). One rule for all of them: an existing target is
// refused, unless --force; and --force replaces only what DomLoRA wrote itself, recognised by what it writes (a
// report's tool field, an adapter's safetensors metadata, a merged model's marker, a config's first line) and holding
// nothing else. Anything else is the user's, and is never deleted.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readHeader } from '../hf/safetensors';
import { DEMO_MODEL_MARKER, synthDatasetText } from '../hf/synth';
import { assertInside, createMode, rootOrAbove, tempName, type WriteScope } from './atomic';
import { badInput, DomLoraError } from './errors';

export type OutputKind = 'report' | 'adapter' | 'merged' | 'config' | 'check' | 'demo-model' | 'demo-data';

/** The first line of every trainer config DomLoRA exports (peft-config, axolotl, llamafactory, mlx). */
export const CONFIG_MARKER = '# LoRA placement found by DomLoRA (PAGE)';
/** The safetensors metadata key of a merged model DomLoRA wrote (its value: the adapter folder merged in). */
export const MERGED_MARKER = 'domlora.merged_from';

const FOLDER_KINDS: ReadonlySet<OutputKind> = new Set(['adapter', 'merged', 'check', 'demo-model']);
const WHAT: Record<OutputKind, string> = { report: 'a PAGE report', adapter: 'an adapter folder', merged: 'a merged model folder', config: 'a trainer config',
  check: 'a placement check folder', 'demo-model': 'a demo model folder', 'demo-data': 'the demo dataset' };
/** What DomLoRA writes into its folders; anything else in one is the user's. */
const FOLDER_ENTRIES: Record<'adapter' | 'merged' | 'check' | 'demo-model', ReadonlySet<string>> = {
  check: new Set(['check-state.json', 'check.json', 'report.json', 'adapters']),
  adapter: new Set(['adapter_config.json', 'adapter_model.safetensors', 'checkpoint']),
  merged: new Set(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
    'generation_config.json', 'tokenizer.model']),
  'demo-model': new Set(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'README.md']),
};

export interface ClaimedOutput {
  /** The absolute path to write. */
  path: string;
  /** Removes the parent folders the claim created, when they are still empty (call it when the job fails). */
  release(): void;
}

/**
 * Checks that `out` can be written as a `kind` output, creates its missing parent folders one at a time and tries a
 * write in its folder. With a root (`o.root`, the folder the user chose), `out` must lie inside it through real
 * folders only (see atomic.ts, escapeProblem). Throws a bad-input error naming the path and what is wrong.
 */
export function claimOutput(out: string, kind: OutputKind, o: { force?: boolean; flag?: string } & WriteScope = {}): ClaimedOutput {
  const flag = o.flag ?? '--out';
  const target = path.resolve(out);
  assertInside(target, o);
  const folder = FOLDER_KINDS.has(kind);
  let st: fs.Stats | undefined;
  try { st = fs.statSync(target); } catch (e) { if (!absent(e)) throw badInput(`cannot be read (${(e as NodeJS.ErrnoException).code})`, target); }
  if (st) {
    if (folder && !st.isDirectory()) throw badInput(`is a file; ${flag} names the folder to write ${WHAT[kind]} in`, target);
    if (!folder && st.isDirectory()) throw badInput(`is a folder; ${flag} names the file to write ${WHAT[kind]} to`, target);
    const empty = st.isDirectory() && fs.readdirSync(target).length === 0;
    if (!empty) {
      if (!o.force) throw badInput(`already exists; choose another ${flag}, or pass --force to replace it (only ${WHAT[kind]} DomLoRA wrote is replaced)`, target);
      const notOurs = whyNotOurs(target, kind);
      if (notOurs) {
        throw badInput(`${notOurs}; --force replaces only ${WHAT[kind]} DomLoRA wrote, so it is left as it is: choose another ${flag}`, target);
      }
    }
  }
  const created = makeParents(path.dirname(target), target, o);
  const release = () => {
    for (const dir of [...created].reverse()) { try { fs.rmdirSync(dir); } catch { break; } }
  };
  try {
    tryWrite(path.dirname(target), path.basename(target), target);
  } catch (e) {
    release();
    throw e;
  }
  return { path: target, release };
}

/** Why `target` (which exists) is not a `kind` output DomLoRA wrote, or undefined when it is one. */
export function whyNotOurs(target: string, kind: OutputKind): string | undefined {
  switch (kind) {
    case 'report': {
      try {
        const r = JSON.parse(fs.readFileSync(target, 'utf8'));
        if (r?.tool?.name === 'domlora' && r.dominant) return undefined;
      } catch { /* not JSON: not a report */ }
      return 'is not a PAGE report DomLoRA wrote (no "tool": {"name": "domlora"})';
    }
    case 'config': {
      const head = readStart(target, CONFIG_MARKER.length);
      return head === CONFIG_MARKER ? undefined : `does not start with DomLoRA's line "${CONFIG_MARKER}"`;
    }
    case 'check': {
      // The state file says whose it is; every entry must be one the check writes, every adapter one DomLoRA wrote.
      let st: { tool?: { name?: string }; kind?: string } | undefined;
      try { st = JSON.parse(fs.readFileSync(path.join(target, 'check-state.json'), 'utf8')); } catch { /* missing or not JSON */ }
      if (st?.tool?.name !== 'domlora' || st.kind !== 'placement-check') return `is not ${WHAT.check} DomLoRA wrote (no check-state.json of a DomLoRA check)`;
      const others = fs.readdirSync(target).filter((e) => !FOLDER_ENTRIES.check.has(e) && !isTempOf(e, FOLDER_ENTRIES.check));
      if (others.length) return `holds files DomLoRA did not write (${others.slice(0, 3).join(', ')})`;
      const adapters = path.join(target, 'adapters');
      if (!fs.existsSync(adapters)) return undefined;
      for (const id of fs.readdirSync(adapters)) {
        const dir = path.join(adapters, id);
        if (!fs.statSync(dir).isDirectory()) return `holds files DomLoRA did not write (adapters/${id})`;
        for (const run of fs.readdirSync(dir)) {
          if (/^\.seed-\d+\.\d+\.\d+\.tmp(\.old)?$/.test(run)) continue; // a run's write cut short
          const full = path.join(dir, run);
          const why = /^seed-\d+$/.test(run) && fs.statSync(full).isDirectory() ? whyNotOurs(full, 'adapter') : 'is not a run folder of a check';
          if (why) return `holds adapters/${id}/${run}, which ${why}`;
        }
      }
      return undefined;
    }
    case 'adapter':
    case 'merged': {
      const file = path.join(target, kind === 'adapter' ? 'adapter_model.safetensors' : 'model.safetensors');
      let meta: Record<string, string> = {};
      try { meta = readHeader(file).metadata; } catch { /* missing or not safetensors */ }
      const key = kind === 'adapter' ? 'domlora.version' : MERGED_MARKER;
      if (meta[key] === undefined) return `is not ${WHAT[kind]} DomLoRA wrote (${path.basename(file)} ${fs.existsSync(file) ? `has no "${key}" metadata` : 'is missing'})`;
      return foreignEntries(target, kind);
    }
    case 'demo-model': {
      const readme = path.join(target, 'README.md');
      if (readStart(readme, DEMO_MODEL_MARKER.length) !== DEMO_MODEL_MARKER) return `is not ${WHAT[kind]} DomLoRA wrote (README.md does not start with "${DEMO_MODEL_MARKER}")`;
      return foreignEntries(target, kind);
    }
    case 'demo-data': {
      // Only the very file make-demo-model writes: a dataset of the user's is never replaced.
      let text = '';
      try { text = fs.readFileSync(target, 'utf8'); } catch { /* unreadable: not ours */ }
      return text === synthDatasetText() ? undefined : `is not ${WHAT[kind]} DomLoRA writes (its content differs)`;
    }
  }
}

/** A writer's temporary of one of `names` (`.${name}.${pid}.${ms}.tmp`, see atomic.ts), left by a killed write. */
function isTempOf(entry: string, names: ReadonlySet<string>): boolean {
  const m = /^\.(.+)\.\d+\.\d+\.tmp(\.old)?$/.exec(entry);
  return !!m && names.has(m[1]);
}

/** Why a folder of ours holds something we did not write (its names), or undefined when it holds only our files. */
function foreignEntries(target: string, kind: 'adapter' | 'merged' | 'demo-model'): string | undefined {
  const others = fs.readdirSync(target).filter((e) => !FOLDER_ENTRIES[kind].has(e));
  if (!others.length) return undefined;
  return `holds files DomLoRA did not write (${others.slice(0, 3).join(', ')}${others.length > 3 ? `, and ${others.length - 3} more` : ''})`;
}

function readStart(file: string, n: number): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const buf = Buffer.alloc(n);
      const got = fs.readSync(fd, buf, 0, n, 0);
      return buf.subarray(0, got).toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}

/** Creates the missing folders from the nearest existing one down to `dir`, one mkdir each; returns those it made. */
function makeParents(dir: string, target: string, scope: WriteScope): string[] {
  const missing: string[] = [];
  let p = dir;
  for (;;) {
    let st: fs.Stats | undefined;
    try { st = fs.statSync(p); } catch (e) {
      if (!absent(e)) throw badInput(`cannot write there: ${p} cannot be read (${(e as NodeJS.ErrnoException).code})`, target);
    }
    if (st) {
      if (!st.isDirectory()) throw badInput(`cannot write there: ${p} is a file, not a folder`, target);
      break;
    }
    missing.push(p);
    const up = path.dirname(p);
    if (up === p) break;
    p = up;
  }
  const created: string[] = [];
  for (const m of missing.reverse()) {
    try {
      if (!rootOrAbove(m, scope)) assertInside(m, scope);
      fs.mkdirSync(m, { mode: createMode('dir') });
      created.push(m);
    } catch (e) {
      for (const c of created.reverse()) { try { fs.rmdirSync(c); } catch { /* not empty any more */ } }
      if (e instanceof DomLoraError) throw e;
      throw badInput(`cannot write there: the folder ${m} cannot be created (${(e as NodeJS.ErrnoException).code ?? String(e)})`, target);
    }
  }
  return created;
}

/** A path that is not there: missing, or below a file (ENOTDIR; the walk up then names the file in the way). */
function absent(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** Writes and removes a temporary file in `dir` (access() misses ACLs and read-only mounts); never an existing file. */
function tryWrite(dir: string, name: string, target: string): void {
  const probe = path.join(dir, tempName(name));
  try {
    fs.closeSync(fs.openSync(probe, 'wx', 0o600));
  } catch (e) {
    throw badInput(`cannot write there: the folder ${dir} is not writable (${(e as NodeJS.ErrnoException).code ?? String(e)})`, target);
  }
  fs.rmSync(probe, { force: true });
}
