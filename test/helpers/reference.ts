// Shared helpers for tests that compare the engine with the PyTorch reference (test/reference/llama_ref.py).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

/** The real model and datasets the tests read, carried in the project (test/fixtures/README.md: sources, licences). */
export const FIXTURES = path.resolve(process.cwd(), 'test/fixtures');
/** The former name of FIXTURES (when the fixtures sat beside the project in ../shared), kept for the tests that import it. */
export const SHARED = FIXTURES;
export const STORIES = path.join(FIXTURES, 'models/stories260K');

const tempDirs: string[] = [];

/** A new temporary folder, removed with its contents when the process (one test file's) exits, passed or failed. */
export function tmpDir(prefix = 'domlora-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  if (!tempDirs.length) process.once('exit', () => { for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true }); });
  tempDirs.push(dir);
  return dir;
}

/** Fresh paths in one temporary folder (tmpDir's): each name numbered, so no two calls share a path. */
export function tempPaths(prefix: string): (name: string) => string {
  const root = tmpDir(prefix);
  let count = 0;
  return (name) => path.join(root, `${count++}-${name}`);
}

/** Runs the PyTorch reference with one request; throws with its stderr when it fails. */
export function reference<T = Record<string, unknown>>(request: Record<string, unknown>): T {
  const dir = tmpDir('domlora-ref-');
  const req = path.join(dir, 'request.json');
  fs.writeFileSync(req, JSON.stringify(request));
  const r = spawnSync('/usr/bin/python3', [path.resolve('test/reference/llama_ref.py'), req], { encoding: 'utf8', maxBuffer: 1 << 28 });
  fs.rmSync(dir, { recursive: true, force: true });
  if (r.status !== 0) throw new Error(`reference failed (${r.status}): ${r.stderr || r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

export function relErr(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
}

export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-8): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), floor, 1e-3 * scale));
  return m;
}
