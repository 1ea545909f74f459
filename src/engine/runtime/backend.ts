// Chooses the tfjs backend at start-up, best first, and reports which one runs.
// tensorflow (tfjs-node-gpu, then tfjs-node: native, only if the user installed them) -> webgpu (if its packages
// and a GPU adapter exist) -> wasm (bundled; SIMD, threads where they work) -> cpu (pure JS; tiny models only).
import * as tf from '@tensorflow/tfjs-core';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import type { Backend, BackendChoice } from '../../protocol/messages';
import { BackendFailedError, badInput } from './errors';
import { loadNativePackage, NATIVE_PACKAGES } from './native';

/**
 * `device`: the adapter's short name on webgpu ("llvmpipe", "nvidia-h200"), shown beside the backend in the status
 * bar and the heatmap; `detail`: the full description.
 */
export interface BackendReport { backend: Backend; device?: string; detail: string; tried: string[]; threads: number }

let chosen: BackendReport | undefined;
let wasmThreads = 1;
let webgpuDevice: string | undefined;

/** Loads an optional package by name without the bundler resolving it at build time. */
function optionalRequire(name: string): unknown {
  return createRequire(__filename)(name);
}

/**
 * The native backend, from DOMLORA_NATIVE_DIR (where "DomLoRA: Install Native Backend…" puts it) first, else from
 * beside DomLoRA (see native.ts: it shares the worker's tfjs-core with the package it loads).
 */
async function tryTensorflow(tried: string[]): Promise<string | undefined> {
  const dir = process.env.DOMLORA_NATIVE_DIR || undefined;
  for (const pkg of NATIVE_PACKAGES) {
    try {
      const load = loadNativePackage(pkg, dir);
      if (!load.loaded) { tried.push(`${pkg}: ${load.reason}`); continue; }
      if (await tf.setBackend('tensorflow')) return `tensorflow (${pkg} ${load.version} from ${load.from})`;
      tried.push(`${pkg} ${load.version} (${load.from}): loaded, but its backend did not initialise`);
    } catch (e) {
      tried.push(`${pkg}: ${(e instanceof Error ? e.message : String(e)).split('\n')[0].slice(0, 400)}`);
    }
  }
  return undefined;
}

/** Dynamic import that the bundler leaves alone: `webgpu` is an ES module, which Node 20 cannot `require`. */
const importEsm = new Function('specifier', 'return import(specifier)') as (s: string) => Promise<Record<string, unknown>>;

/** Dawn needs the Vulkan loader on Linux; without it there is no adapter (and Dawn prints a warning), so skip early. */
function vulkanLoaderMissing(): boolean {
  if (process.platform !== 'linux') return false;
  const dirs = [...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean), '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu',
    '/usr/lib64', '/usr/lib', '/lib/x86_64-linux-gnu', '/lib64', '/usr/local/lib', '/usr/local/nvidia/lib64'];
  return !dirs.some((d) => fs.existsSync(path.join(d, 'libvulkan.so.1')));
}

async function tryWebgpu(tried: string[], explicit: boolean): Promise<string | undefined> {
  if (vulkanLoaderMissing()) { tried.push('webgpu: no Vulkan loader (libvulkan.so.1)'); return undefined; }
  try {
    const webgpu = await importEsm('webgpu') as { create: (opts: string[]) => GpuLike; globals: Record<string, unknown> };
    Object.assign(globalThis, webgpu.globals);
    const gpu = webgpu.create([]);
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) { tried.push('webgpu: no GPU adapter found'); return undefined; }
    const name = adapterName(adapter);
    // A software rasteriser (lavapipe/llvmpipe, SwiftShader) is 20x slower than wasm: never chosen on its own.
    const software = isSoftwareAdapter(adapter);
    if (software && !explicit) {
      tried.push(`webgpu: only a software adapter (${name}), used only when asked for with --backend webgpu`);
      return undefined;
    }
    // tfjs-backend-webgpu looks for navigator.gpu, which Node 20 does not define.
    const g = globalThis as { navigator?: { gpu?: GpuLike } };
    if (!g.navigator) Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
    else if (!g.navigator.gpu) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
    optionalRequire('@tensorflow/tfjs-backend-webgpu');
    if (!(await tf.setBackend('webgpu'))) { tried.push('webgpu: backend did not initialise'); return undefined; }
    const failed = await selfCheck();
    if (failed) { tried.push(`webgpu (${name}): ${failed}`); return undefined; }
    watchDevice();
    webgpuDevice = shortAdapterName(adapter);
    return `webgpu (Dawn: ${name}${software ? ', a software adapter' : ''})`;
  } catch (e) {
    tried.push(`webgpu: ${shortReason(e)}`);
  }
  return undefined;
}

