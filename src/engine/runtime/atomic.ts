import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Writes a file under a temporary name in the same folder, then renames it, so a reader (or a crash) never sees a
 * half-written file.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true });
  sweepStaleTemps(dir, path.basename(file));
  const tmp = path.join(dir, tempName(path.basename(file)));
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/**
 * Builds a folder under a temporary sibling name with `fill`, then moves it into place. An existing folder at `dir`
 * is replaced only after the new one is complete.
 */
export async function writeDirAtomic(dir: string, fill: (tmpDir: string) => Promise<void> | void): Promise<void> {
  // A target that is a symbolic link is written where it points, not over the link.
  const target = realTarget(path.resolve(dir));
  const parent = path.dirname(target);
  fs.mkdirSync(parent, { recursive: true });
  sweepStaleTemps(parent, path.basename(target));
  const tmp = path.join(parent, tempName(path.basename(target)));
  const old = `${tmp}.old`;
  let movedAside = false;
  fs.mkdirSync(tmp);
  try {
    await fill(tmp);
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
