// Multi-threaded (XNNPACK pthreads) tfjs-wasm in Node.
//
// Stock @tensorflow/tfjs-backend-wasm 4.22.0 runs single-threaded in Node, for three separate reasons:
//   1. the WASM_HAS_MULTITHREAD_SUPPORT flag answers `false` whenever IS_NODE;
//   2. forced on, it fails with ERR_WORKER_PATH: tfjs hands Emscripten a `blob:` URL for the pthread worker script
//      and a Blob for the main script, and Node's worker_threads accepts neither;
//   3. the XNNPACK pool is capped at min(8, emscripten_num_logical_cores() / 2), i.e. 1 on a 2-vCPU box.
// enableWasmThreads() fixes all three for the duration of the backend's initialisation only, verifies the result and,
// on any failure, initialises the stock single-threaded backend instead. See docs/wasm-threads.md.
//
// It relies on internals of the 4.22.0 bundle (the Emscripten pthread worker protocol and the rollup alias names in
// the threaded glue), so it checks the installed version and refuses any other.
import { resolveObjectURL } from 'node:buffer';
import { Worker as NodeWorker, type WorkerOptions } from 'node:worker_threads';
import * as tfWasm from '@tensorflow/tfjs-backend-wasm';

type Tf = typeof import('@tensorflow/tfjs-core');
type Backend = import('@tensorflow/tfjs-core').KernelBackend;
type Factory = () => Backend | Promise<Backend>;

export interface WasmThreadsResult {
  /** True when the threaded-SIMD module runs and XNNPACK's pool has more than one thread. */
  enabled: boolean;
  /** XNNPACK's thread count as tfjs reports it (`getThreadsCount()`); 1 when single-threaded; 0 if wasm did not start. */
  threads: number;
  /** Why threads are off, or a note (e.g. the request was capped). */
  reason?: string;
}

export interface WasmThreadsOptions {
  /** Give up on the threaded module (and fall back to the stock one) after this long. Default 30 s. */
  initTimeoutMs?: number;
}

/** The only @tensorflow/tfjs-backend-wasm version this code was written against and tested with. */
export const PINNED_TFJS_WASM_VERSION = '4.22.0';
/** tfjs-backend-wasm pre-creates 8 pthread workers and caps XNNPACK's pool at 8 (max_num_threads in backend.cc). */
export const MAX_WASM_THREADS = 8;
const DEFAULT_INIT_TIMEOUT_MS = 30_000;

let lastResult: WasmThreadsResult | undefined;
let inFlight: Promise<WasmThreadsResult> | undefined;

/**
 * Makes the wasm backend run XNNPACK with `threads` threads in Node, then initialises and selects it (so a later
 * `tf.setBackend('wasm')` is a no-op that returns true). Must be called before the wasm backend is initialised,
 * i.e. before `tf.setBackend('wasm')` / `tf.ready()` pick it.
 *
 * Never throws. On any failure it leaves tfjs as stock would: the single-threaded SIMD backend (still initialised and
 * selected when that works; check `tf.getBackend()`), with the reason in the result.
 * Pthread workers never keep the process alive: a program exits by itself when its work is done.
 */
export function enableWasmThreads(tf: Tf, threads: number, options: WasmThreadsOptions = {}): Promise<WasmThreadsResult> {
  if (lastResult) return Promise.resolve({ ...lastResult, reason: lastResult.reason ?? 'already enabled' });
  if (inFlight) return inFlight;
  inFlight = enable(tf, threads, options).catch((e: unknown) => ({ enabled: false, threads: safeThreadsCount(), reason: `unexpected error: ${message(e)}` }))
    .finally(() => { inFlight = undefined; });
  return inFlight;
}