interface AdapterInfo { description?: string; vendor?: string; device?: string; architecture?: string; isFallbackAdapter?: boolean }
interface GpuLike { requestAdapter(opts?: { powerPreference?: string }): Promise<{ info?: AdapterInfo } | null> }

function adapterName(a: { info?: AdapterInfo }): string {
  return a.info?.description || a.info?.device || a.info?.vendor || 'unnamed adapter';
}

/**
 * A short name for the status bar: the description up to its first ':' ("llvmpipe: Mesa 25.0.7 …" -> "llvmpipe"),
 * unless that is only the vendor ("NVIDIA: 580.159.04" on Vulkan), where Dawn's device id says more ("nvidia-h200").
 */
export function shortAdapterName(a: { info?: AdapterInfo }): string {
  const info = a.info ?? {};
  const head = (info.description ?? '').split(':')[0].trim();
  const device = (info.device ?? '').replace(/-+$/, '');
  if (head && head.toLowerCase() !== (info.vendor ?? '').toLowerCase()) return head.slice(0, 40);
  return (device || head || info.vendor || 'unnamed adapter').slice(0, 40);
}

export function isSoftwareAdapter(a: { info?: AdapterInfo }): boolean {
  const info = a.info ?? {};
  return info.isFallbackAdapter === true || info.architecture === 'software'
    || /llvmpipe|lavapipe|swiftshader|software/i.test(`${info.description ?? ''} ${info.device ?? ''}`);
}

/**
 * A backend that starts is not yet a backend that computes: one small matmul, read back the way jobs read, against
 * the same product in JavaScript. Returns why it failed, or undefined.
 */
async function selfCheck(): Promise<string | undefined> {
  const [m, k, n] = [24, 40, 16];
  const a = Float32Array.from({ length: m * k }, (_, i) => Math.sin(i * 0.37));
  const b = Float32Array.from({ length: k * n }, (_, i) => Math.cos(i * 0.11));
  let got: Float32Array;
  try {
    const c = tf.tidy(() => tf.matMul(tf.tensor2d(a, [m, k]), tf.tensor2d(b, [k, n])));
    try { got = await c.data() as Float32Array; } finally { c.dispose(); }
  } catch (e) {
    return `its first matmul failed (${shortReason(e)})`;
  }
  let worst = 0;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let want = 0;
      for (let t = 0; t < k; t++) want += a[i * k + t] * b[t * n + j];
      worst = Math.max(worst, Math.abs(got[i * n + j] - want) / Math.max(1, Math.abs(want)));
    }
  }
  return worst < 1e-4 ? undefined : `its first matmul is wrong (relative error ${worst.toExponential(1)})`;
}

async function tryWasm(tried: string[], threads: number): Promise<string | undefined> {
  watchWasm(); // before the module starts: the stock module binds console.warn as it starts
  try {
    await import('@tensorflow/tfjs-backend-wasm');
    let threadNote = 'single thread';
    wasmThreads = 1;
    if (threads > 1) {
      try {
        const mod = await import('./wasmThreads');
        const r = await mod.enableWasmThreads(tf, threads);
        threadNote = r.enabled ? `${r.threads} threads` : `single thread (${r.reason ?? 'threads unavailable'})`;
        if (r.enabled) wasmThreads = r.threads;
      } catch (e) {
        threadNote = `single thread (${shortReason(e)})`;
      }
    }
    if (await tf.setBackend('wasm')) {
      return `wasm, SIMD ${tf.env().getBool('WASM_HAS_SIMD_SUPPORT') ? 'on' : 'off'}, ${threadNote}`;
    }
    tried.push('wasm: backend did not initialise');
  } catch (e) {
    tried.push(`wasm: ${shortReason(e)}`);
  }
  return undefined;
}

async function tryCpu(tried: string[]): Promise<string | undefined> {
  try {
    await import('@tensorflow/tfjs-backend-cpu');
    if (await tf.setBackend('cpu')) return 'cpu (pure JavaScript, slow: for tiny models)';
  } catch (e) {
    tried.push(`cpu: ${shortReason(e)}`);
  }
  return undefined;
}

function shortReason(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  if (/Cannot find (module|package)/.test(msg)) return 'not installed';
  return msg.split('\n')[0].slice(0, 200);
}

