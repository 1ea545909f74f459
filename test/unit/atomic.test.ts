// Atomic writes: what a writer killed mid-write leaves behind is swept by the next writer of the same name, and
// nothing else is; a write stays inside the folder the user chose (no link, no `..` out of it), created exclusively,
// with the umask's modes and never writable by others.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { escapeProblem, sweepStaleTemps, tempName, writeDirAtomic, writeFileAtomic } from '../../src/engine/runtime/atomic';
import { DomLoraError } from '../../src/engine/runtime/errors';
import { claimOutput } from '../../src/engine/runtime/outputs';
import { STORIES } from '../helpers/reference';

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

// ---- Paths we write are ours -------------------------------------------------------------------------------------

/** A workspace with a planted `.domlora` (or a deeper folder) that is a link to a folder outside it. */
function plantedWorkspace(linkAt: string): { ws: string; outside: string } {
  const dir = tmpDir();
  const ws = path.join(dir, 'ws');
  const outside = path.join(dir, 'outside');
  fs.mkdirSync(ws);
  fs.mkdirSync(outside);
  fs.mkdirSync(path.dirname(path.join(ws, linkAt)), { recursive: true });
  fs.symlinkSync(outside, path.join(ws, linkAt), 'dir');
  return { ws, outside };
}

test('a link planted in .domlora/ does not redirect a claimed output, a file or a folder write', async () => {
  for (const linkAt of ['.domlora', '.domlora/tiny']) {
    const { ws, outside } = plantedWorkspace(linkAt);
    const report = path.join(ws, '.domlora', 'tiny', 'probe-1.json');
    const refused = (e: unknown) => e instanceof DomLoraError && e.code === 'bad-input' && /is a symbolic link, and DomLoRA writes only through real folders inside/.test(e.message);
    assert.throws(() => claimOutput(report, 'report', { root: ws }), refused, linkAt);
    assert.throws(() => writeFileAtomic(report, '{}', { root: ws }), refused);
    await assert.rejects(writeDirAtomic(path.join(ws, '.domlora', 'tiny', 'adapter'), (t) => fs.writeFileSync(path.join(t, 'a'), 'x'), { root: ws }), refused);
    assert.deepEqual(fs.readdirSync(outside), [], `nothing written through ${linkAt}`);
  }
  // The same write without a link goes where it should.
  const dir = tmpDir();
  writeFileAtomic(path.join(dir, '.domlora', 'tiny', 'probe-1.json'), '{}', { root: dir });
  assert.equal(fs.readFileSync(path.join(dir, '.domlora', 'tiny', 'probe-1.json'), 'utf8'), '{}');
  // A root that does not exist yet (the extension's storage before its first job, an export folder the user named)
  // is created with what goes in it; a link planted in its place still stops the write.
  const fresh = path.join(dir, 'storage', 'models');
  claimOutput(path.join(fresh, 'm', 'probe-1.json'), 'report', { root: fresh });
  writeFileAtomic(path.join(fresh, 'm', 'probe-1.json'), '{}', { root: fresh });
  assert.equal(fs.readFileSync(path.join(fresh, 'm', 'probe-1.json'), 'utf8'), '{}');
  const later = path.join(dir, 'later');
  fs.mkdirSync(path.join(dir, 'elsewhere'));
  assert.equal(escapeProblem(path.join(later, 'x', 'y.json'), later), undefined);
  fs.mkdirSync(later);
  fs.symlinkSync(path.join(dir, 'elsewhere'), path.join(later, 'x'));
  assert.match(escapeProblem(path.join(later, 'x', 'y.json'), later) ?? '', /x is a symbolic link/);
});

test('an output escaping its root by `..`, a link in its own place or a file on the way is refused', async () => {
  const { ws, outside } = plantedWorkspace('unrelated-link');
  assert.throws(() => claimOutput(path.join(ws, '.domlora', '..', '..', 'outside', 'x.json'), 'report', { root: ws }), /lies outside/);
  assert.throws(() => writeFileAtomic(`${ws}/.domlora/../../outside/y.json`, '{}', { root: ws }), /lies outside/);
  assert.throws(() => claimOutput(ws, 'adapter', { root: ws }), /lies outside/, 'the root itself is not an output inside it');
  // A report name that is a link to a file of the user's: neither claimed nor replaced.
  fs.mkdirSync(path.join(ws, '.domlora', 'tiny'), { recursive: true });
  const bashrc = path.join(outside, 'bashrc');
  fs.writeFileSync(bashrc, 'mine');
  fs.symlinkSync(bashrc, path.join(ws, '.domlora', 'tiny', 'probe-2.json'));
  assert.throws(() => claimOutput(path.join(ws, '.domlora', 'tiny', 'probe-2.json'), 'report', { root: ws, force: true }), /probe-2\.json is a symbolic link/);
  assert.throws(() => writeFileAtomic(path.join(ws, '.domlora', 'tiny', 'probe-2.json'), 'x', { root: ws }), /is a symbolic link/);
  assert.equal(fs.readFileSync(bashrc, 'utf8'), 'mine');
  // A file where a folder must be.
  fs.writeFileSync(path.join(ws, 'file'), '');
  assert.throws(() => writeFileAtomic(path.join(ws, 'file', 'x.json'), 'x', { root: ws }), /file is not a folder/);
  assert.deepEqual(fs.readdirSync(outside), ['bashrc']);
});

