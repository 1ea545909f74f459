// Atomic writes: what a writer killed mid-write leaves behind is swept by the next writer of the same name, and
// nothing else is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { sweepStaleTemps, writeDirAtomic, writeFileAtomic } from '../../src/engine/runtime/atomic';

/** The pid of a process that has exited (and been reaped): nothing runs under it, barring reuse. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  assert.equal(r.status, 0);
  assert.throws(() => process.kill(r.pid!, 0), (e: NodeJS.ErrnoException) => e.code === 'ESRCH');
  return r.pid!;
}

/** Sets the modification time of a path (and of a folder's entries) an hour back. */
function age(p: string): void {
  const t = new Date(Date.now() - 3600_000);
  if (fs.statSync(p).isDirectory()) for (const e of fs.readdirSync(p)) fs.utimesSync(path.join(p, e), t, t);
  fs.utimesSync(p, t, t);
}

const tempDirs: string[] = [];
/** A new temporary folder, removed when this file's process exits (a test that fails before its own rmSync included). */
function tmpDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-atomic-'));
  if (!tempDirs.length) process.once('exit', () => { for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true }); });
  tempDirs.push(dir);
  return dir;
}

test('writeFileAtomic sweeps the temporaries of dead writers of that name, and only those', () => {
  const dir = tmpDir();
  const dead = deadPid();
  const ms = Date.now() - 3600_000;
  const put = (name: string, folder = false) => {
    const p = path.join(dir, name);
    if (folder) { fs.mkdirSync(p); fs.writeFileSync(path.join(p, 'part'), 'x'); } else fs.writeFileSync(p, 'x');
    age(p);
    return name;
  };
  const staleFile = put(`.out.json.${dead}.${ms}.tmp`);
  const staleDir = put(`.out.json.${dead}.${ms + 1}.tmp`, true);
  const kept = [
    put(`.out.json.${process.pid}.${ms}.tmp`), // this process: maybe a write in progress
    put(`.out.json.${dead}.${ms}.tmp.bak`), // not our pattern
    put(`.out.json.${dead}.${ms}.${ms}.tmp`),
    put(`.out.json.x${dead}.${ms}.tmp`),
    put(`.out.jsonl.${dead}.${ms}.tmp`), // another target
    put(`.other.json.${dead}.${ms}.tmp`),
    put(`out.json.${dead}.${ms}.tmp`), // no leading dot
    put('unrelated.txt'),
  ];
  // A dead writer's temporary touched a moment ago is kept: it may be a writer this pid test cannot see.
  const recent = `.out.json.${dead}.${ms + 2}.tmp`;
  fs.writeFileSync(path.join(dir, recent), 'x');
  kept.push(recent);
  const target = path.join(dir, 'out.json');
  writeFileAtomic(target, '{"ok":true}\n');
  assert.equal(fs.readFileSync(target, 'utf8'), '{"ok":true}\n');
  const left = fs.readdirSync(dir);
  assert.ok(!left.includes(staleFile), 'the dead writer\'s file is gone');
  assert.ok(!left.includes(staleDir), 'the dead writer\'s folder is gone');
  assert.deepEqual(left.sort(), [...kept, 'out.json'].sort(), 'everything else is kept, and the write left no temporary');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('writeDirAtomic sweeps dead writers\' folders; a folder moved aside by a killed writer is put back when the target is missing', async () => {
  const dir = tmpDir();
  const dead = deadPid();
  const ms = Date.now() - 3600_000;
  const target = path.join(dir, 'model');
  const mk = (name: string, content: string) => {
    const p = path.join(dir, name);
    fs.mkdirSync(p);
    fs.writeFileSync(path.join(p, 'config.json'), content);
    age(p);
    return p;
  };
  // Killed between its two renames: the old folder moved aside, the new one complete but not in place.
  mk(`.model.${dead}.${ms}.tmp`, 'new, never moved in');
  mk(`.model.${dead}.${ms}.tmp.old`, 'previous');
  mk(`.model.${dead}.${ms - 5}.tmp.old`, 'older still');
  const live = mk(`.model.${process.pid}.${ms}.tmp`, 'this process, in progress');
  // A fill that fails: the target is back to its previous content, the dead writer's leftovers are gone.
  await assert.rejects(writeDirAtomic(target, () => { throw new Error('fill failed'); }), /fill failed/);
  assert.equal(fs.readFileSync(path.join(target, 'config.json'), 'utf8'), 'previous');
  assert.deepEqual(fs.readdirSync(dir).sort(), [path.basename(live), 'model'].sort());
  // A fill that succeeds replaces it.
  await writeDirAtomic(target, (tmp) => { fs.writeFileSync(path.join(tmp, 'config.json'), 'written'); });
  assert.equal(fs.readFileSync(path.join(target, 'config.json'), 'utf8'), 'written');
  assert.deepEqual(fs.readdirSync(dir).sort(), [path.basename(live), 'model'].sort());
  assert.equal(fs.readFileSync(path.join(live, 'config.json'), 'utf8'), 'this process, in progress');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('sweepStaleTemps never throws: a missing folder is nothing to sweep', () => {
  assert.deepEqual(sweepStaleTemps(path.join(os.tmpdir(), `domlora-missing-${process.pid}-${Date.now()}`), 'x'), []);
  const dir = tmpDir();
  const dead = deadPid();
  const stale = path.join(dir, `.x.${dead}.1.tmp`);
  fs.writeFileSync(stale, 'x');
  assert.deepEqual(sweepStaleTemps(dir, 'x'), [], 'too recent');
  assert.deepEqual(sweepStaleTemps(dir, 'x', 0), [stale]);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('writeDirAtomic writes through a symbolic link to a folder and keeps the link', async () => {
  const dir = tmpDir();
  const real = path.join(dir, 'real');
  fs.mkdirSync(real);
  fs.writeFileSync(path.join(real, 'v'), '1');
  const link = path.join(dir, 'link');
  fs.symlinkSync(real, link, 'dir');
  await writeDirAtomic(link, (tmp) => fs.writeFileSync(path.join(tmp, 'v'), '2'));
  assert.ok(fs.lstatSync(link).isSymbolicLink(), 'the link is still a link');
  assert.equal(fs.readFileSync(path.join(real, 'v'), 'utf8'), '2');
  assert.deepEqual(fs.readdirSync(dir).sort(), ['link', 'real']);
});

test('writeDirAtomic puts the previous folder back when the new one cannot take its place', async () => {
  const dir = tmpDir();
  const target = path.join(dir, 'adapter');
  fs.mkdirSync(target);
  fs.writeFileSync(path.join(target, 'v'), 'old');
  // The module object itself (an `import *` namespace is read-only): atomic.ts's calls go through it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the mutable module object, on purpose (above)
  const fsModule = require('node:fs') as { renameSync: typeof fs.renameSync };
  const rename = fsModule.renameSync;
  let calls = 0;
  // The first rename (the old folder aside) works; the second (the new one into place) fails, as EBUSY on Windows.
  fsModule.renameSync = (a, b) => {
    if (++calls === 2) throw Object.assign(new Error('EBUSY: resource busy'), { code: 'EBUSY' });
    rename(a, b);
  };
  try {
    await assert.rejects(writeDirAtomic(target, (tmp) => fs.writeFileSync(path.join(tmp, 'v'), 'new')), /EBUSY/);
  } finally {
    fsModule.renameSync = rename;
  }
  assert.equal(calls, 3, 'aside, into place (failed), back');
  assert.equal(fs.readFileSync(path.join(target, 'v'), 'utf8'), 'old');
  assert.deepEqual(fs.readdirSync(dir), ['adapter'], 'no temporary left');
});