async function enable(tf: Tf, requested: number, options: WasmThreadsOptions): Promise<WasmThreadsResult> {
  if (!Number.isFinite(requested) || Math.floor(requested) < 2) {
    return { enabled: false, threads: 1, reason: `${requested} thread(s) requested: the stock single-threaded backend is used` };
  }
  const threads = Math.min(Math.floor(requested), MAX_WASM_THREADS);
  const capNote = threads < requested ? `capped at ${MAX_WASM_THREADS} (tfjs-backend-wasm's maximum)` : undefined;

  const refusal = preflight(tf);
  if (refusal) return { enabled: false, threads: wasmInitialised(tf) ? safeThreadsCount() : 1, reason: refusal };

  // Swap the registered backend factory for one that builds the threaded module (and falls back to the stock one).
  // registerBackend/removeBackend/findBackendFactory are tfjs-core's public hooks for this.
  const original = tf.findBackendFactory('wasm');
  const priority = tf.engine().registryFactory.wasm?.priority ?? 2;
  const outcome: { threaded?: boolean; reason?: string } = {};
  tf.removeBackend('wasm');
  tf.registerBackend('wasm', () => threadedFactory(tf, original, threads, options.initTimeoutMs ?? DEFAULT_INIT_TIMEOUT_MS, outcome), priority);

  let ok = false;
  try {
    ok = await tf.setBackend('wasm');
  } catch (e) {
    outcome.reason ??= message(e);
  }
  // If wasm did not start at all, put tfjs's own factory back: a later tf.setBackend('wasm') retries the stock way.
  if (!wasmInitialised(tf)) restoreFactory(tf, original, priority);

  if (!ok) return { enabled: false, threads: 0, reason: `the wasm backend did not initialise${outcome.reason ? `: ${outcome.reason}` : ''}` };
  const actual = safeThreadsCount();
  if (!outcome.threaded) {
    return { enabled: false, threads: actual, reason: outcome.reason ?? 'the threaded module was not used' };
  }
  const result: WasmThreadsResult = {
    enabled: actual > 1, threads: actual,
    reason: actual !== threads ? `asked for ${threads} threads, tfjs reports ${actual}` : capNote,
  };
  if (result.reason === undefined) delete result.reason;
  lastResult = result;
  return result;
}

function restoreFactory(tf: Tf, original: Factory, priority: number): void {
  try {
    tf.removeBackend('wasm');
    tf.registerBackend('wasm', original, priority);
  } catch { /* leave the wrapper: it only adds a fallback */ }
}

/** Why threads cannot be enabled here, or undefined when they can be tried. */
function preflight(tf: Tf): string | undefined {
  if (typeof process !== 'object' || !process.versions?.node) return 'not running in Node';
  if (tfWasm.version_wasm !== PINNED_TFJS_WASM_VERSION) {
    return `@tensorflow/tfjs-backend-wasm ${tfWasm.version_wasm} is installed; the thread shim is pinned to ${PINNED_TFJS_WASM_VERSION}`;
  }
  if (tf.findBackendFactory('wasm') == null) return 'the wasm backend is not registered with this tfjs-core instance';
  if (wasmInitialised(tf)) return 'the wasm backend was already initialised (call enableWasmThreads before tf.setBackend)';
  if (typeof SharedArrayBuffer !== 'function' || typeof Atomics !== 'object') return 'SharedArrayBuffer/Atomics are unavailable';
  try {
    // The same probes tfjs uses (from wasm-feature-detect): a SIMD op, and a shared memory with an atomic op.
    const simd = WebAssembly.validate(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 10, 9, 1, 7, 0, 65, 0, 253, 15, 26, 11]));
    if (!simd) return 'this runtime has no WebAssembly SIMD (the threaded build needs it)';
    const threaded = WebAssembly.validate(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 5, 4, 1, 3, 1, 1, 10, 11, 1, 9, 0, 65, 0, 254, 16, 2, 0, 26, 11]));
    if (!threaded) return 'this runtime has no WebAssembly threads';
  } catch (e) {
    return `WebAssembly feature probe failed: ${message(e)}`;
  }
  return undefined;
}

/** What we touch of the object tfjs-backend-wasm's factory resolves to (a BackendWasm). */
interface WasmBackendLike {
  wasm?: { PThread?: unknown; tfjs?: { getThreadsCount?: () => number } };
}

/** One initialisation attempt's state, shared with the worker wrapper class. */
interface Attempt {
  workers: Set<NodeWorker>;
  fail: (reason: string) => void;
}
let attempt: Attempt | undefined;

