#!/usr/bin/env node
// fp32 matmul GFLOP/s on tfjs-wasm, stock (1 thread) against enableWasmThreads (src/engine/runtime/wasmThreads.ts).
//
//   node scripts/bench-matmul.mjs [--threads 1,2] [--shapes 512x576x1536,512x1536x576] [--reps 30] [--rounds 3]
//                                 [--wait-idle 60]
//
// The wasm backend initialises once per process, so every (threads, round) runs in a child process; rounds
// alternate the thread counts so that a noisy host hurts them alike. Reported: best-of-all GFLOP/s (2·M·K·N / time of
// one matMul + dataSync, inputs resident, XNNPACK's packed weights warm), process CPU time / wall time over the timed
// loop (all threads of the process), and the largest difference from the first thread count's result.
// Shapes are MxKxN for [M,K]·[K,N], non-transposed 2-D: the XNNPACK fast path.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const CHILD = 'DOMLORA_BENCH_MATMUL_CHILD';

function arg(name, def) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : def;
}

/** Bundles src/engine/runtime/wasmThreads.ts (TypeScript) to CommonJS next to node_modules, so a plain node script can load it. */
async function buildShim() {
  const esbuild = await import('esbuild');
  const outfile = path.join(root, 'out', 'bench', 'wasmThreads.cjs');
  await esbuild.build({ entryPoints: [path.join(root, 'src/engine/runtime/wasmThreads.ts')], bundle: true, platform: 'node',
    target: 'node20', format: 'cjs', packages: 'external', outfile, logLevel: 'warning' });
  return outfile;
}

function lcg(n, seed) {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; a[i] = s / 2 ** 31 - 1; }
  return a;
}

async function child({ threads, shapes, reps, shim, out }) {
  const require = createRequire(path.join(root, 'package.json'));
  const tf = require('@tensorflow/tfjs-core');
  const tfWasm = require('@tensorflow/tfjs-backend-wasm');
  let result;
  if (threads > 1) result = await require(shim).enableWasmThreads(tf, threads);
  else { await tf.setBackend('wasm'); result = { enabled: false, threads: 1, reason: 'stock' }; }
  const rows = [];
  for (const [M, K, N] of shapes) {
    const a = tf.tensor2d(lcg(M * K, 1), [M, K]);
    const b = tf.tensor2d(lcg(K * N, 2), [K, N]);
    let values;
    for (let i = 0; i < 3; i++) { const c = tf.matMul(a, b); values = c.dataSync(); c.dispose(); } // warm-up, packs b
    let best = Infinity;
    const cpu0 = process.cpuUsage(), wall0 = process.hrtime.bigint();
    for (let i = 0; i < reps; i++) {
      const t = process.hrtime.bigint();
      const c = tf.matMul(a, b); c.dataSync(); c.dispose();
      best = Math.min(best, Number(process.hrtime.bigint() - t) / 1e6);
    }
    const cpu = process.cpuUsage(cpu0), wall = Number(process.hrtime.bigint() - wall0) / 1e3; // µs
    fs.writeFileSync(`${out}-${M}x${K}x${N}.bin`, Buffer.from(values.buffer, values.byteOffset, values.byteLength));
    rows.push({ shape: [M, K, N], bestMs: best, gflops: (2 * M * K * N) / (best * 1e6), cpuPerWall: (cpu.user + cpu.system) / wall });
    a.dispose(); b.dispose();
  }
  fs.writeFileSync(`${out}.json`, JSON.stringify({ result, reported: tfWasm.getThreadsCount(), rows }));
}

/** Fraction of CPU time idle over `ms` (Linux /proc/stat), or undefined where that cannot be read. */
async function idleFraction(ms) {
  const read = () => fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  let a;
  try { a = read(); } catch { return undefined; }
  await new Promise((r) => setTimeout(r, ms));
  const b = read();
  const d = b.map((v, i) => v - a[i]);
  const total = d.reduce((x, y) => x + y, 0);
  return total > 0 ? (d[3] + (d[4] ?? 0)) / total : undefined; // idle + iowait
}

