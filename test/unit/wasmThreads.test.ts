// enableWasmThreads: threaded tfjs-wasm in Node. The wasm backend initialises once per process, so every case that
// starts it runs in a child process: this same file, re-run with DOMLORA_WASM_THREADS_CHILD set. Each child ends
// without process.exit(), so "it exited" also checks that the pthread workers do not keep a program alive.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfWasm from '@tensorflow/tfjs-backend-wasm';
import { enableWasmThreads, PINNED_TFJS_WASM_VERSION, type WasmThreadsResult } from '../../src/engine/runtime/wasmThreads';

const CHILD_ENV = 'DOMLORA_WASM_THREADS_CHILD';
const EXIT_LIMIT_MS = 60_000; // a hang guard, not a timing assertion
// The XNNPACK fast path: a non-transposed 2-D matmul.
const M = 512, K = 576, N = 1536;

interface ChildSpec { threads: number; out: string; initTimeoutMs?: number }
interface ChildReport { result: WasmThreadsResult; backend: string; reported: number; simd: boolean }

/** Deterministic inputs in [-1, 1) (a 32-bit LCG), the same in every process. */
function lcg(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 31 - 1;
  }
  return a;
}

async function child(spec: ChildSpec): Promise<void> {
  let result: WasmThreadsResult;
  if (spec.threads > 1) {
    result = await enableWasmThreads(tf, spec.threads, spec.initTimeoutMs ? { initTimeoutMs: spec.initTimeoutMs } : {});
  } else {
    await tf.setBackend('wasm'); // stock
    result = { enabled: false, threads: tfWasm.getThreadsCount() };
  }
  await tf.setBackend('wasm'); // what a caller does next: a no-op after enableWasmThreads
  const a = tf.tensor2d(lcg(M * K, 1), [M, K]);
  const b = tf.tensor2d(lcg(K * N, 2), [K, N]);
  const c = tf.matMul(a, b).dataSync() as Float32Array;
  const report: ChildReport = {
    result, backend: tf.getBackend(), reported: tfWasm.getThreadsCount(), simd: tf.env().getBool('WASM_HAS_SIMD_SUPPORT'),
  };
  fs.writeFileSync(`${spec.out}.bin`, Buffer.from(c.buffer, c.byteOffset, c.byteLength));
  fs.writeFileSync(`${spec.out}.json`, JSON.stringify(report));
  // No process.exit(): the parent asserts that this process ends by itself.
}

interface Run { code: number | null; signal: NodeJS.Signals | null; ms: number; stderr: string; report?: ChildReport; values?: Float32Array }

let tmp: string | undefined;
function runChild(spec: Omit<ChildSpec, 'out'>): Promise<Run> {
  tmp ??= fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-wasm-threads-'));
  const out = path.join(tmp, `t${spec.threads}-${spec.initTimeoutMs ?? 0}`);
  const env: NodeJS.ProcessEnv = { ...process.env, [CHILD_ENV]: JSON.stringify({ ...spec, out }) };
  delete env.NODE_TEST_CONTEXT; // the child is a plain program, not a test-runner child
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [__filename], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const guard = setTimeout(() => p.kill('SIGKILL'), EXIT_LIMIT_MS);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(guard);
      const run: Run = { code, signal, ms: Date.now() - started, stderr };
      if (fs.existsSync(`${out}.json`)) {
        run.report = JSON.parse(fs.readFileSync(`${out}.json`, 'utf8')) as ChildReport;
        const buf = fs.readFileSync(`${out}.bin`);
        run.values = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
      }
      resolve(run);
    });
  });
}

function assertExited(run: Run, what: string): void {
  assert.equal(run.signal, null, `${what}: did not exit by itself within ${EXIT_LIMIT_MS} ms (killed); stderr:\n${run.stderr}`);
  assert.equal(run.code, 0, `${what}: exit code ${run.code}; stderr:\n${run.stderr}`);
  assert.ok(run.report && run.values, `${what}: wrote no report; stderr:\n${run.stderr}`);
}

function assertSameValues(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let worst = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i]));
    if (!(d <= worst)) { worst = d; at = i; }
  }
  assert.ok(worst <= 1e-6, `${what}: differs from single-threaded by ${worst} at ${at} (${got[at]} vs ${want[at]})`);
}

if (process.env[CHILD_ENV]) {
  void child(JSON.parse(process.env[CHILD_ENV]) as ChildSpec);
} else {
  let single: Run | undefined;
  const singleRun = async (): Promise<Run> => (single ??= await runChild({ threads: 1 }));

  test('the installed tfjs-backend-wasm is the pinned version', () => {
    assert.equal(tfWasm.version_wasm, PINNED_TFJS_WASM_VERSION);
  });

  test('fewer than 2 threads: refused without touching the backend', async () => {
    const r = await enableWasmThreads(tf, 1);
    assert.equal(r.enabled, false);
    assert.equal(r.threads, 1);
    assert.match(r.reason ?? '', /single-threaded/);
    assert.equal(tf.engine().registry.wasm, undefined, 'the wasm backend must not have been initialised');
  });

  test('stock (1 thread) baseline runs and exits', async () => {
    const run = await singleRun();
    assertExited(run, 'stock child');
    assert.equal(run.report!.backend, 'wasm');
    assert.equal(run.report!.reported, 1);
  });

  test('2 threads: enabled, tfjs reports 2, same matmul result, process exits by itself', async () => {
    const [base, run] = [await singleRun(), await runChild({ threads: 2 })];
    assertExited(run, '2-thread child');
    const { result, backend, reported, simd } = run.report!;
    assert.deepEqual(result, { enabled: true, threads: 2 }, JSON.stringify(result));
    assert.equal(backend, 'wasm');
    assert.equal(reported, 2, 'tfjs getThreadsCount()');
    assert.equal(simd, true);
    assertSameValues(run.values!, base.values!, '2 threads');
  });

  test('3 threads: not capped by the cores/2 rule (tfjs reports 3), same result', async () => {
    const [base, run] = [await singleRun(), await runChild({ threads: 3 })];
    assertExited(run, '3-thread child');
    assert.deepEqual(run.report!.result, { enabled: true, threads: 3 }, JSON.stringify(run.report!.result));
    assert.equal(run.report!.reported, 3);
    assertSameValues(run.values!, base.values!, '3 threads');
  });

  test('fail-safe: a threaded start that times out falls back to the stock backend and still exits', async () => {
    const [base, run] = [await singleRun(), await runChild({ threads: 2, initTimeoutMs: 1 })];
    assertExited(run, 'fallback child');
    const { result, backend, reported } = run.report!;
    assert.equal(result.enabled, false);
    assert.match(result.reason ?? '', /did not start within 1 ms/);
    assert.equal(backend, 'wasm');
    assert.equal(reported, 1);
    assertSameValues(run.values!, base.values!, 'fallback');
  });

  test.after(() => { if (tmp) fs.rmSync(tmp, { recursive: true, force: true }); });
}