async function threadedFactory(tf: Tf, original: Factory, threads: number, timeoutMs: number,
  outcome: { threaded?: boolean; reason?: string }): Promise<Backend> {
  const env = tf.env();
  const stockSimd = env.getAsync('WASM_HAS_SIMD_SUPPORT'); // remembered for the fallback
  void stockSimd.catch(() => undefined);
  let failTimer: NodeJS.Timeout | undefined;
  const failed = new Promise<never>((_, reject) => {
    attempt = { workers: new Set(), fail: (reason) => reject(new Error(reason)) };
    failTimer = setTimeout(() => attempt?.fail(`the threaded module did not start within ${timeoutMs} ms`), timeoutMs);
  });
  const current = attempt!;
  void failed.catch(() => undefined);
  const restore = installPatches(threads);
  try {
    // Blocker 1: the flag says "no threads" in Node. Threads need SIMD too (the only threaded build is threaded-SIMD).
    env.set('WASM_HAS_SIMD_SUPPORT', true);
    env.set('WASM_HAS_MULTITHREAD_SUPPORT', true);
    tfWasm.setThreadsCount(threads);
    const backend = await Promise.race([original(), failed]);
    if (!(backend as WasmBackendLike | undefined)?.wasm?.PThread) {
      // e.g. the deprecated setWasmPath() was used, which makes tfjs load the plain module.
      outcome.reason = 'tfjs loaded a module without pthreads (was setWasmPath() used?)';
      return backend;
    }
    outcome.threaded = true;
    return backend;
  } catch (e) {
    outcome.reason = `threaded module failed (${message(e)}); using the single-threaded one`;
  } finally {
    clearTimeout(failTimer);
    restore();
    if (attempt === current) attempt = undefined;
  }
  // Fallback: stock flags and thread count, and no trace of the failed attempt's workers.
  for (const w of current.workers) void w.terminate().catch(() => undefined);
  env.set('WASM_HAS_MULTITHREAD_SUPPORT', false);
  try { env.set('WASM_HAS_SIMD_SUPPORT', await stockSimd); } catch { env.set('WASM_HAS_SIMD_SUPPORT', false); }
  tfWasm.setThreadsCount(-1);
  return original();
}

/**
 * Blockers 2 and 3, patched only while the threaded module initialises; returns the undo.
 *  - `globalThis.Worker`: Emscripten assigns worker_threads' Worker to it and then runs `new Worker(locateFile(...))`
 *    with tfjs's blob: URL. We hand it a subclass that starts such workers from the Blob's contents instead.
 *  - `WebAssembly.instantiate`: the module's `emscripten_num_logical_cores` import (Node: os.cpus().length) is
 *    replaced by 2 * threads, so backend.cc's `cores / 2` cap equals the requested count. Only modules that import
 *    that function are touched, and os.cpus() stays as it is for everyone else.
 */
function installPatches(threads: number): () => void {
  const g = globalThis as Record<string, unknown>;
  const workerDesc = Object.getOwnPropertyDescriptor(g, 'Worker');
  let assigned: unknown = workerDesc && 'value' in workerDesc ? workerDesc.value : workerDesc?.get?.call(g);
  Object.defineProperty(g, 'Worker', {
    configurable: true, enumerable: workerDesc?.enumerable ?? false,
    get: () => (assigned === NodeWorker ? PthreadWorker : assigned),
    set: (v: unknown) => { assigned = v; },
  });

  const wa = WebAssembly as unknown as Record<string, unknown>;
  const instantiateDesc = Object.getOwnPropertyDescriptor(wa, 'instantiate')!;
  const origInstantiate = WebAssembly.instantiate as (...a: unknown[]) => Promise<unknown>;
  wa.instantiate = function instantiate(this: unknown, source: unknown, imports?: WebAssembly.Imports) {
    const envImports = imports?.env as Record<string, unknown> | undefined;
    if (envImports && typeof envImports.emscripten_num_logical_cores === 'function') {
      imports = { ...imports, env: { ...envImports, emscripten_num_logical_cores: () => 2 * threads } };
    }
    return origInstantiate.call(this, source, imports);
  };

  return () => {
    if (workerDesc) Object.defineProperty(g, 'Worker', 'value' in workerDesc ? { ...workerDesc, value: assigned } : workerDesc);
    else if (assigned === undefined) delete g.Worker;
    else Object.defineProperty(g, 'Worker', { value: assigned, writable: true, configurable: true, enumerable: true });
    Object.defineProperty(wa, 'instantiate', instantiateDesc);
  };
}

/**
 * Runs tfjs's own pthread worker script (the Blob behind its blob: URL) unchanged, inside a small CommonJS bootstrap
 * that supplies what Node lacks: it reads the two Blobs tfjs passes (the worker script, and the threaded Emscripten
 * glue in the 'load' message) before the script sees them, serves the glue to the script's importScripts(), and
 * defines the names the glue borrows from tfjs's rollup bundle (require$$0 = fs, ... and the tslib helpers).
 */