/**
 * Threads for a model: the XNNPACK pool pays off only on large matmuls. On small models (hidden < 512) every
 * kernel ran 5-10x slower with a second thread in our measurements (the pool competes with the main thread for
 * the cores), so they run on one. DOMLORA_THREADS overrides.
 */
export function threadsForModel(hiddenSize: number): number {
  if (process.env.DOMLORA_THREADS) return defaultThreads();
  return hiddenSize >= 512 ? defaultThreads() : 1;
}

export function defaultThreads(): number {
  const env = Number(process.env.DOMLORA_THREADS);
  if (Number.isInteger(env) && env > 0) return env;
  return Math.max(1, Math.min(8, os.availableParallelism?.() ?? os.cpus().length));
}

/**
 * Initialises a backend once per process. `auto` tries them best first; an explicit choice fails clearly when that
 * backend cannot start, instead of silently running somewhere slower.
 */
export async function initBackend(choice: BackendChoice = 'auto', threads = defaultThreads()): Promise<BackendReport> {
  const want = choice ?? 'auto';
  if (chosen) {
    if (want !== 'auto' && want !== chosen.backend) {
      throw badInput(`backend "${want}" requested, but this process already runs "${chosen.backend}"`);
    }
    return chosen;
  }
  const tried: string[] = [];
  const order: Backend[] = want === 'auto' ? ['tensorflow', 'webgpu', 'wasm', 'cpu'] : [want];
  for (const b of order) {
    let detail: string | undefined;
    if (b === 'tensorflow') detail = await tryTensorflow(tried);
    else if (b === 'webgpu') detail = await tryWebgpu(tried, want === 'webgpu');
    else if (b === 'wasm') detail = await tryWasm(tried, threads);
    else if (b === 'cpu') detail = await tryCpu(tried);
    if (detail) {
      await tf.ready();
      chosen = { backend: b, device: b === 'webgpu' ? webgpuDevice : undefined, detail, tried, threads: b === 'wasm' ? wasmThreads : threads };
      return chosen;
    }
  }
  throw badInput(`backend "${want}" could not be started: ${tried.join('; ')}`);
}


// ---- backend faults ------------------------------------------------------------------------------------------------

interface GpuDeviceLike {
  lost?: Promise<{ reason?: string; message?: string }>;
  addEventListener?(type: 'uncapturederror', listener: (ev: { error?: { message?: string; constructor?: { name?: string } } }) => void): void;
}

/** What went wrong with the backend since it started, if anything: the GPU's device, or XNNPACK on wasm. */
let fault: { kind: 'lost' | 'out-of-memory' | 'error'; message: string } | undefined;

/**
 * A WebGPU device reports its faults asynchronously, not by throwing where they happen: a lost device resolves
 * `device.lost`, an allocation that does not fit raises an `uncapturederror` event. Both are caught here, and every
 * step of a job asks (throwIfBackendFailed), so a job ends with a message instead of computing with a dead device.
 */
function watchDevice(): void {
  const device = (tf.backend() as unknown as { device?: GpuDeviceLike }).device;
  void device?.lost?.then((info) => {
    fault ??= { kind: 'lost', message: [info?.reason, info?.message].filter(Boolean).join(': ') || 'lost' };
  });
  device?.addEventListener?.('uncapturederror', (ev) => {
    const e = ev.error;
    const oom = e?.constructor?.name === 'GPUOutOfMemoryError' || /out of memory/i.test(e?.message ?? '');
    fault ??= { kind: oom ? 'out-of-memory' : 'error', message: e?.message || 'GPU error' };
  });
}

/** XNNPACK's status for "out of memory" (xnn_status_out_of_memory). */
const XNN_OUT_OF_MEMORY = 6;

/**
 * tfjs-wasm does not throw when XNNPACK cannot make an operator (a matmul whose packed weights do not fit the 4 GiB
 * heap): it prints a warning and leaves the product unwritten, and the job would go on with garbage (measured: a
 * matmul of ones gave 3.7e-41 instead of 1024). The warning is its only sign, so it is watched for here, and the next
 * step of the job stops with a clear error instead of writing wrong results. The threaded module prints it with
 * fs.writeSync(2) (Emscripten's printErr in Node), the stock one with the console.warn it bound when it started:
 * both are watched, from before the module starts.
 */
