// Running the built CLI (`node dist/cli.js`, from `npm run build`) as a user does, on the wasm backend.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

export const ROOT = process.cwd();
export const CLI = path.join(ROOT, 'dist/cli.js');

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the CLI's --json output, of many shapes, read field by field
export interface Run { status: number | null; stdout: string; stderr: string; lines: string[]; json: any; ms: number }

export function cli(...args: string[]): Run {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd: ROOT, encoding: 'utf8', timeout: 120_000,
    env: { ...process.env, DOMLORA_BACKEND: 'wasm', DOMLORA_DEBUG: '', NO_COLOR: '1' },
  });
  assert.equal(r.error, undefined, `spawning domlora ${args.join(' ')}: ${String(r.error)}`);
  assert.equal(r.signal, null, `domlora ${args.join(' ')} was killed by ${r.signal} (timeout?)\n${r.stderr}`);
  const lines = r.stdout.split('\n').filter((l) => l.trim() !== '');
  let json: Run['json'];
  try { json = lines.length ? JSON.parse(lines[lines.length - 1]) : undefined; } catch { json = undefined; }
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, lines, json, ms: Date.now() - t0 };
}

/** Runs a command that must succeed and print exactly one JSON line on stdout. */
export function cliJson(...args: string[]): Run {
  const r = cli(...args);
  assert.equal(r.status, 0, `domlora ${args.join(' ')} exited ${r.status}\nstderr: ${r.stderr}`);
  assert.equal(r.lines.length, 1, `stdout must hold only the result line, got:\n${r.stdout}`);
  assert.ok(r.json && typeof r.json === 'object', `the stdout line is a JSON object: ${r.stdout}`);
  return r;
}

/**
 * Runs a command that must fail with exit 2 (bad input): one `domlora: ` line on stderr, and on stdout nothing, or
 * with --json exactly one JSON object holding the same error and the exit code.
 */
export function cliBadInput(...args: string[]): Run {
  const r = cli(...args);
  assert.equal(r.status, 2, `domlora ${args.join(' ')} should exit 2, exited ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.match(r.stderr, /^domlora: /m);
  if (args.includes('--json')) {
    assert.equal(r.lines.length, 1, `with --json, stdout holds one line: ${r.stdout}`);
    assert.equal(r.json?.exitCode, 2, r.stdout);
    assert.equal(r.json?.error?.code, 'bad-input', r.stdout);
    assert.ok(r.stderr.includes(r.json.error.message.split('\n')[0]), `stderr and the JSON name the same error:\n${r.stderr}\n${r.stdout}`);
  } else {
    assert.equal(r.stdout, '', 'nothing on stdout when the input is bad');
  }
  return r;
}