/** Waits (up to `maxS` seconds) for a mostly idle machine, as the engine benchmark did; returns whether it was. */
async function waitIdle(maxS) {
  const until = Date.now() + maxS * 1000;
  for (;;) {
    const idle = await idleFraction(1000);
    if (idle === undefined || idle >= 0.9) return true;
    if (Date.now() > until) return false;
  }
}

function runChild(spec) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
      env: { ...process.env, [CHILD]: JSON.stringify(spec) }, stdio: ['ignore', 'inherit', 'inherit'] });
    const guard = setTimeout(() => p.kill('SIGKILL'), 300_000);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(guard);
      if (code !== 0) reject(new Error(`child (${spec.threads} threads) ended with ${signal ?? `code ${code}`}`));
      else resolve({ ...JSON.parse(fs.readFileSync(`${spec.out}.json`, 'utf8')), exitMs: Date.now() - spec.started });
    });
  });
}

async function main() {
  const threadsList = arg('threads', '1,2').split(',').map(Number);
  const shapes = arg('shapes', '512x576x1536').split(',').map((s) => s.split('x').map(Number));
  const reps = Number(arg('reps', '30'));
  const rounds = Number(arg('rounds', '3'));
  const idleWait = Number(arg('wait-idle', '60')); // seconds to wait for >= 90% idle CPU before each child; 0: don't
  const shim = await buildShim();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-bench-matmul-'));
  const load = os.loadavg()[0];
  console.log(`node ${process.version}, ${os.cpus().length} logical CPUs (${os.cpus()[0]?.model ?? '?'}), load avg ${load.toFixed(2)}`);
  if (load > 0.5) console.log('note: the machine is not idle; figures are best-of-N but may still be low');

  const best = new Map(); // `${threads}|${shape}` -> { gflops, cpuPerWall, ... }
  const info = new Map();
  let busyRuns = 0;
  for (let r = 0; r < rounds; r++) {
    for (const threads of threadsList) {
      if (idleWait > 0 && !(await waitIdle(idleWait))) busyRuns++;
      const out = path.join(tmp, `t${threads}-r${r}`);
      const rep = await runChild({ threads, shapes, reps, shim, out, started: Date.now() });
      info.set(threads, rep);
      for (const row of rep.rows) {
        const key = `${threads}|${row.shape.join('x')}`;
        if (!best.has(key) || row.gflops > best.get(key).gflops) best.set(key, row);
      }
    }
  }

  for (const threads of threadsList) {
    const { result, reported } = info.get(threads);
    console.log(`threads=${threads}: ${JSON.stringify(result)}, tfjs getThreadsCount()=${reported}`);
  }
  console.log('\nshape (MxKxN)    threads  best ms   GFLOP/s  cpu/wall  speed-up  max rel diff vs first');
  for (const shape of shapes) {
    const name = shape.join('x');
    const base = best.get(`${threadsList[0]}|${name}`);
    const ref = new Float32Array(fs.readFileSync(path.join(tmp, `t${threadsList[0]}-r0-${name}.bin`)).buffer);
    for (const threads of threadsList) {
      const row = best.get(`${threads}|${name}`);
      const got = new Float32Array(fs.readFileSync(path.join(tmp, `t${threads}-r0-${name}.bin`)).buffer);
      let worst = 0;
      for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(got[i] - ref[i]) / Math.max(1, Math.abs(ref[i])));
      console.log(`${name.padEnd(16)} ${String(threads).padStart(7)} ${row.bestMs.toFixed(2).padStart(8)} ${row.gflops.toFixed(1).padStart(9)}`
        + ` ${row.cpuPerWall.toFixed(2).padStart(9)} ${(row.gflops / base.gflops).toFixed(2).padStart(8)}x ${worst === 0 ? 'bit-identical' : worst.toExponential(1)}`);
    }
  }
  if (busyRuns) console.log(`\nnote: ${busyRuns} of ${rounds * threadsList.length} runs started on a busy machine (< 90% idle after ${idleWait} s)`);
  fs.rmSync(tmp, { recursive: true, force: true });
}

if (process.env[CHILD]) await child(JSON.parse(process.env[CHILD]));
else await main();