let watchingWasm = false;
function watchWasm(): void {
  if (watchingWasm) return;
  watchingWasm = true;
  const note = (text: unknown) => {
    if (typeof text !== 'string') return;
    // `xnn_create_*_nd_f32` for the elementwise ops: the name is anything up to the space.
    const m = /XNN status for (\S+) is not successful\. Got status (\d+)/.exec(text);
    if (!m) return;
    const oom = Number(m[2]) === XNN_OUT_OF_MEMORY;
    fault ??= { kind: oom ? 'out-of-memory' : 'error', message: `XNNPACK's ${m[1]} failed (status ${m[2]}${oom ? ': out of memory' : ''})` };
  };
  const warn = console.warn;
  console.warn = (...args: unknown[]) => { for (const a of args) note(a); warn.apply(console, args); };
  // The fs module object itself (Emscripten's glue calls require('fs').writeSync), not an import's read-only copy.
  const nodeFs = createRequire(__filename)('node:fs') as typeof fs;
  const writeSync = nodeFs.writeSync;
  nodeFs.writeSync = function (this: unknown, fd: number, data: unknown, ...rest: unknown[]) {
    if (fd === 2) note(data);
    return (writeSync as (...a: unknown[]) => number).call(this, fd, data, ...rest);
  } as typeof nodeFs.writeSync;
}

/** Throws the backend's fault, if one happened, as an error that names the backend and what to do. */
export function throwIfBackendFailed(): void {
  if (!fault) return;
  const where = chosen ? chosen.detail : 'webgpu';
  if (chosen?.backend === 'wasm') {
    const oom = fault.kind === 'out-of-memory';
    throw new BackendFailedError(oom ? 'out-of-memory' : 'internal', `the wasm backend failed (${where}): ${fault.message}` +
      `${oom ? ', the 4 GiB wasm heap is full' : ''}. A product it could not compute would have been wrong, so the job stopped ` +
      'and nothing was written. Use a smaller --seq-len or fewer --samples (domlora.seqLen, domlora.samples), ' +
      'or a native backend (--backend tensorflow with @tensorflow/tfjs-node installed).');
  }
  if (fault.kind === 'out-of-memory') {
    throw new BackendFailedError('out-of-memory', `the GPU ran out of memory (${where}): ${fault.message}. Nothing was written. ` +
      'Use a smaller --seq-len or fewer --samples (domlora.seqLen, domlora.samples), a lower domlora.gpuMemoryGiB, or --backend wasm.');
  }
  throw new BackendFailedError('internal', `the GPU ${fault.kind === 'lost' ? 'device was lost' : 'failed'} (${where}): ${fault.message}. ` +
    'Nothing was written. Run the job again (a new process gets a new device), or use --backend wasm.');
}

/**
 * How attention multiplies, chosen per backend in this one place. tfjs-wasm sends only plain 2-D non-transposed
 * matmuls to XNNPACK (a batched or transposed one runs a scalar loop 5-9x slower: shared/docs/engine-bench.md), so
 * there attention runs per key/value group with explicit transposes. On a GPU every kernel launch costs, and one
 * batched matmul per attention product is the fast shape.
 */
export type AttentionShape = 'grouped' | 'batched';
export function attentionShape(backend = tf.getBackend()): AttentionShape {
  // DOMLORA_ATTENTION=grouped|batched overrides, to measure one shape against the other (scripts/dispatches.ts).
  const forced = process.env.DOMLORA_ATTENTION;
  if (forced === 'grouped' || forced === 'batched') return forced;
  return backend === 'webgpu' || backend === 'tensorflow' ? 'batched' : 'grouped';
}

/**
 * The largest tensor, in bytes, the backend can bind to one kernel: WebGPU's maxStorageBufferBindingSize (128 MiB on
 * lavapipe, more on hardware); no limit on CPU backends. DOMLORA_MAX_BINDING_BYTES lowers it (tests of the split path).
 */
export function maxBindingBytes(): number {
  const forced = Number(process.env.DOMLORA_MAX_BINDING_BYTES);
  let limit = Number.isFinite(forced) && forced > 0 ? forced : Infinity;
  if (tf.getBackend() === 'webgpu') {
    const device = (tf.backend() as unknown as { device?: { limits?: { maxStorageBufferBindingSize?: number } } }).device;
    limit = Math.min(limit, device?.limits?.maxStorageBufferBindingSize ?? 128 * 1024 ** 2);
  }
  return limit;
}

/** The backend in use, and why better ones were skipped (when they were). */
export function describeBackend(b: BackendReport): string {
  return b.tried.length ? `${b.detail} (skipped: ${b.tried.join('; ')})` : b.detail;
}
