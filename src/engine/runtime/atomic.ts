import * as fs from 'node:fs';
import * as path from 'node:path';
import { badInput } from './errors';

/**
 * Where a write must stay: `root` is the folder the user chose (a workspace folder, the extension's storage, the
 * folder of domlora.adapterDirectory). The target must lie inside it through real folders only: no `..` out of it,
 * and no symbolic link on the way, so that a link planted in a cloned repository's `.domlora/` cannot send a report
 * or an adapter somewhere else. Without a root (the CLI's --out, which the user typed) paths are taken as given.
 */
export interface WriteScope { root?: string }

/** Mode bits of what DomLoRA creates: what the umask leaves, less write for others (never world-writable). */
export function createMode(kind: 'file' | 'dir'): number {
  return (kind === 'dir' ? 0o777 : 0o666) & ~process.umask() & ~0o002;
}

/**
 * Why writing `target` would leave `root` (a `..` escape, a symbolic link or a file on the way, a real path outside
 * the root's), or undefined when it stays inside. Components that do not exist yet are fine: DomLoRA creates them,
 * as folders.
 */
export function escapeProblem(target: string, root: string): string | undefined {
  const r = path.resolve(root);
  const t = path.resolve(target);
  const rel = path.relative(r, t);
  if (rel === '' || rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) return `it lies outside ${r}, the folder it must be written in`;
  let deepest = r;
  let p = r;
  for (const part of rel.split(path.sep)) {
    p = path.join(p, part);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') break;
      return `${p} cannot be read (${code})`;
    }
    if (st.isSymbolicLink()) return `${p} is a symbolic link, and DomLoRA writes only through real folders inside ${r}`;
    if (p !== t && !st.isDirectory()) return `${p} is not a folder`;
    if (p !== t) deepest = p;
  }
  // A root that does not exist yet (the extension's storage before its first job, a folder the user named for an
  // export) holds nothing planted: DomLoRA creates it and what lies below, and checks again before each rename.
  if (deepest === r && !fs.existsSync(r)) return undefined;
  // The links were looked for above; the real paths catch what lstat does not call a link (a mount, a junction).
  try {
    const realRoot = fs.realpathSync(r);
    const realDeepest = fs.realpathSync(deepest);
    const back = path.relative(realRoot, realDeepest);
    if (back.startsWith('..') || path.isAbsolute(back)) return `${deepest} resolves to ${realDeepest}, outside ${realRoot}`;
  } catch (e) {
    return `${r} cannot be resolved (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
  }
  return undefined;
}

/** Throws a bad-input error naming `target` when writing it would leave `scope.root` (see escapeProblem). */
export function assertInside(target: string, scope: WriteScope): void {
  if (scope.root === undefined) return;
  const why = escapeProblem(target, scope.root);
  if (why) throw badInput(`DomLoRA does not write there: ${why}. Remove what is in the way, or choose another folder`, path.resolve(target));
}

/** Whether `dir` is the scope's root or lies above it: the root is the user's choice, so making it is not an escape. */
export function rootOrAbove(dir: string, scope: WriteScope): boolean {
  if (scope.root === undefined) return false;
  const rel = path.relative(path.resolve(dir), path.resolve(scope.root));
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Creates the missing folders down to `dir` one at a time (never following a link when there is a root); returns those it made. */
export function makeFolders(dir: string, scope: WriteScope = {}): string[] {
  const missing: string[] = [];
  for (let p = path.resolve(dir); ; p = path.dirname(p)) {
    if (fs.existsSync(p)) break;
    missing.push(p);
    if (path.dirname(p) === p) break;
  }
  const made: string[] = [];
  for (const m of missing.reverse()) {
    if (!rootOrAbove(m, scope)) assertInside(m, scope);
    try {
      fs.mkdirSync(m, { mode: createMode('dir') });
      made.push(m);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  return made;
}

/**
 * Writes a file under a temporary name in the same folder, then renames it, so a reader (or a crash) never sees a
 * half-written file. The temporary is created exclusively ('wx': never an existing file, nor through a link planted
 * under its name), readable by its owner only while it is written, and given the umask's mode before the rename.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array, scope: WriteScope = {}): void {
  assertInside(file, scope);
  const dir = path.dirname(file);
  makeFolders(dir, scope);
  sweepStaleTemps(dir, path.basename(file));
  const tmp = path.join(dir, tempName(path.basename(file)));
  try {
    const fd = fs.openSync(tmp, 'wx', 0o600);
    try {
      fs.writeFileSync(fd, data);
      fs.fchmodSync(fd, createMode('file'));
    } finally {
      fs.closeSync(fd);
    }
    // Checked again at the last moment: the folders may have changed while the data was computed.
    assertInside(file, scope);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/**
 * Builds a folder under a temporary sibling name with `fill`, then moves it into place. An existing folder at `dir`
 * is replaced only after the new one is complete. The temporary folder is its owner's alone while `fill` writes in
 * it; before the move, it and everything in it get the umask's modes, less write for others.
 */
export async function writeDirAtomic(dir: string, fill: (tmpDir: string) => Promise<void> | void, scope: WriteScope = {}): Promise<void> {
  assertInside(dir, scope);
  // Without a root (a path the user typed), a target that is a symbolic link is written where it points, not over
  // the link; with one, assertInside has refused it.
  const target = realTarget(path.resolve(dir));
  const parent = path.dirname(target);
  makeFolders(parent, scope);
  sweepStaleTemps(parent, path.basename(target));
  const tmp = path.join(parent, tempName(path.basename(target)));
  const old = `${tmp}.old`;
  let movedAside = false;
  fs.mkdirSync(tmp, { mode: 0o700 });
  try {
    await fill(tmp);
    restrictModes(tmp);
    assertInside(dir, scope);
    if (fs.existsSync(target)) {
      fs.renameSync(target, old);
      movedAside = true;
      fs.renameSync(tmp, target);
      movedAside = false;
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(tmp, target);
    }
  } catch (err) {
    // The previous copy goes back where it was if the new one could not take its place.
    if (movedAside && !exists(target)) {
      try { fs.renameSync(old, target); } catch { /* left at `old`; a later sweep restores it */ }
    }
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** Gives a folder DomLoRA filled the umask's mode, less write for others, and takes write for others from what is in it. */
function restrictModes(dir: string): void {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) restrictModes(p);
    else if (e.isFile()) fs.chmodSync(p, fs.statSync(p).mode & 0o777 & ~0o002);
  }
  fs.chmodSync(dir, createMode('dir'));
}

/** The path itself, or where it points when it is a symbolic link to a folder. */
function realTarget(p: string): string {
  try {
    return fs.lstatSync(p).isSymbolicLink() ? fs.realpathSync(p) : p;
  } catch {
    return p;
  }
}

/** The temporary sibling of `name` a writer uses: `.${name}.${pid}.${ms}.tmp` (a folder's old copy adds `.old`). */
export function tempName(name: string): string {
  return `.${name}.${process.pid}.${Date.now()}.tmp`;
}

/**
 * How long a dead writer's temporary must have been left untouched before it is swept. The pid test alone cannot
 * see writers in another pid namespace (a container, or another machine on a shared folder) that use the same folder.
 */
export const STALE_TEMP_AGE_MS = 10 * 60 * 1000;

/**
 * Removes what writers of `name` in `dir` left behind when they were killed mid-write (SIGKILL, power loss): the
 * siblings `.${name}.<pid>.<ms>.tmp` and `.${name}.<pid>.<ms>.tmp.old` whose pid is no running process and that
 * nothing has touched for `minAgeMs`. Nothing else is touched: other names, live or unknown pids (this process's own
 * included), recent entries, anything that is not a plain file or folder. A folder moved aside as `.tmp.old` by a
 * writer killed between its two renames is the last complete copy: when `name` itself is missing it is moved back
 * instead of removed (the newest one, when there are several). Never throws; returns the paths removed.
 */
export function sweepStaleTemps(dir: string, name: string, minAgeMs = STALE_TEMP_AGE_MS): string[] {
  const removed: string[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch {
    return removed;
  }
  const prefix = `.${name}.`;
  const olds: { file: string; ms: number }[] = [];
  for (const entry of entries) {
    if (!entry.startsWith(prefix)) continue;
    const m = /^(\d{1,10})\.(\d{1,16})\.tmp(\.old)?$/.exec(entry.slice(prefix.length));
    if (!m || processAlive(Number(m[1]))) continue;
    const file = path.join(dir, entry);
    try {
      const st = fs.lstatSync(file);
      if (!st.isFile() && !st.isDirectory()) continue;
      // Age from the time in its name (when that writer started) and from its contents' last change.
      if (Date.now() - Math.max(Number(m[2]), lastTouched(file, st)) < minAgeMs) continue;
      if (m[3]) {
        olds.push({ file, ms: Number(m[2]) });
      } else {
        fs.rmSync(file, { recursive: true, force: true });
        removed.push(file);
      }
    } catch {
      // Gone meanwhile, or not ours to remove: the write goes on either way.
    }
  }
  olds.sort((a, b) => b.ms - a.ms);
  let restore = olds.length > 0 && !exists(path.join(dir, name));
  for (const old of olds) {
    try {
      if (restore) {
        restore = false;
        fs.renameSync(old.file, path.join(dir, name));
      } else {
        fs.rmSync(old.file, { recursive: true, force: true });
        removed.push(old.file);
      }
    } catch {
      // As above.
    }
  }
  return removed;
}

/** Whether a process with this id may be running: only a definite "no such process" (ESRCH) says it is not. */
function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH'; // EPERM: it runs, as another user
  }
}

/** The newest modification time of a file, or of a folder and its direct entries (a file being written inside it). */
function lastTouched(file: string, st: fs.Stats): number {
  let t = st.mtimeMs;
  if (st.isDirectory()) {
    for (const e of fs.readdirSync(file)) t = Math.max(t, fs.lstatSync(path.join(file, e)).mtimeMs);
  }
  return t;
}

function exists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}