const WORKER_BOOTSTRAP = String.raw`'use strict';
const wt = require('worker_threads');
const { EventEmitter } = require('events');
const MAIN = 'domlora:tfjs-backend-wasm-threaded-simd.js';
const PRELUDE = 'var require$$0 = require("fs"), require$$1 = require("path"), require$$3 = require("perf_hooks"),' +
  ' require$$4 = require("os"), commonjsGlobal = globalThis, _scriptDir = undefined;' +
  ' function __values(o) { return o[Symbol.iterator](); }' +
  ' function __read(o, n) { var a = Array.from(o); return n === undefined ? a : a.slice(0, n); }' +
  ' function __spreadArray(to, from) { return to.concat(Array.prototype.slice.call(from)); }\n';
let mainScript;
// What tfjs's worker script sees as worker_threads.parentPort: messages reach it in order, but only once it is
// loaded, and a 'load' message only once the Blob it carries has been read.
const port = new EventEmitter();
port.postMessage = (msg, transfer) => wt.parentPort.postMessage(msg, transfer);
const queue = [];
let busy = true;
function pump() {
  while (!busy && queue.length) {
    const data = queue.shift();
    if (data && data.cmd === 'load' && data.urlOrBlob instanceof Blob) {
      busy = true;
      data.urlOrBlob.text().then((text) => { mainScript = text; data.urlOrBlob = MAIN; busy = false; port.emit('message', data); pump(); });
      return;
    }
    port.emit('message', data);
  }
}
wt.parentPort.on('message', (data) => { queue.push(data); pump(); });
const realRequire = require;
globalThis.require = (id) => (id === 'worker_threads' || id === 'node:worker_threads') ? Object.assign(Object.create(wt), { parentPort: port }) : realRequire(id);
if (typeof globalThis.__filename !== 'string') globalThis.__filename = 'tfjs-backend-wasm-threaded-simd.worker.js';
wt.workerData.script.text().then((source) => {
  (0, eval)(source + '\n//# sourceURL=tfjs-backend-wasm-threaded-simd.worker.js');
  const tfjsImportScripts = globalThis.importScripts;
  globalThis.importScripts = (url) => url === MAIN
    ? (0, eval)(PRELUDE + mainScript + '\n//# sourceURL=tfjs-backend-wasm-threaded-simd.js')
    : tfjsImportScripts(url);
  busy = false;
  pump();
});
`;

/** worker_threads.Worker, as Emscripten's pthread pool gets it during initialisation. */
class PthreadWorker extends NodeWorker {
  constructor(filename: string | URL, options?: WorkerOptions) {
    super(...PthreadWorker.args(filename, options));
    attempt?.workers.add(this);
  }

  private static args(filename: string | URL, options?: WorkerOptions): [string | URL, WorkerOptions | undefined] {
    const blob = typeof filename === 'string' && filename.startsWith('blob:') ? resolveObjectURL(filename) : undefined;
    if (!blob) return [filename, options];
    URL.revokeObjectURL(filename as string); // tfjs makes one per worker and never revokes it
    return [WORKER_BOOTSTRAP, { ...options, eval: true, workerData: { script: blob } }];
  }

  /** Emscripten refs a worker while it runs a pthread; XNNPACK's pool threads run until exit, so that would keep
   *  the process alive forever. The main thread always blocks until the pool's work is done, so nothing is lost. */
  override ref(): void { /* never keep the process alive */ }

  /** A worker that fails while the threaded module starts makes that attempt fall back, instead of Emscripten's
   *  handler rethrowing it as an uncaught exception. */
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'error' && attempt?.workers.has(this)) {
      attempt.fail(`a pthread worker failed: ${message(args[0])}`);
      return true;
    }
    return super.emit(event, ...args);
  }
}

/** Whether the wasm backend exists already. (Not tf.findBackend(): that *starts* initialising a registered backend.) */
function wasmInitialised(tf: Tf): boolean {
  return tf.engine().registry.wasm != null;
}

function safeThreadsCount(): number {
  try { return tfWasm.getThreadsCount(); } catch { return 0; }
}

function message(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (e && typeof e === 'object' && 'message' in e) return String((e as { message: unknown }).message);
  return String(e);
}