test('a link planted while a folder is being written stops its move into place', async () => {
  const dir = tmpDir();
  const ws = path.join(dir, 'ws');
  const outside = path.join(dir, 'outside');
  fs.mkdirSync(path.join(ws, '.domlora', 'tiny'), { recursive: true });
  fs.mkdirSync(outside);
  await assert.rejects(writeDirAtomic(path.join(ws, '.domlora', 'tiny', 'adapter'), (tmp) => {
    fs.writeFileSync(path.join(tmp, 'adapter_config.json'), '{}');
    // Meanwhile .domlora (the temporary inside it) moves elsewhere and a link takes its place: the temporary's path
    // still resolves, now through the link, and a rename would land outside the workspace.
    fs.renameSync(path.join(ws, '.domlora'), path.join(outside, '.domlora'));
    fs.symlinkSync(path.join(outside, '.domlora'), path.join(ws, '.domlora'), 'dir');
  }, { root: ws }), /\.domlora is a symbolic link/);
  assert.deepEqual(fs.readdirSync(path.join(outside, '.domlora', 'tiny')), [], 'not moved into place, and the temporary removed');
});

test('the temporary file is created exclusively: a link planted under its name is not written through', () => {
  const dir = tmpDir();
  const victim = path.join(dir, 'victim');
  fs.writeFileSync(victim, 'mine');
  const now = Date.now() + 3600_000;
  const realNow = Date.now;
  Date.now = () => now;
  try {
    fs.symlinkSync(victim, path.join(dir, tempName('out.json')));
    assert.throws(() => writeFileAtomic(path.join(dir, 'out.json'), 'theirs'), /EEXIST/);
  } finally {
    Date.now = realNow;
  }
  assert.equal(fs.readFileSync(victim, 'utf8'), 'mine');
  assert.ok(!fs.existsSync(path.join(dir, 'out.json')));
});

test('what DomLoRA creates takes its mode from the umask, and is never writable by others', async () => {
  const saved = process.umask();
  try {
    for (const [umask, file, folder] of [[0o000, 0o664, 0o775], [0o022, 0o644, 0o755], [0o077, 0o600, 0o700]] as const) {
      process.umask(umask);
      const dir = tmpDir();
      const claimed = claimOutput(path.join(dir, 'new', 'deeper', 'report.json'), 'report', { root: dir });
      writeFileAtomic(claimed.path, '{}', { root: dir });
      await writeDirAtomic(path.join(dir, 'new', 'adapter'), (tmp) => {
        // Written as the trainer writes (writeFileSync's default mode), and a copied file whose source others may write.
        fs.writeFileSync(path.join(tmp, 'adapter_config.json'), '{}');
        fs.mkdirSync(path.join(tmp, 'checkpoint'));
        fs.writeFileSync(path.join(tmp, 'checkpoint', 'trainer_state.json'), '{}', { mode: 0o666 });
        fs.chmodSync(path.join(tmp, 'checkpoint', 'trainer_state.json'), 0o666);
      }, { root: dir });
      const mode = (p: string) => fs.statSync(path.join(dir, p)).mode & 0o777;
      const name = `umask ${umask.toString(8)}`;
      assert.equal(mode('new'), folder, `${name}: a parent the claim made`);
      assert.equal(mode('new/deeper'), folder, name);
      assert.equal(mode('new/deeper/report.json'), file, name);
      assert.equal(mode('new/adapter'), folder, name);
      assert.equal(mode('new/adapter/checkpoint'), folder, name);
      assert.equal(mode('new/adapter/adapter_config.json'), file, name);
      assert.equal(mode('new/adapter/checkpoint/trainer_state.json') & 0o002, 0, `${name}: a world-writable file lost o+w`);
    }
  } finally {
    process.umask(saved);
  }
});

test('the extension\'s outputs are confined end to end: an export into a planted .domlora link is refused before any work', async () => {
  const { ws, outside } = plantedWorkspace('.domlora');
  const { runExport } = await import('../../src/engine/export/exporters');
  const { buildPeftConfig, writeAdapterFiles } = await import('../../src/engine/export/peft');
  const { openModelFolder } = await import('../../src/engine/hf/folder');
  const { candidateModules } = await import('../../src/engine/hf/modules');
  const folder = openModelFolder(STORIES);
  const spec = candidateModules(folder.cfg)[0]!;
  const adapter = path.join(ws, 'adapter');
  fs.mkdirSync(adapter);
  writeAdapterFiles(adapter, [{ spec, a: new Float32Array(8 * spec.dIn), b: new Float32Array(8 * spec.dOut) }], buildPeftConfig([spec], folder.cfg.numLayers, 8, 16, STORIES), {});
  for (const format of ['axolotl', 'merged'] as const) {
    await assert.rejects(runExport({ adapterDir: adapter, format, out: path.join(ws, '.domlora', 'tiny', format === 'merged' ? 'merged' : 'a.yml'), modelDir: STORIES, outRoot: ws }),
      /\.domlora is a symbolic link/);
  }
  assert.deepEqual(fs.readdirSync(outside), []);
});
